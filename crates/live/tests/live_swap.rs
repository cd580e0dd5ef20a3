//! Live-kernel runs of the swap constructs: a `swap SIZE` device, `madvise
//! ... pageout | free | collapse`, `kernel: reclaim`, `kernel: khugepaged`,
//! and swap entries in `expect`/`show`. Opt-in like tests/live.rs
//! (`THPSIM_LIVE=1`, root on Linux x86_64 with THP; otherwise each test
//! prints `skipped: <reason>` and passes).
//!
//! Every test checks that the run left no swap device behind: /proc/swaps
//! read under the live runner's lock (so that no other run is in progress)
//! is what it was before. The tests of this file run one at a time
//! (`SERIAL`): the ones that kill a run in a child process must be the only
//! ones to find what it left.
#![cfg(unix)]

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thpsim_live::{
    run_live, run_live_with, LiveError, LiveOptions, LiveRecord, LiveReport, SwapKind,
    SwapPreference,
};
use thpsim_scenario::Outcome;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn live() -> bool {
    match thpsim_live::live_tests_enabled() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// Runs `f` under the live runner's machine lock (see `session`).
fn locked<T>(f: impl FnOnce() -> T) -> T {
    // The runner's directory (session.rs; never under /tmp).
    let dir = "/run/thpsim-live";
    let _ = std::fs::create_dir_all(dir);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{dir}/lock"))
        .expect("lock file");
    // SAFETY: flock on our own fd; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let out = f();
    drop(lock);
    out
}

/// The active swap areas (file names of /proc/swaps).
fn swaps_now() -> Vec<String> {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The active swap areas while no live run holds the machine.
fn resting_swaps() -> Vec<String> {
    locked(swaps_now)
}

/// What a run must leave as it found it: the swap areas, zram0's state,
/// the swap file and the saved-state file of swap undo steps.
fn resting_state() -> (Vec<String>, String, bool, bool) {
    locked(|| {
        (
            swaps_now(),
            std::fs::read_to_string("/sys/block/zram0/disksize").unwrap_or_default(),
            Path::new("/var/lib/thpsim-live/swapfile").exists(),
            Path::new("/run/thpsim-live/saved-swap").exists(),
        )
    })
}

fn scenario(src: &str) -> thpsim_scenario::Scenario {
    thpsim_scenario::parse("inline.thp", src).expect("valid scenario")
}

/// Runs `src` with swap of `kind`, checks that the machine is left as it
/// was and that the run had the device it asked for.
fn run_swap(src: &str, kind: SwapPreference) -> LiveReport {
    let before = resting_state();
    let scn = scenario(src);
    let r = match run_live_with(&scn, &LiveOptions { swap: kind }) {
        Ok(r) => r,
        Err(e) => panic!("{src}\n{e}"),
    };
    assert_eq!(resting_state(), before, "the run left swap state behind");
    if scn.header.swap.is_some() {
        let dev = r.swap.as_ref().expect("the run's swap device");
        match kind {
            SwapPreference::Zram => assert_eq!(dev.kind, SwapKind::Zram),
            SwapPreference::File => assert_eq!(dev.kind, SwapKind::File),
            SwapPreference::Auto => {}
        }
        assert!(!before.0.contains(&dev.path), "{dev:?} was active before");
    } else {
        assert!(r.swap.is_none());
    }
    eprintln!("--- {:?} on {}", r.swap, r.kernel);
    for n in &r.notes {
        if n.starts_with("line ") {
            eprintln!("note: {n}");
        }
    }
    r
}

/// Both device kinds where this machine has them: zram (if it can be had)
/// and a swap file.
fn kinds() -> Vec<SwapPreference> {
    let zram = Path::new("/sys/block/zram0").exists()
        || Path::new("/sys/class/zram-control/hot_add").exists();
    if zram {
        vec![SwapPreference::Zram, SwapPreference::File]
    } else {
        eprintln!("no zram here: the swap file only");
        vec![SwapPreference::File]
    }
}

fn assert_expects_hold(r: &LiveReport) {
    for rec in &r.records {
        if let LiveRecord::Expect {
            line,
            text,
            ok,
            found,
        } = rec
        {
            assert!(ok, "line {line}: `{text}` failed: found {found}");
        }
    }
}

fn assert_outcomes(src: &str, r: &LiveReport) {
    let scn = scenario(src);
    let mut want: Vec<(usize, Outcome)> =
        scn.steps().map(|s| (s.span.line, s.expected())).collect();
    want.sort_by_key(|w| w.0);
    let mut got: Vec<(usize, Outcome)> = r
        .records
        .iter()
        .filter_map(|rec| match rec {
            LiveRecord::Step { line, outcome, .. } => Some((*line, *outcome)),
            _ => None,
        })
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(got, want);
}

fn value_at(r: &LiveReport, line: usize) -> Option<u8> {
    r.records.iter().find_map(|rec| match rec {
        LiveRecord::Step { line: l, value, .. } if *l == line => *value,
        _ => None,
    })
}

/// The kinds of the pages a `show` on `line` reported, in order.
fn kinds_at(r: &LiveReport, line: usize) -> Vec<String> {
    r.records
        .iter()
        .filter_map(|rec| match rec {
            LiveRecord::Page { line: l, kind, .. } if *l == line => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

/// The counters the run noted for the step on `line` (`pswpout +1`, ...).
fn counters_at(r: &LiveReport, line: usize) -> Vec<String> {
    let prefix = format!("line {line} (");
    r.notes
        .iter()
        .find(|n| n.starts_with(&prefix))
        .and_then(|n| n.split_once("): "))
        .map(|(_, c)| c.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}

const PAGEOUT: &str = "swap 64m
thp never
process P
P: mmap A 2p
P: write A[..] = 0x11
expect P A[0] base
P: madvise A[0..1p] pageout
expect P A[0] swap
expect P A[1p] base
show P A[..]
P: read A[0] == 0x11
expect P A[0] base
";

/// A base page paged out is a swap entry (not present, PM_SWAP, a swap
/// device's type: `swap`, no frame, mapcount 0); a read brings the value
/// back and the page is `base` again.
#[test]
fn a_paged_out_base_page_is_a_swap_entry_and_comes_back() {
    if !live() {
        return;
    }
    let _s = serial();
    for kind in kinds() {
        let r = run_swap(PAGEOUT, kind);
        assert!(r.interference.is_empty(), "{:?}", r.interference);
        assert_expects_hold(&r);
        assert_outcomes(PAGEOUT, &r);
        assert_eq!(kinds_at(&r, 10), vec!["swap", "base"]);
        assert_eq!(value_at(&r, 11), Some(0x11));
        assert_eq!(counters_at(&r, 7), vec!["pswpout +1"], "{kind:?}");
        let how = r.notes.iter().find(|n| n.starts_with("swap for the run"));
        let how = how.expect("the device is described");
        match r.swap.as_ref().map(|s| s.kind) {
            Some(SwapKind::Zram) => {
                assert!(how.contains("SWP_SYNCHRONOUS_IO"), "{how}");
                // Read straight from zram, past the swap cache.
                assert_eq!(counters_at(&r, 11), vec!["pswpin +1"]);
            }
            Some(SwapKind::File) => {
                assert!(how.contains("not a synchronous-IO device"), "{how}")
            }
            None => panic!("no device"),
        }
    }
}

/// The device kind comes from THPSIM_LIVE_SWAP for `run_live` (zram when it
/// can be had, by default), and a scenario without a `swap` line gets no
/// device.
#[test]
fn the_device_kind_is_reported_and_no_swap_line_adds_none() {
    if !live() {
        return;
    }
    let _s = serial();
    let before = resting_state();
    let r = run_live(&scenario(PAGEOUT)).expect("run");
    assert_eq!(resting_state(), before);
    let dev = r.swap.expect("device");
    let want = match std::env::var("THPSIM_LIVE_SWAP").as_deref() {
        Ok("file") => SwapKind::File,
        Ok("zram") => SwapKind::Zram,
        _ if kinds().contains(&SwapPreference::Zram) => SwapKind::Zram,
        _ => SwapKind::File,
    };
    assert_eq!(dev.kind, want);
    let none = "thp never\nprocess P\nP: mmap A 1p\nP: write A[0] = 1\nP: madvise A[..] pageout\n";
    let r = run_swap(none, SwapPreference::Auto);
    assert!(r.swap.is_none());
    assert!(
        r.notes.iter().any(|n| n.contains("without a `swap` line")),
        "{:?}",
        r.notes
    );
}

const FORK: &str = "swap 64m
thp never
process P
P: mmap A 2p
P: write A[..] = 0x11
P: madvise A[..] pageout
expect P A[0] swap
P: fork C
expect C A[0] swap
expect P A[0] swap
C: read A[0] == 0x11
expect C A[0] base
expect P A[0] swap
P: read A[0] == 0x11
expect P A[0] same C A[0]
expect P A[0] mapcount 2
C: write A[0] = 0x22
expect P A[0] other C A[0]
P: read A[0] == 0x11
C: read A[0] == 0x22
C: read A[1p] == 0x11
show P A[..]
show C A[..]
";

/// fork copies swap entries (the child's are swap too); the first to fault
/// reads the page into the swap cache (the swap count is 2, so even zram's
/// synchronous swap-in goes through it), where the other finds the same
/// frame (mapcount 2); a write then copies it. A page only the child read
/// is still a swap entry in the parent.
#[test]
fn fork_while_swapped_shares_the_swap_entry_then_the_page() {
    if !live() {
        return;
    }
    let _s = serial();
    let src = FORK;
    for kind in kinds() {
        let r = run_swap(src, kind);
        assert!(r.interference.is_empty(), "{:?}", r.interference);
        assert_expects_hold(&r);
        assert_outcomes(src, &r);
        assert_eq!(value_at(&r, 19), Some(0x11));
        assert_eq!(value_at(&r, 20), Some(0x22));
        assert_eq!(value_at(&r, 21), Some(0x11));
        // P never touched A[1p]: still a swap entry; C read it.
        assert_eq!(kinds_at(&r, 22), vec!["base", "swap"]);
        assert_eq!(kinds_at(&r, 23), vec!["base", "base"]);
    }
}

/// A page two processes map is not paged out by MADV_PAGEOUT (nor by
/// `kernel: reclaim`, which is MADV_PAGEOUT live): both skip shared
/// pages, in 5.8 as in 6.18.
#[test]
fn pageout_skips_a_page_mapped_by_two_processes() {
    if !live() {
        return;
    }
    let _s = serial();
    let src = "swap 64m
thp never
process P
P: mmap A 2p
P: write A[..] = 0x11
P: fork C
P: madvise A[..] pageout
kernel: reclaim C A[..]
expect P A[0] base
expect C A[0] base
expect P A[0] mapcount 2
C: write A[1p] = 0x22
P: madvise A[..] pageout
expect P A[0] base
expect P A[1p] swap
expect C A[1p] base
";
    let r = run_swap(src, SwapPreference::Auto);
    assert!(r.interference.is_empty(), "{:?}", r.interference);
    assert_expects_hold(&r);
    assert_outcomes(src, &r);
    assert!(counters_at(&r, 7).is_empty(), "{:?}", counters_at(&r, 7));
    assert_eq!(counters_at(&r, 13), vec!["pswpout +1"]);
}

const THP: &str = "swap 64m
process P
P: mmap A 1h
P: write A[..] = 0x22
expect P A[0] thp-pmd
P: madvise A[..] pageout
expect P A[0] swap
expect P A[511p] swap
show P A[0..4p]
P: read A[1p] == 0x22
show P A[0..4p]
P: read A[511p] == 0x22
expect P A[511p] base
";

/// A PMD-mapped THP paged out: every subpage becomes a swap entry (the PMD
/// is split to swap PTEs). The kernel swaps the THP out whole when the
/// device gives it a 2 MiB cluster (thp_swpout) and splits it first
/// otherwise (thp_swpout_fallback); it comes back one base page at a time.
#[test]
fn a_thp_paged_out_becomes_512_swap_entries() {
    if !live() {
        return;
    }
    let _s = serial();
    for kind in kinds() {
        let r = run_swap(THP, kind);
        assert!(r.interference.is_empty(), "{:?}", r.interference);
        assert_expects_hold(&r);
        assert_outcomes(THP, &r);
        assert_eq!(kinds_at(&r, 9), vec!["swap"; 4]);
        assert_eq!(kinds_at(&r, 11), vec!["swap", "base", "swap", "swap"]);
        assert_eq!(value_at(&r, 12), Some(0x22));
        let c = counters_at(&r, 6);
        assert_eq!(c[0], "pswpout +512", "{c:?}");
        let whole = c.contains(&"thp_swpout +1".to_string());
        let split = c.contains(&"thp_swpout_fallback +1".to_string())
            && c.contains(&"thp_split_page +1".to_string());
        assert!(whole != split, "{kind:?}: {c:?}");
        eprintln!(
            "{kind:?}: the THP was {}",
            if whole {
                "swapped out whole"
            } else {
                "split, then swapped out"
            }
        );
    }
}

/// MADV_PAGEOUT of part of a THP splits it and pages out that part only.
#[test]
fn pageout_of_part_of_a_thp_splits_it() {
    if !live() {
        return;
    }
    let _s = serial();
    let src = "swap 64m
process P
P: mmap A 1h
P: write A[..] = 0x22
P: madvise A[0..1p] pageout
show P A[0..3p]
P: read A[0] == 0x22
";
    let r = run_swap(src, SwapPreference::Auto);
    assert!(r.interference.is_empty(), "{:?}", r.interference);
    assert_eq!(kinds_at(&r, 6), vec!["swap", "base", "base"]);
    assert_eq!(counters_at(&r, 5), vec!["pswpout +1", "thp_split_page +1"]);
    assert_eq!(value_at(&r, 7), Some(0x22));
}

/// `kernel: reclaim` is MADV_PAGEOUT in the process's agent: outcome ok
/// even where the call fails (an errno goes to the notes); MADV_FREE pages
/// are discarded by it (none, read back as zero) instead of swapped.
#[test]
fn kernel_reclaim_swaps_out_and_discards_lazily_freed_pages() {
    if !live() {
        return;
    }
    let _s = serial();
    let src = "swap 64m
process P
P: mmap A 1h
P: write A[..] = 0x33
kernel: reclaim P A[..]
expect P A[0] swap
expect P A[300p] swap
P: read A[5p] == 0x33
expect P A[5p] base
P: mmap B 4p
P: write B[..] = 0x44
P: madvise B[..] free
expect P B[0] base
P: read B[0] == 0x44
kernel: reclaim P B[0..2p]
expect P B[0] none
expect P B[2p] base
P: read B[0] == 0
P: read B[2p] == 0x44
P: mlock B[3p..4p]
kernel: reclaim P B[3p..4p]
expect P B[3p] base
";
    let r = run_swap(src, SwapPreference::Auto);
    assert!(r.interference.is_empty(), "{:?}", r.interference);
    assert_expects_hold(&r);
    assert_outcomes(src, &r);
    assert_eq!(counters_at(&r, 5)[0], "pswpout +512");
    assert_eq!(counters_at(&r, 15), vec!["pglazyfreed +2"]);
    // MADV_PAGEOUT of a VM_LOCKED range is EINVAL: noted, outcome ok.
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("line 21: MADV_PAGEOUT") && n.contains("os error 22")),
        "{:?}",
        r.notes
    );
}

const KHUGEPAGED: &str = "thp madvise
process P
P: mmap A 1h
P: write A[..] = 0x33
expect P A[0] base
P: madvise A[..] hugepage
kernel: khugepaged P A[..]
expect P A[0] thp-pmd
expect P A[511p] thp-pmd
P: read A[1p] == 0x33
P: read A[511p] == 0x33
";

/// `kernel: khugepaged` is MADV_COLLAPSE in the process's agent: base pages
/// written before MADV_HUGEPAGE become one PMD-mapped THP with their data,
/// and the collapse the step asked for (thp_collapse_alloc +1) is not
/// interference. Repeated: khugepaged itself must not have collapsed the
/// region first (it did in about half the runs before the keeper's
/// registration was fixed).
#[test]
fn kernel_khugepaged_collapses_written_base_pages() {
    if !live() {
        return;
    }
    let _s = serial();
    for _ in 0..5 {
        let r = run_swap(KHUGEPAGED, SwapPreference::Auto);
        assert!(r.interference.is_empty(), "{:?}", r.interference);
        assert_expects_hold(&r);
        assert_outcomes(KHUGEPAGED, &r);
        assert_eq!(counters_at(&r, 7), vec!["thp_collapse_alloc +1"]);
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("line 7:") && n.contains("max_ptes_none")),
            "{:?}",
            r.notes
        );
    }
}

/// `madvise ... collapse` is MADV_COLLAPSE live, with its real outcome (ok
/// for a 2 MiB-aligned region, einval for a range holding no whole PMD),
/// and a note that 5.8 has no MADV_COLLAPSE.
#[test]
fn madvise_collapse_has_the_kernels_outcome() {
    if !live() {
        return;
    }
    let _s = serial();
    let src = "process P
P: mmap A 2h
P: madvise A[..] nohugepage
P: write A[..] = 0x55
P: madvise A[..] hugepage
P: madvise A[..] collapse
expect P A[0] thp-pmd
expect P A[1h] thp-pmd
P: mmap B 4p
P: write B[..] = 1
P: madvise B[..] collapse => einval
P: read A[2p] == 0x55
";
    let r = run_swap(src, SwapPreference::Auto);
    assert!(r.interference.is_empty(), "{:?}", r.interference);
    assert_expects_hold(&r);
    assert_outcomes(src, &r);
    assert_eq!(counters_at(&r, 6), vec!["thp_collapse_alloc +2"]);
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("line 6:") && n.contains("5.8 has no MADV_COLLAPSE")),
        "{:?}",
        r.notes
    );
}

