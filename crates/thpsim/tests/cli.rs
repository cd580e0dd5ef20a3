//! The command line: exit codes, error messages that name the line, JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn thpsim(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thpsim"));
    c.args(args);
    // A batch system's array index would shard every `explore` (tests/shard.rs
    // sets them on purpose).
    for v in [
        "JOB_COMPLETION_INDEX",
        "THPSIM_SHARDS",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
    ] {
        c.env_remove(v);
    }
    c.output().expect("run thpsim")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write_tmp(name: &str, src: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thpsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(name);
    std::fs::write(&p, src).expect("write");
    p
}

#[test]
fn every_malformed_file_exits_2_naming_its_line() {
    let dir = root().join("tests/malformed");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("tests/malformed") {
        let p = e.expect("entry").path();
        let src = std::fs::read_to_string(&p).expect("read");
        let line: usize = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error-line:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: first line must be `# error-line: N`", p.display()));
        let out = thpsim(&["run", p.to_str().expect("utf8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", p.display());
        assert!(
            stderr.contains(&format!("line {line},")),
            "{}: expected an error naming line {line}, got:\n{stderr}",
            p.display()
        );
        assert!(!stderr.contains("panicked"), "{}: panicked", p.display());
        n += 1;
    }
    assert!(n >= 25, "only {n} malformed files");
}

#[test]
fn a_false_expect_exits_1_and_names_the_step() {
    let p = write_tmp(
        "false_expect.thp",
        "thp always\nprocess P\nP: mmap A 1h\nP: write A[0] = 1\nexpect P A[0] base\n",
    );
    let out = thpsim(&["run", p.to_str().expect("utf8"), "--geometry", "tiny"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("expect P A[0] base") && stdout.contains("FAIL: found thp-pmd"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED: 1 check(s) failed (line 5)"),
        "{stdout}"
    );
}

#[test]
fn a_wrong_outcome_fails_the_step() {
    let p = write_tmp(
        "wrong_outcome.thp",
        "process P\nP: mmap A 1h\nP: munmap A[..]\nP: write A[0] = 1\n",
    );
    let out = thpsim(&["run", p.to_str().expect("utf8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL: segv (expected ok)"), "{stdout}");
}

#[test]
fn json_lines_parse_and_show_pages() {
    let out = thpsim(&["run", "fork_share_thp", "--json", "--geometry", "tiny"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let objs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(objs.iter().any(|o| o["type"] == "step"));
    let last = objs.last().expect("summary");
    assert_eq!(last["type"], "summary");
    assert_eq!(last["passed"], true);
}

#[test]
fn missing_file_and_unknown_fix_exit_2() {
    let out = thpsim(&["run", "/nonexistent/x.thp"]);
    assert_eq!(out.status.code(), Some(2));
    let out = thpsim(&["run", "thp_fault", "--revert", "no-such-fix"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fix"));
}

/// `kernel 3.16` runs (issue 12); what its profile leaves out, and a
/// `--revert` of a fix 3.16 does not have, are invalid input naming the line.
#[test]
fn kernel_316_runs_and_refuses_what_it_lacks() {
    let p = write_tmp("k316.thp", "process P\nkernel 3.16\nP: mmap A 1h\nP: write A[..] = 1\nP: munmap A[1p..2p]\nexpect P A[0] base\n");
    let out = thpsim(&["run", p.to_str().expect("utf8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = thpsim(&[
        "run",
        p.to_str().expect("utf8"),
        "--revert",
        "split-pmd-page-lock",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("line 2,") && stderr.contains("--revert split-pmd-page-lock: kernel 3.16"),
        "{stderr}"
    );
    let out = thpsim(&[
        "run",
        p.to_str().expect("utf8"),
        "--revert",
        "split-anon-vma-write",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let p = write_tmp("k316s.thp", "kernel 3.16\nswap 1m\nprocess P\n");
    let out = thpsim(&["run", p.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("line 2,") && stderr.contains("not modelled under `kernel 3.16`"),
        "{stderr}"
    );
    // An expectation's feature counts too (`mlocked` needs mlock).
    let p = write_tmp(
        "k316m.thp",
        "kernel 3.16\nprocess P\nP: mmap A 1h\nexpect P A[0] mlocked\n",
    );
    let out = thpsim(&["run", p.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 4,") && stderr.contains("not modelled under `kernel 3.16`"),
        "{stderr}"
    );
    let out = thpsim(&["fixes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3.16"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("split-anon-vma-write"))
        .expect("listed");
    assert!(line.contains("yes   yes"), "{line}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("split-pmd-page-lock"))
        .expect("listed");
    assert!(line.contains("yes   -"), "{line}");
}

/// Swap, reclaim, MADV_PAGEOUT and khugepaged run (issue 11); MADV_COLLAPSE
/// is `einval` under 5.8; a device too small for a slot is invalid input.
#[test]
fn swap_and_khugepaged_run() {
    for (name, src, code) in [
        (
            "swap.thp",
            "swap 64m\nthp never\nprocess P\nP: mmap A 2p\nP: write A[..] = 5\n\
             kernel: reclaim P A[..]\nexpect P A[0] swap\nP: madvise A[..] pageout\n\
             P: read A[1p] == 5\nexpect P A[1p] base\n",
            0,
        ),
        (
            "khugepaged.thp",
            "thp madvise\nprocess P\nP: mmap A 1h\nP: write A[0] = 6\n\
             P: madvise A[..] hugepage\nkernel: khugepaged P A[..]\n\
             expect P A[0] thp-pmd\nP: madvise A[..] collapse => einval\n",
            0,
        ),
        (
            "free.thp",
            "swap 1m\nthp never\nprocess P\nP: mmap A 2p\nP: write A[..] = 7\n\
             P: madvise A[..] free\nkernel: reclaim P A[..]\nexpect P A[0] none\n\
             P: read A[1p] == 0\n",
            0,
        ),
        ("swap_tiny.thp", "swap 1p\nprocess P\n", 2),
    ] {
        let p = write_tmp(name, src);
        let out = thpsim(&["run", p.to_str().expect("utf8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{name}: {stdout}{stderr}");
        if code == 2 {
            assert!(stderr.contains("line 1,"), "{name}: {stderr}");
        }
    }
}

/// Pins run (all three kinds), with their outcomes; a pin the process may not
/// take fails with `efault`; 5.8 breaking the pin promise is exit 1.
#[test]
fn pins_run() {
    for (name, src, code) in [
        (
            "pins.thp",
            "process P\nP: mmap A 1h\nP: write A[..] = 7\nP: pin R = A[..] write\n\
             P: pin F = A[..] write fast\nP: pin O = A[0..1p]\ndevice: read O[0] == 7\n\
             device: write R[1p] = 9\nP: read A[1p] == 9\nP: exit\n",
            0,
        ),
        (
            "efault.thp",
            "process P\nP: mmap A 1p\nP: mprotect A[..] none\nP: pin R = A[..] => efault\n",
            0,
        ),
        (
            "fork.thp",
            "process P\nP: mmap A 1p\nP: write A[0] = 1\nP: pin R = A[..] write\n\
             P: fork C\nP: write A[0] = 2\n",
            1,
        ),
    ] {
        let p = write_tmp(name, src);
        let out = thpsim(&["run", p.to_str().expect("utf8")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{name}: {stdout}");
        if code == 1 {
            assert!(stdout.contains("MEM-PIN-COHERENT"), "{name}: {stdout}");
        }
    }
}

#[test]
fn khugepaged_limits_follow_the_geometry() {
    // Accepted (no khugepaged runs, so they change nothing) where they fit ...
    let p = write_tmp(
        "limits.thp",
        "kernel 5.8\nkhugepaged max_ptes_none=511 max_ptes_swap=64\nprocess P\nP: mmap A 1h\nP: write A[0] = 1\nexpect P A[0] thp-pmd\n",
    );
    let p = p.to_str().expect("utf8");
    let out = thpsim(&["run", p]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and invalid input in a geometry where HPAGE_PMD_NR-1 is smaller.
    let out = thpsim(&["run", p, "--geometry", "tiny"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2, column 12") && stderr.contains("HPAGE_PMD_NR-1 = 3"),
        "{stderr}"
    );
    // The same for pins and mirrors, whose lengths follow the geometry.
    let p = write_tmp(
        "device_geometry.thp",
        "process P\nP: mmap A 1u\nP: pin R = A[0..4h] write\ndevice: read R[1k]\n",
    );
    let out = thpsim(&["run", p.to_str().expect("utf8"), "--geometry", "tiny"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 4,"), "{stderr}");
}

#[test]
fn list_and_fixes() {
    let out = thpsim(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fork_child_write"));
    let out = thpsim(&["fixes"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("split-pmd-page-lock") && s.contains("rmap-pmd-under-ptl"),
        "{s}"
    );
}

#[test]
fn explore_and_replay_exit_codes() {
    let race = root().join("scenarios/races/split_pmd_vs_wp_fault.thp");
    let race = race.to_str().expect("utf8");
    let out = thpsim(&[
        "explore",
        race,
        "--iterations",
        "300",
        "--strategy",
        "random",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("300 interleavings run") && stdout.contains("strategy random and seed 0"),
        "{stdout}"
    );
    let out = thpsim(&["explore", race, "--revert", "split-pmd-page-lock", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let token = r["found"]["token"].as_str().expect("token").to_string();
    let out = thpsim(&["replay", race, &token]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("CPU0") && stdout.contains("CPU1") && stdout.contains("MEM-PRIVATE"),
        "{stdout}"
    );
    // Without `together` one execution is the whole search.
    let out = thpsim(&["explore", "fork_child_write", "--geometry", "tiny"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 interleavings run"));
    for bad in [
        &["explore", race, "--shard", "3/2"][..],
        &["explore", race, "--iterations", "0"],
        &["explore", race, "--depth", "0"],
        &["explore", race, "--time", "1e20"],
        &["explore", race, "--time", "0"],
        &["explore", race, "--time", "-1"],
        &["replay", race, "nonsense"],
    ] {
        assert_eq!(thpsim(bad).status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn a_bounded_search_says_it_was_exhaustive() {
    let race = root().join("scenarios/races/split_pmd_vs_wp_fault.thp");
    let race = race.to_str().expect("utf8");
    let out = thpsim(&[
        "explore",
        race,
        "--strategy",
        "bounded",
        "--preemptions",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ok: exhaustive up to 1 preemption: ")
            && stdout.contains(" schedules, ")
            && stdout.contains(" pruned, no failure"),
        "{stdout}"
    );
    // A search stopped early says it is not exhaustive.
    let out = thpsim(&[
        "explore",
        race,
        "--strategy",
        "bounded",
        "--iterations",
        "10",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("NOT exhaustive"), "{stdout}");
    let out = thpsim(&["explore", race, "--strategy", "dfs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retired"));
}

/// An oops that leaves a lock held ends the execution without a deadlock:
/// the CPUs that would wait on it stall (`Engine::note_oops`), and shuttle
/// prints nothing (it used to print "Test deadlocked" for each such
/// execution of this search).
#[test]
fn explore_after_an_oops_prints_no_deadlock() {
    let race = root().join("scenarios/races/split_page_vs_zap.thp");
    let out = thpsim(&[
        "explore",
        race.to_str().expect("utf8"),
        "--revert",
        "rmap-pmd-under-ptl",
        "--iterations",
        "3000",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("total_mapcount(head) > 0"), "{stdout}");
    assert!(stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn explore_prints_its_coverage_in_text_and_json() {
    let race = root().join("scenarios/races/split_page_vs_zap.thp");
    let race = race.to_str().expect("utf8");
    let out = thpsim(&["explore", race, "--iterations", "200"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for want in [
        "coverage of the together block at line",
        "split_huge_page_to_list",
        "zap_pte_range",
        "split_huge_page_to_list: unmap_page reached",
        "CPU0 and CPU1 ran at the same time in",
    ] {
        assert!(stdout.contains(want), "no `{want}` in:\n{stdout}");
    }
    let out = thpsim(&["explore", race, "--iterations", "200", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let block = &r["coverage"][0];
    assert_eq!(block["executions"], 200);
    let fns = block["functions"].as_array().expect("functions");
    assert!(fns.iter().any(|f| f["name"] == "split_huge_page_to_list"));
    assert!(block["marks"].as_array().is_some_and(|m| !m.is_empty()));
    assert!(block["overlaps"][0]["executions"]
        .as_u64()
        .is_some_and(|n| n > 0));
}

/// A race whose splitter finds nothing to split in every execution is not a
/// clean search of the split path: explore says so.
#[test]
fn explore_warns_when_a_thread_always_gives_up() {
    let p = write_tmp(
        "gives_up.thp",
        "geometry tiny\nthp never\nprocess P\nP: mmap A 1h\nP: write A[..] = 1\n\
         together\n  thread P: write A[1p] = 2\n  thread kernel: split-huge-page P A[0]\nend\n",
    );
    let out = thpsim(&["explore", p.to_str().expect("utf8"), "--iterations", "100"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "warning: CPU1 (`kernel: split-huge-page P A[0]`) gave up early in every execution \
             (100 of 100): split_huge_pages_pid: no THP mapped there"
        ),
        "{stdout}"
    );
    // `thpsim run` says whether the split happened.
    let out = thpsim(&["run", p.to_str().expect("utf8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (no THP mapped there: nothing split)"),
        "{stdout}"
    );
}

/// `--time` alone bounds the search by time, not by the default 10,000.
#[test]
fn explore_time_alone_searches_for_that_long() {
    let p = write_tmp(
        "quick.thp",
        "geometry tiny\nthp never\nprocess P\nP: mmap A 1p\nP: mmap B 1p\n\
         together\n  thread P: write A[0] = 1\n  thread P: write B[0] = 2\nend\n",
    );
    let out = thpsim(&[
        "explore",
        p.to_str().expect("utf8"),
        "--time",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let elapsed = r["elapsed_ms"].as_u64().expect("elapsed");
    assert!(
        elapsed >= 2000,
        "stopped after {elapsed} ms and {} interleavings",
        r["executions"]
    );
}

/// `thpsim bench kernel` on the live kernel (opt-in: `THPSIM_LIVE=1`, root):
/// one round of two small workloads, as a table and as JSON lines with a
/// ratio for each path; an unknown workload is refused with exit 2.
#[test]
fn bench_kernel_prints_each_figure_with_its_ratio() {
    let out = thpsim(&["bench", "kernel", "--only", "fault-9k"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    if let Err(e) = thpsim_live::live_tests_enabled() {
        eprintln!("skipped: {e}");
        return;
    }
    let out = thpsim(&[
        "bench",
        "kernel",
        "--rounds",
        "1",
        "--only",
        "munmap-1p-16m,fork-chain-2-64m",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{out:?}");
    assert!(stdout.contains("| munmap-1p-16m | always |"), "{stdout}");
    assert!(stdout.contains("| fork-chain-2-64m | always |"), "{stdout}");
    let out = thpsim(&[
        "bench",
        "kernel",
        "--rounds",
        "1",
        "--only",
        "munmap-1p-16m",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(v["type"], "bench-kernel");
    for k in ["kernel", "run", "raw", "ratio_run", "ratio_raw"] {
        let med = v[k]["median"].as_f64().expect(k);
        assert!(med > 0.0 && med.is_finite(), "{k}: {v}");
    }
}

/// `thpsim live restore` (live, root): with a saved-state file planted in
/// the runner's directory naming a file of its own, the file is left alone
/// and the line refused by name (unless a run in another test got there
/// first, which refuses it the same way); with nothing left behind it says
/// so. Exit 0 either way.
#[test]
fn live_restore_refuses_a_planted_foreign_path() {
    if let Err(e) = thpsim_live::live_tests_enabled() {
        eprintln!("skipped: {e}");
        return;
    }
    let target = std::env::temp_dir().join(format!("thpsim-cli-planted-{}", std::process::id()));
    std::fs::write(&target, "untouched\n").expect("target");
    // Made by a run or by `live restore` itself (root's, 0700).
    let out = thpsim(&["live", "restore"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let saved = std::path::Path::new("/run/thpsim-live/saved");
    std::fs::write(saved, format!("{}\tpwned\n", target.display())).expect("plant");
    let out = thpsim(&["live", "restore"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    assert!(!saved.exists(), "the saved file is removed");
    assert!(
        stdout.contains("ignored `") && stdout.contains("thpsim-cli-planted")
            || stdout.starts_with("nothing to restore"),
        "{stdout}"
    );
    let out = thpsim(&["live", "restore"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("nothing to restore"),
        "{out:?}"
    );
    let _ = std::fs::remove_file(&target);
}
