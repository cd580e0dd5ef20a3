//! Live-kernel runs of scenarios. They run when `THPSIM_LIVE=1` is set and
//! this is root on Linux x86_64 with THP; otherwise each test prints
//! `skipped: <reason>` and passes.
#![cfg(unix)]

use std::path::PathBuf;
use thpsim_live::{run_live, LiveError, LiveRecord, LiveReport};
use thpsim_scenario::Outcome;

fn live() -> bool {
    match thpsim_live::live_tests_enabled() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// Live, and io_uring can pin here (a container may forbid io_uring: then
/// the pin tests print `skipped: <reason>` and pass).
fn live_pins() -> bool {
    if !live() {
        return false;
    }
    match thpsim_live::io_uring_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped: io_uring is unavailable: {e}");
            false
        }
    }
}

fn scenario_file(name: &str) -> thpsim_scenario::Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(name);
    let src = std::fs::read_to_string(&path).expect("scenario file");
    thpsim_scenario::parse(name, &src).expect("valid scenario")
}

fn scenario(src: &str) -> thpsim_scenario::Scenario {
    thpsim_scenario::parse("inline.thp", src).expect("valid scenario")
}

fn run(scn: &thpsim_scenario::Scenario) -> LiveReport {
    match run_live(scn) {
        Ok(r) => r,
        Err(e) => panic!("{}: {e}", scn.name),
    }
}

/// Every `expect` held (these scenarios agree with the 6.x kernels too).
fn assert_expects_hold(r: &LiveReport) {
    for rec in &r.records {
        if let LiveRecord::Expect {
            line,
            text,
            ok,
            found,
        } = rec
        {
            assert!(
                ok,
                "line {line}: `{text}` failed on {}: found {found}",
                r.kernel
            );
        }
    }
}

fn steps(r: &LiveReport) -> Vec<(usize, Outcome, Option<u8>)> {
    r.records
        .iter()
        .filter_map(|rec| match rec {
            LiveRecord::Step {
                line,
                outcome,
                value,
                ..
            } => Some((*line, *outcome, *value)),
            _ => None,
        })
        .collect()
}

/// `(offset, kind, page, subpage, mapcount, value)` of the shown pages.
type Shown = (u64, String, Option<String>, Option<u64>, i64, u8);

fn pages(r: &LiveReport, process: &str) -> Vec<Shown> {
    r.records
        .iter()
        .filter_map(|rec| match rec {
            LiveRecord::Page {
                process: p,
                offset,
                kind,
                page,
                subpage,
                mapcount,
                value,
                ..
            } if p == process => Some((
                *offset,
                kind.clone(),
                page.clone(),
                *subpage,
                *mapcount,
                *value,
            )),
            _ => None,
        })
        .collect()
}

/// Asserts that every step's outcome is the one the file expects.
fn assert_outcomes(scn: &thpsim_scenario::Scenario, r: &LiveReport) {
    let want: Vec<(usize, Outcome)> = scn.steps().map(|s| (s.span.line, s.expected())).collect();
    let got: Vec<(usize, Outcome)> = steps(r).into_iter().map(|(l, o, _)| (l, o)).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort_by_key(|w| w.0);
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|g| g.0);
    assert_eq!(got_sorted, want_sorted, "step outcomes of {}", scn.name);
}

#[test]
fn thp_fault_maps_one_thp_by_pmd() {
    if !live() {
        return;
    }
    let scn = scenario_file("thp_fault.thp");
    let r = run(&scn);
    assert_expects_hold(&r);
    assert_outcomes(&scn, &r);
    let shown = pages(&r, "P");
    assert_eq!(shown.len(), 4);
    for (i, (off, kind, page, sub, mapcount, _)) in shown.iter().enumerate() {
        assert_eq!(*off, i as u64);
        assert_eq!(kind, "thp-pmd");
        assert_eq!(
            page.as_deref(),
            Some("#1"),
            "subpages share the head's label"
        );
        assert_eq!(*sub, Some(i as u64));
        assert_eq!(*mapcount, 1);
    }
    let values: Vec<u8> = shown.iter().map(|s| s.5).collect();
    assert_eq!(values, vec![0, 0x11, 0x33, 0]);
    // Reads report the first byte.
    let reads: Vec<Option<u8>> = steps(&r).iter().map(|s| s.2).collect();
    assert!(reads.contains(&Some(0x11)) && reads.contains(&Some(0x33)));
}