/// A run that fails half-way (an invalid range after the device is on)
/// removes its device too.
#[test]
fn a_failed_run_removes_its_swap_device() {
    if !live() {
        return;
    }
    let _s = serial();
    let before = resting_state();
    let src = "swap 64m\nthp never\nprocess P\nP: mmap A 2p\nP: write A[..] = 1\n\
               P: madvise A[..] pageout\nP: write A[3p] = 1\n";
    for kind in kinds() {
        match run_live_with(&scenario(src), &LiveOptions { swap: kind }) {
            Err(LiveError::Invalid { line: 7, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(resting_state(), before);
    }
}

/// The environment variable that makes `swap_run_to_interrupt` run.
const CHILD: &str = "THPSIM_LIVE_SWAP_CHILD";
/// The number of writes of the child's run (default 100,000: long enough
/// to be interrupted mid-run).
const CHILD_STEPS: &str = "THPSIM_LIVE_SWAP_CHILD_STEPS";

/// Not a test of its own: the long run that the interruption tests start in
/// a child process (this test binary again) and then signal.
#[test]
fn swap_run_to_interrupt() {
    let Ok(kind) = std::env::var(CHILD) else {
        return;
    };
    let mut src =
        String::from("swap 64m\nthp never\nprocess P\nP: mmap A 8p\nP: write A[..] = 1\n");
    src.push_str("P: madvise A[..] pageout\n");
    let steps: usize = std::env::var(CHILD_STEPS)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    for i in 0..steps {
        src.push_str(&format!("P: write A[{}p] = 2\n", i % 8));
    }
    let swap = if kind == "file" {
        SwapPreference::File
    } else {
        SwapPreference::Auto
    };
    let _ = run_live_with(&scenario(&src), &LiveOptions { swap });
    panic!("the run was to be interrupted");
}

/// Starts `swap_run_to_interrupt` in a child, waits until its swap device
/// is on, sends `sig`, and returns how the child ended and what it wrote to
/// stderr (the runner's "could not undo" lines, for a failure's message).
fn interrupt_a_run(
    sig: i32,
    kind: &str,
    baseline: &[String],
) -> (std::process::ExitStatus, String) {
    interrupt_a_run_after(sig, kind, baseline, 100_000, Duration::from_millis(50)).0
}

/// As [`interrupt_a_run`], for a run of `steps` writes, with the signal
/// sent `delay` after the device is on; also returns how long the child
/// lived from then on.
fn interrupt_a_run_after(
    sig: i32,
    kind: &str,
    baseline: &[String],
    steps: usize,
    delay: Duration,
) -> ((std::process::ExitStatus, String), Duration) {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    let err_path = std::env::temp_dir().join(format!(
        "thpsim-live-swap-{}-{kind}.err",
        std::process::id()
    ));
    // SAFETY: only signal(), async-signal-safe, between fork and exec. The
    // signal must reach the child's handler, even when this process was
    // started with SIGINT ignored (a background job of a shell).
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(sig, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd
        .args([
            "--exact",
            "swap_run_to_interrupt",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, kind)
        .env(CHILD_STEPS, steps.to_string())
        .env(thpsim_live::LIVE_TESTS_VAR, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("child");
    let start = Instant::now();
    loop {
        if swaps_now().iter().any(|s| !baseline.contains(s)) {
            break;
        }
        if let Some(st) = child.try_wait().expect("wait") {
            panic!("the child ended before its swap device was on: {st:?}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no swap device appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let on = Instant::now();
    // Until `delay` has passed or the child has ended by itself.
    let mut ended = None;
    while on.elapsed() < delay {
        ended = child.try_wait().expect("wait");
        if ended.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let lived = on.elapsed();
    let st = match ended {
        Some(st) => st,
        None => {
            // SAFETY: signalling our own child, not yet waited for.
            unsafe { libc::kill(child.id() as i32, sig) };
            child.wait().expect("wait")
        }
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    ((st, err), lived)
}

/// Ctrl-C (SIGINT) during a run: the handler removes the swap device (and
/// restores the settings) before the process dies of the signal.
#[test]
fn sigint_removes_the_swap_device() {
    if !live() {
        return;
    }
    let _s = serial();
    use std::os::unix::process::ExitStatusExt;
    for kind in ["auto", "file"] {
        let before = resting_state();
        let (st, err) = interrupt_a_run(libc::SIGINT, kind, &before.0);
        assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}\n{err}");
        assert_eq!(
            resting_state(),
            before,
            "{kind}: left behind after SIGINT; the run's stderr:\n{err}"
        );
    }
}

/// SIGINT at any point of a short run: mid-run, while the run restores the
/// machine (swapoff of the used device, unlink, the knobs), or after: the
/// machine is left at rest every time. Regression: the handler and the run
/// thread once restored at the same time; the handler's unlink of the swap
/// file failed (EPERM) while the other thread's swapoff still ran, and the
/// process died before that thread unlinked it, leaving the file behind.
#[test]
fn sigint_at_any_point_of_a_run_leaves_the_machine_at_rest() {
    if !live() {
        return;
    }
    let _s = serial();
    use std::os::unix::process::ExitStatusExt;
    let before = resting_state();
    // How long the run lives once its device is on, signalled too late.
    let (_, span) = interrupt_a_run_after(
        libc::SIGINT,
        "file",
        &before.0,
        300,
        Duration::from_secs(30),
    );
    assert_eq!(resting_state(), before, "left behind by a run to its end");
    let span = span.min(Duration::from_secs(30));
    for i in 0..12u32 {
        // From just after the device is on to past the end of the run.
        let delay = span * i / 10;
        let ((st, err), _) = interrupt_a_run_after(libc::SIGINT, "file", &before.0, 300, delay);
        assert!(
            st.signal() == Some(libc::SIGINT) || st.code() == Some(101),
            "SIGINT after {delay:?} of {span:?}: {st:?}\n{err}"
        );
        assert_eq!(
            resting_state(),
            before,
            "SIGINT after {delay:?} of {span:?}: left behind; the run's stderr:\n{err}"
        );
    }
}

/// A run killed outright (SIGKILL) leaves its device on, with the steps
/// that remove it in saved-swap; the next run removes it first, and says so.
#[test]
fn the_next_run_removes_the_swap_device_of_a_killed_run() {
    if !live() {
        return;
    }
    let _s = serial();
    use std::os::unix::process::ExitStatusExt;
    for kind in ["auto", "file"] {
        let before = resting_state();
        let (st, err) = interrupt_a_run(libc::SIGKILL, kind, &before.0);
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}\n{err}");
        // Wait for the killed process's agents to be gone (their parent
        // death signal), then look: the device is still on.
        std::thread::sleep(Duration::from_millis(100));
        let left = resting_swaps();
        assert!(
            left.iter().any(|s| !before.0.contains(s)),
            "{kind}: a killed run's device should still be on: {left:?}"
        );
        let r = run_live(&scenario("process P\nP: mmap A 1p\n")).expect("next run");
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("removed the swap device left behind")),
            "{:?}",
            r.notes
        );
        assert_eq!(resting_state(), before, "{kind}: still left behind");
    }
}

/// zram0 in use as the host's own swap for a test (a small area, lowest
/// priority), put back on drop.
struct HostZramSwap;

impl HostZramSwap {
    fn start() -> Option<HostZramSwap> {
        let on = locked(|| {
            let dir = Path::new("/sys/block/zram0");
            let idle = std::fs::read_to_string(dir.join("initstate")).unwrap_or_default();
            if idle.trim() != "0" || !Path::new("/sys/class/zram-control/hot_add").exists() {
                return false;
            }
            if std::fs::write(dir.join("disksize"), (16u64 << 20).to_string()).is_err() {
                return false;
            }
            // mkswap's header: version 1, last page, magic.
            let mut h = vec![0u8; 4096];
            h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
            h[1028..1032].copy_from_slice(&((16u32 << 8) - 1).to_ne_bytes());
            h[4086..].copy_from_slice(b"SWAPSPACE2");
            let dev = std::ffi::CString::new("/dev/zram0").expect("path");
            // SAFETY: a NUL-terminated path; priority 0 (SWAP_FLAG_PREFER).
            let on = std::fs::write("/dev/zram0", &h).is_ok()
                && unsafe { libc::swapon(dev.as_ptr(), 0x8000) } == 0;
            if !on {
                let _ = std::fs::write(dir.join("reset"), "1");
            }
            on
        });
        on.then_some(HostZramSwap)
    }
}

impl Drop for HostZramSwap {
    fn drop(&mut self) {
        locked(|| {
            let dev = std::ffi::CString::new("/dev/zram0").expect("path");
            // SAFETY: a NUL-terminated path.
            unsafe { libc::swapoff(dev.as_ptr()) };
            let _ = std::fs::write("/sys/block/zram0/reset", "1");
        })
    }
}

/// Swap that was active before the run is left alone and noted: with the
/// host's zram0 busy, the run hot-adds a zram device of its own (at the
/// highest priority, so the scenario's pages go there), and removes it.
#[test]
fn the_hosts_swap_is_left_alone_and_a_zram_device_is_hot_added() {
    if !live() {
        return;
    }
    let _s = serial();
    let before = resting_swaps();
    let Some(host) = HostZramSwap::start() else {
        eprintln!("skipped: zram0 is in use or zram cannot hot-add devices here");
        return;
    };
    let zrams = || {
        let mut v: Vec<String> = std::fs::read_dir("/sys/block")
            .expect("sysfs")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("zram"))
            .collect();
        v.sort();
        v
    };
    let devices = locked(zrams);
    let r = run_swap(PAGEOUT, SwapPreference::Zram);
    let dev = r.swap.clone().expect("device");
    assert_ne!(dev.path, "/dev/zram0");
    assert_eq!(dev.host_swap, vec!["/dev/zram0"]);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("already had active swap, left alone: /dev/zram0")),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes.iter().any(|n| n.contains("hot-added")),
        "{:?}",
        r.notes
    );
    assert_expects_hold(&r);
    assert_eq!(counters_at(&r, 7), vec!["pswpout +1"]);
    // The host's swap is still on, the run's device is gone.
    assert_eq!(
        locked(swaps_now),
        before
            .iter()
            .cloned()
            .chain(["/dev/zram0".to_string()])
            .collect::<Vec<_>>()
    );
    assert_eq!(locked(zrams), devices);
    drop(host);
    assert_eq!(resting_swaps(), before);
}