#[test]
fn fork_shares_the_thp() {
    if !live() {
        return;
    }
    let scn = scenario_file("fork_share_thp.thp");
    let r = run(&scn);
    assert_expects_hold(&r);
    assert_outcomes(&scn, &r);
    for (_, kind, page, _, mapcount, value) in pages(&r, "C") {
        assert_eq!(kind, "thp-pmd");
        assert_eq!(page.as_deref(), Some("#1"));
        assert_eq!(mapcount, 2);
        assert_eq!(value, 0x11);
    }
}

#[test]
fn fork_child_write_copies_one_page() {
    if !live() {
        return;
    }
    let scn = scenario_file("fork_child_write.thp");
    let r = run(&scn);
    assert_expects_hold(&r);
    assert_outcomes(&scn, &r);
}

#[test]
fn partial_munmap_leaves_a_pte_mapped_thp() {
    if !live() {
        return;
    }
    let scn = scenario_file("partial_munmap.thp");
    let r = run(&scn);
    assert_expects_hold(&r);
    assert_outcomes(&scn, &r);
    let shown = pages(&r, "P");
    let kinds: Vec<&str> = shown.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(kinds, vec!["thp-pte", "none", "thp-pte", "thp-pte"]);
    assert_eq!(shown[1].2, None);
    assert_eq!(shown[0].2, shown[2].2);
    assert_eq!(shown[2].3, Some(2));
}

#[test]
fn deferred_split_splits_the_partially_unmapped_thp() {
    if !live() {
        return;
    }
    let scn = scenario_file("deferred_split.thp");
    let r = run(&scn);
    assert_expects_hold(&r);
    assert_outcomes(&scn, &r);
}

#[test]
fn outcomes_and_observations() {
    if !live() {
        return;
    }
    let scn = scenario(
        "thp never\n\
         process P\n\
         P: mmap A 4p\n\
         P: read A[0] == 0\n\
         P: write A[1p] = 0x5a\n\
         P: munmap A[1..2p] => einval\n\
         P: mprotect A[2p..3p] r\n\
         P: write A[2p] = 1 => segv\n\
         P: read A[2p] == 0\n\
         P: mprotect A[3p..4p] none\n\
         P: read A[3p] => segv\n\
         P: munmap A[0..1p]\n\
         P: write A[0] = 1 => segv\n\
         expect P A[1p] base\n\
         expect P A[1p] mapcount 1\n\
         expect P A[1p] node 0\n\
         expect P A[2p] zero\n\
         expect P A[3p] none\n\
         expect P A[1p] other P A[2p]\n\
         P: fork C\n\
         expect C A[1p] same P A[1p]\n\
         expect C A[1p] mapcount 2\n\
         C: exit\n\
         expect P A[1p] mapcount 1\n\
         show P A[..]\n",
    );
    let r = run(&scn);
    assert_expects_hold(&r);
    assert_outcomes(&scn, &r);
    let found: Vec<String> = r
        .records
        .iter()
        .filter_map(|rec| match rec {
            LiveRecord::Expect { found, .. } => Some(found.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        found,
        vec![
            "base",
            "mapcount 1",
            "node 0",
            "zero",
            "none",
            "#1 and #2",
            "#1 and #1",
            "mapcount 2",
            "mapcount 1"
        ]
    );
    let shown = pages(&r, "P");
    let kinds: Vec<&str> = shown.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(kinds, vec!["none", "base", "zero", "none"]);
    assert_eq!(shown[1].2.as_deref(), Some("#1"));
    assert_eq!(shown[1].5, 0x5a);
    assert_eq!(shown[2].2, None, "the zero page has no label");
}

#[test]
fn together_runs_round_robin() {
    if !live() {
        return;
    }
    let scn = scenario(
        "process P\n\
         P: mmap A 1h\n\
         P: write A[..] = 1\n\
         P: fork C\n\
         together\n\
         \x20 thread P: write A[0] = 2; read A[0] == 2\n\
         \x20 thread C: read A[0] == 1; write A[1p] = 3; read A[1p] == 3\n\
         end\n\
         expect P A[1p] other C A[1p]\n",
    );
    let r = run(&scn);
    assert_expects_hold(&r);
    let order: Vec<(usize, Option<u8>)> = steps(&r).iter().map(|s| (s.0, s.2)).collect();
    // Round 0: P's write, C's read; round 1: P's read, C's write; round 2: C's read.
    assert_eq!(
        order[3..],
        [
            (6, None),
            (7, Some(1)),
            (6, Some(2)),
            (7, None),
            (7, Some(3))
        ]
    );
}

#[test]
fn split_huge_page_runs_or_says_why_not() {
    if !live() {
        return;
    }
    let scn = scenario_file("split_after_fork.thp");
    match run_live(&scn) {
        Ok(r) => {
            // Subpages with data stay mapped by both processes as base pages.
            for (_, kind, _, _, mapcount, _) in pages(&r, "P") {
                assert!(kind == "base" || kind == "zero", "{kind}");
                assert!(mapcount >= 1);
            }
        }
        Err(LiveError::Unsupported { line, what }) => {
            assert_eq!(line, 20);
            assert!(what.contains("split_huge_pages"), "{what}");
            eprintln!("split-huge-page unsupported here: {what}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn later_features_are_unsupported_before_anything_runs() {
    if !live() {
        return;
    }
    let scn = scenario("process P\nP: mmap A 1h\nP: mirror M = A[0..1p]\n");
    match run_live(&scn) {
        Err(LiveError::Unsupported { line: 3, what }) => {
            assert!(what.contains("mirror"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    let scn = scenario("geometry tiny\nprocess P\nP: mmap A 1h\n");
    assert!(matches!(
        run_live(&scn),
        Err(LiveError::Unsupported { line: 1, .. })
    ));
}

/// Taken by the tests that read the settings before and after runs and by
/// the one that changes the host's hugetlb pool meanwhile.
static HOST_SETTINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` under the machine lock of the live runner (see `session`).
fn locked<T>(f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
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

/// The THP and hugetlb settings while no run holds them.
fn resting_settings() -> Vec<String> {
    locked(settings_now)
}

fn settings_now() -> Vec<String> {
    let thp = "/sys/kernel/mm/transparent_hugepage";
    let mut out = hugetlb_pool_settings();
    for f in [
        "enabled",
        "defrag",
        "use_zero_page",
        "shrink_underused",
        "khugepaged/scan_sleep_millisecs",
        "khugepaged/alloc_sleep_millisecs",
        "khugepaged/pages_to_scan",
        "hugepages-2048kB/enabled",
        "hugepages-64kB/enabled",
    ] {
        out.push(format!(
            "{f}={}",
            std::fs::read_to_string(format!("{thp}/{f}")).unwrap_or_default()
        ));
    }
    out
}

#[test]
fn settings_are_restored() {
    if !live() {
        return;
    }
    let _host = HOST_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let before = resting_settings();
    // Settings unlike the usual ones, and a run that fails half-way.
    let scn = scenario(
        "thp never\nzero-page off\nprocess P\nP: mmap A 1h\nP: write A[0] = 1\nP: munmap A[0..1p]\nP: write A[3h] = 1\n",
    );
    assert!(matches!(
        run_live(&scn),
        Err(LiveError::Invalid { line: 7, .. })
    ));
    assert_eq!(resting_settings(), before);
    run(&scenario_file("thp_zero_page_off.thp"));
    assert_eq!(resting_settings(), before);
}

#[test]
fn records_serialize_like_the_model() {
    let rec = LiveRecord::Page {
        line: 3,
        process: "P".into(),
        region: "A".into(),
        offset: 1,
        kind: "thp-pmd".into(),
        page: Some("#1".into()),
        subpage: Some(1),
        mapcount: 1,
        value: 17,
    };
    assert_eq!(
        serde_json::to_string(&rec).unwrap(),
        r##"{"type":"page","line":3,"process":"P","region":"A","offset":1,"kind":"thp-pmd","page":"#1","subpage":1,"mapcount":1,"value":17}"##
    );
    let step = LiveRecord::Step {
        line: 2,
        text: "P: read A[0]".into(),
        outcome: Outcome::Segv,
        value: None,
    };
    assert_eq!(
        serde_json::to_string(&step).unwrap(),
        r#"{"type":"step","line":2,"text":"P: read A[0]","outcome":"segv"}"#
    );
}

/// A collapse behind the runner's back (another thread of this process
/// collapsing its own memory with MADV_COLLAPSE while a scenario runs) is
/// reported as interference, not silently compared; a quiet run reports none.
#[test]
fn background_collapse_is_reported_as_interference() {
    if !live() {
        return;
    }
    let mut src = String::from("thp never\nprocess P\nP: mmap A 1h\n");
    for i in 0..200 {
        src.push_str(&format!("P: write A[{}p] = 0x11\n", i % 4));
    }
    let scn = scenario(&src);
    let quiet = run(&scn);
    assert!(quiet.interference.is_empty(), "{:?}", quiet.interference);

    const PMD: usize = 2 << 20;
    const MADV_COLLAPSE: libc::c_int = 25;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let collapses = std::sync::atomic::AtomicU64::new(0);
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a private mapping of this thread's own, unmapped at the end.
            unsafe {
                let raw = libc::mmap(
                    std::ptr::null_mut(),
                    2 * PMD,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(raw, libc::MAP_FAILED);
                let a = ((raw as usize + PMD - 1) & !(PMD - 1)) as *mut u8;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    libc::madvise(a.cast(), PMD, libc::MADV_NOHUGEPAGE);
                    libc::madvise(a.cast(), PMD, libc::MADV_DONTNEED);
                    for i in (0..PMD).step_by(4096) {
                        a.add(i).write_volatile(1);
                    }
                    libc::madvise(a.cast(), PMD, libc::MADV_HUGEPAGE);
                    if libc::madvise(a.cast(), PMD, MADV_COLLAPSE) == 0 {
                        collapses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                libc::munmap(raw, 2 * PMD);
            }
        });
        let r = run_live(&scn);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    let report = report.expect("live run");
    if collapses.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        eprintln!("skipped: MADV_COLLAPSE is not available on this kernel");
        return;
    }
    assert!(
        report.interference.iter().any(|w| w.contains("collapse")),
        "a collapse during the run must be reported: {:?}",
        report.interference
    );
}

/// The value of the step on `line`.
fn value_at(r: &LiveReport, line: usize) -> Option<u8> {
    steps(r)
        .into_iter()
        .find(|s| s.0 == line)
        .unwrap_or_else(|| panic!("no step on line {line}"))
        .2
}

/// The `expect` on `line`: (holds, found).
fn expect_at(r: &LiveReport, line: usize) -> (bool, String) {
    r.records
        .iter()
        .find_map(|rec| match rec {
            LiveRecord::Expect {
                line: l, ok, found, ..
            } if *l == line => Some((*ok, found.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no expect on line {line}"))
}

#[test]
fn a_device_write_through_a_pin_is_seen_by_the_process() {
    if !live_pins() {
        return;
    }
    let scn = scenario(
        "process P
P: mmap A 1h
P: mmap B 2p
P: write A[..] = 0x11
P: write B[..] = 0x22
P: pin R = A[..] write
P: pin S = B[1p..2p] write
device: write R[5p..6p] = 0x5a
device: write S[100] = 0x77
P: read A[5p]
P: read A[5p+4095]
P: read A[6p]
P: read A[4p+4095]
P: read B[1p+100]
P: read B[1p+99]
P: read B[100]
expect P A[0] thp-pmd
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
    for (line, want) in [
        (10, 0x5a),
        (11, 0x5a),
        (12, 0x11),
        (13, 0x11),
        (14, 0x77),
        (15, 0x22),
        (16, 0x22),
    ] {
        assert_eq!(value_at(&r, line), Some(want), "line {line}");
    }
}

#[test]
fn a_device_read_through_a_pin_sees_the_process_writes() {
    if !live_pins() {
        return;
    }
    let scn = scenario(
        "process P
P: mmap A 1h
P: write A[..] = 0x11
P: pin R = A[1p..3p] write fast
P: write A[2p+7] = 0x66
device: read R[1p+7]
device: read R[1p+6]
device: read R[0]
P: write A[1p..2p] = 0x44
device: read R[4095] == 0x44
P: exit
device: read R[1p+7]
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_eq!(value_at(&r, 6), Some(0x66));
    assert_eq!(value_at(&r, 7), Some(0x11));
    assert_eq!(value_at(&r, 8), Some(0x11));
    assert_eq!(value_at(&r, 10), Some(0x44));
    // The pin outlives its process: the device still reads the frames.
    assert_eq!(value_at(&r, 12), Some(0x66));
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("line 4") && n.contains("fast")),
        "{:?}",
        r.notes
    );
}

/// Whether a page is pinned shows at fork on Linux >= 5.9: fork copies a
/// page that page_maybe_dma_pinned() reports (70e806e4e645), and shares one
/// that is not. So `unpin` is seen to release the page.
#[test]
fn unpin_releases_the_pinned_page() {
    if !live_pins() {
        return;
    }
    let scn = scenario(
        "process P
P: mmap A 1p
P: write A[..] = 0x11
P: pin R = A[..] write
P: fork C1
expect P A[0] other C1 A[0]
P: unpin R
P: fork C2
expect P A[0] same C2 A[0]
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
}

#[test]
fn pins_of_inaccessible_memory_fail_with_efault() {
    if !live_pins() {
        return;
    }
    let scn = scenario(
        "process P
P: mmap N 1p
P: mprotect N[..] none
P: pin X = N[..] write => efault
P: mmap R 1p
P: write R[..] = 1
P: mprotect R[..] r
P: pin W = R[..] write => efault
P: mmap H 3p
P: write H[..] = 2
P: munmap H[1p..2p]
P: pin Y = H[..] write => efault
P: unpin Y
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    // A device step through a pin that was never taken is invalid input.
    let scn = scenario(
        "process P
P: mmap N 1p
P: mprotect N[..] none
P: pin X = N[..] write => efault
device: read X[0]
",
    );
    match run_live(&scn) {
        Err(LiveError::Invalid { line: 5, message }) => {
            assert!(message.contains("not held"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mlock_marks_the_pages_mlocked() {
    if !live() {
        return;
    }
    let scn = scenario(
        "process P
P: mmap A 1h
P: mmap B 2p
P: write A[..] = 0x11
P: mlock A[..]
expect P A[0] mlocked
expect P A[511p] mlocked
P: mlock B[1p..2p]
expect P B[1p] mlocked
expect P B[0] mlocked
P: munlock A[..]
expect P A[0] mlocked
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_eq!(expect_at(&r, 6), (true, "mlocked".into()));
    assert_eq!(expect_at(&r, 7), (true, "mlocked".into()));
    assert_eq!(expect_at(&r, 9), (true, "mlocked".into()));
    // Never touched, never locked: nothing there.
    assert_eq!(expect_at(&r, 10), (false, "none, not mlocked".into()));
    assert_eq!(expect_at(&r, 12), (false, "thp-pmd, not mlocked".into()));
}

const HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// The 2 MiB hugetlb pool's knobs, read as they are (the caller holds the
/// runner's lock, or does not care).
fn hugetlb_pool_settings() -> Vec<String> {
    ["nr_hugepages", "nr_overcommit_hugepages"]
        .iter()
        .map(|f| {
            format!(
                "{f}={}",
                std::fs::read_to_string(format!("{HUGEPAGES}/{f}")).unwrap_or_default()
            )
        })
        .collect()
}

/// Live and with 2 MiB hugetlb pages to set up.
fn live_hugetlb() -> bool {
    if !live() {
        return false;
    }
    if !std::path::Path::new(HUGEPAGES)
        .join("nr_hugepages")
        .exists()
    {
        eprintln!("skipped: this kernel has no 2 MiB hugetlb pages");
        return false;
    }
    true
}

#[test]
fn a_private_hugetlb_mapping_faults_hugetlb_pages() {
    if !live_hugetlb() {
        return;
    }
    let scn = scenario(
        "hugetlb-pool 4
process P
P: mmap A 1h+1p hugetlb
P: write A[0] = 0x11
P: write A[1p] = 0x12
expect P A[0] hugetlb
expect P A[1p] mapcount 1
expect P A[1h] none
P: write A[1h+1p] = 0x13
expect P A[1h] hugetlb
expect P A[0] other P A[1h]
P: read A[1p] == 0x12
show P A[0..2p]
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
    let shown = pages(&r, "P");
    assert_eq!(
        shown,
        vec![
            (0, "hugetlb".into(), Some("#1".into()), Some(0), 1, 0x11),
            (1, "hugetlb".into(), Some("#1".into()), Some(1), 1, 0x12),
        ]
    );
    assert!(
        r.notes.iter().any(|n| n.contains("nr_hugepages")),
        "{:?}",
        r.notes
    );
}

#[test]
fn fork_shares_a_private_hugetlb_page_until_a_write_copies_it() {
    if !live_hugetlb() {
        return;
    }
    let scn = scenario(
        "hugetlb-pool 4
process P
P: mmap A 2h hugetlb
P: write A[0] = 0x11
expect P A[0] hugetlb
P: fork C
expect P A[0] same C A[0]
expect C A[1p] mapcount 2
C: read A[0] == 0x11
C: write A[1p] = 0x22
expect P A[0] other C A[0]
expect C A[0] hugetlb
expect P A[1p] mapcount 1
expect C A[5p] mapcount 1
P: read A[1p] == 0
C: read A[0] == 0x11
C: read A[1p] == 0x22
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
}

#[test]
fn a_child_write_to_shared_hugetlb_memory_is_seen_by_the_parent() {
    if !live_hugetlb() {
        return;
    }
    let scn = scenario(
        "hugetlb-pool 2
process P
P: mmap A 1h hugetlb shared
P: write A[0] = 0x11
P: fork C
C: write A[1p] = 0x22
expect P A[0] same C A[0]
expect P A[1p] mapcount 2
expect C A[0] hugetlb
P: read A[1p] == 0x22
C: read A[0] == 0x11
C: exit
expect P A[0] mapcount 1
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
}

#[test]
fn a_hugetlb_memfd_mapped_by_two_processes_is_one_page() {
    if !live_hugetlb() {
        return;
    }
    let scn = scenario(
        "hugetlb-pool 2
process P
process Q
P: memfd F 1m hugetlb
P: mmap A 1h file=F shared
Q: mmap B 1h file=F shared
P: write A[0] = 0x11
Q: read B[0] == 0x11
Q: write B[1p] = 0x22
P: read A[1p] == 0x22
expect P A[0] same Q B[0]
expect Q B[0] hugetlb
expect P A[3p] mapcount 2
P: exit
Q: read B[1p] == 0x22
expect Q B[0] mapcount 1
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
}

/// `mmap ... file=F` without `shared` (the parser insists on `shared`
/// today; the runner maps MAP_PRIVATE when the scenario says private).
#[test]
fn a_private_mapping_of_a_hugetlb_memfd_copies_on_write() {
    if !live_hugetlb() {
        return;
    }
    let mut scn = scenario(
        "hugetlb-pool 3
process P
process Q
P: memfd F 1h hugetlb
P: mmap A 1h file=F shared
P: write A[0] = 0x11
Q: mmap B 1h file=F shared
Q: read B[0] == 0x11
expect P A[0] same Q B[0]
Q: write B[0] = 0x22
expect P A[0] other Q B[0]
P: read A[0] == 0x11
Q: read B[0] == 0x22
",
    );
    for item in &mut scn.items {
        if let thpsim_scenario::Item::Step(s) = item {
            if s.span.line == 7 {
                if let thpsim_scenario::Op::Mmap { shared, .. } = &mut s.op {
                    *shared = false;
                }
            }
        }
    }
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
}

#[test]
fn hugetlb_mappings_fail_as_the_kernel_fails_them() {
    if !live_hugetlb() {
        return;
    }
    // No pool: a private mapping cannot reserve, a shared one neither, and a
    // memfd is made (its pages are reserved by mappings).
    let scn = scenario(
        "process P
P: mmap A 1h hugetlb => enomem
P: mmap S 1h hugetlb shared => enomem
P: memfd F 1h hugetlb
P: mmap B 1h file=F shared => enomem
P: mmap Z 0 hugetlb => einval
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    // A private mapping reserves its whole length at mmap.
    let scn = scenario(
        "hugetlb-pool 1
process P
P: mmap A 2h hugetlb => enomem
P: mmap B 1h hugetlb
P: mmap C 1p hugetlb => enomem
P: write B[0] = 1
P: munmap B[..]
P: mmap D 1p hugetlb
P: write D[511p+4095] = 2
expect P D[511p] hugetlb
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
}

#[test]
fn munmap_and_mprotect_of_part_of_a_huge_page_fail_with_einval() {
    if !live_hugetlb() {
        return;
    }
    let scn = scenario(
        "hugetlb-pool 2
process P
P: mmap A 2h hugetlb
P: write A[..] = 0x11
P: munmap A[0..1m] => einval
P: munmap A[1p..1h] => einval
P: mprotect A[0..1p] r => einval
P: mprotect A[1h..2h] r
P: write A[1h] = 1 => segv
P: munmap A[1h..2h]
P: read A[1h] => segv
P: madvise A[0..1h] dontneed
expect P A[0] none
P: read A[0] == 0
expect P A[0] hugetlb
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
}

#[test]
fn a_pin_of_hugetlb_memory_reaches_the_huge_page() {
    if !live_hugetlb() || !live_pins() {
        return;
    }
    let scn = scenario(
        "hugetlb-pool 2
process P
P: mmap A 1h hugetlb
P: write A[..] = 0x11
P: pin R = A[1p..3p] write
device: write R[0] = 0x44
P: read A[1p] == 0x44
P: write A[2p] = 0x55
device: read R[1p] == 0x55
P: unpin R
expect P A[1p] hugetlb
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_expects_hold(&r);
    assert_eq!(value_at(&r, 9), Some(0x55));
}

#[test]
fn the_hugetlb_pool_is_restored_after_a_run() {
    if !live_hugetlb() {
        return;
    }
    let _host = HOST_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    // A host with a pool of its own, and overcommit: the runs must neither
    // use nor keep them.
    let host = HostPool::set(1, 2);
    let before = resting_settings();
    assert!(
        before.contains(&"nr_hugepages=1\n".to_string()),
        "{before:?}"
    );
    let run_pool = |src: &str| {
        let scn = scenario(src);
        let r = run(&scn);
        assert_outcomes(&scn, &r);
        assert_eq!(resting_settings(), before);
    };
    run_pool("hugetlb-pool 3\nprocess P\nP: mmap A 1h hugetlb\nP: write A[0] = 1\n");
    // A run that fails half-way, holding a file and a mapping.
    let scn = scenario(
        "hugetlb-pool 2\nprocess P\nP: memfd F 1h hugetlb\nP: mmap A 1h file=F shared\n\
         P: write A[0] = 1\nP: write A[3h] = 1\n",
    );
    assert!(matches!(
        run_live(&scn),
        Err(LiveError::Invalid { line: 6, .. })
    ));
    assert_eq!(resting_settings(), before);
    // Without a pool line the pool is emptied for the run: the host's free
    // page is not the scenario's.
    run_pool("process P\nP: mmap A 1h hugetlb => enomem\n");
    drop(host);
}

/// The host's 2 MiB pool and overcommit, set for a test and put back.
struct HostPool(Vec<(String, String)>);

impl HostPool {
    fn set(nr: u64, overcommit: u64) -> HostPool {
        locked(|| {
            let mut old = Vec::new();
            for (f, v) in [
                ("nr_overcommit_hugepages", overcommit),
                ("nr_hugepages", nr),
            ] {
                let p = format!("{HUGEPAGES}/{f}");
                old.push((p.clone(), std::fs::read_to_string(&p).expect("read")));
                std::fs::write(&p, v.to_string()).expect("write");
            }
            HostPool(old)
        })
    }
}

impl Drop for HostPool {
    fn drop(&mut self) {
        locked(|| {
            for (p, v) in self.0.iter().rev() {
                let _ = std::fs::write(p, v.trim());
            }
        })
    }
}

/// With no free page left, the child (which holds no reservation) cannot
/// copy a private hugetlb page on write: SIGBUS. The parent, the
/// reservation's owner, can: its copy takes the page back from the child
/// (unmap_ref_private()), whose next access is a SIGBUS too.
#[test]
fn a_hugetlb_copy_on_write_without_a_free_page_is_a_sigbus() {
    if !live_hugetlb() {
        return;
    }
    let scn = scenario(
        "hugetlb-pool 1
process P
P: mmap A 1h hugetlb
P: write A[0] = 0x11
P: fork C
C: write A[1p] = 0x22 => sigbus
C: read A[0] == 0x11
P: write A[0] = 0x33
C: read A[0] => sigbus
P: read A[0] == 0x33
",
    );
    let r = run(&scn);
    assert_outcomes(&scn, &r);
    assert_eq!(value_at(&r, 10), Some(0x33));
}
