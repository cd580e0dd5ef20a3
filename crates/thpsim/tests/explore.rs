//! The explorer on the bundled race scenarios: each is clean with its fix over
//! a bounded search (PCT and random), fails with the fix reverted, and a
//! committed replay token reproduces the committed trace exactly.

use std::path::{Path, PathBuf};
use thpsim::explore::{explore, render_columns, replay, ExploreOptions, Strategy};
use thpsim::run::RunOptions;
use thpsim_model::fixes::Fix;

/// Race scenario, the fix it exercises.
const RACES: &[(&str, Fix)] = &[
    ("split_pmd_vs_wp_fault", Fix::SplitPmdPageLock),
    ("split_pmd_vs_wp_fault_dontneed", Fix::SplitPmdPageLock),
    ("split_pmd_vs_wp_fault_munmap", Fix::SplitPmdPageLock),
    ("split_page_vs_zap", Fix::RmapPmdUnderPtl),
    ("pinned_thp_wp_vs_dma", Fix::ThpWpAccurateMapcount),
    ("pinned_thp_wp_vs_split", Fix::ThpWpAccurateMapcount),
    ("pinned_thp_child_exit_vs_dma", Fix::ThpWpAccurateMapcount),
    ("migrate_shared_hugetlb_pmd", Fix::MigrateUnshareHugetlbPmd),
    // Seeds 001 and 002 in their own form, under `kernel 3.16`.
    ("split_vs_zap_huge_pmd_316", Fix::RmapPmdUnderPtl),
    ("split_vs_dontneed_huge_pmd_316", Fix::RmapPmdUnderPtl),
    ("parallel_split_munmap_316", Fix::SplitAnonVmaWrite),
    ("parallel_split_mprotect_316", Fix::SplitAnonVmaWrite),
    ("split_vs_munmap_316", Fix::SplitAnonVmaWrite),
];

/// Race scenarios where Linux 5.8 has no failure (model defects of issue 7,
/// and mlock's races), so there is no fix to revert; each must be clean over
/// a bounded search on both geometries.
const CLEAN: &[&str] = &[
    "fork_vs_deferred_split",
    "gup_fast_vs_split_huge_page",
    "gup_fast_vs_pmd_split",
    "pin_vs_child_cow",
    "munlock_vs_split_and_cow",
    "mlock_vs_split_and_cow",
    "move_pages_vs_write",
    "mirror_write_vs_cow",
    "hugetlb_shared_fault_vs_unmap",
    "hugetlb_fork_vs_write",
    "shmem_fault_vs_zap",
    "move_shmem_vs_write",
    "swapin_vs_wp_fault",
    "reclaim_vs_fork",
    "swapin_vs_swapin",
    "pageout_vs_write",
    "collapse_vs_write",
    "collapse_vs_munmap",
    "gup_fast_vs_collapse",
    "free_vs_write_vs_reclaim",
    // kernel 3.16: the tail-page refcounting against a split.
    "unpin_vs_split_316",
    "pin_vs_split_316",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scenario(name: &str) -> thpsim_scenario::Scenario {
    let path = root().join(format!("scenarios/races/{name}.thp"));
    let src = std::fs::read_to_string(&path).expect("race scenario");
    thpsim_scenario::parse(&format!("scenarios/races/{name}.thp"), &src).expect("parses")
}

fn opts(strategy: Strategy, iterations: usize, seed: u64, reverts: Vec<Fix>) -> ExploreOptions {
    ExploreOptions {
        run: RunOptions {
            reverts,
            ..RunOptions::default()
        },
        strategy,
        iterations,
        seed,
        ..ExploreOptions::default()
    }
}

#[test]
fn races_are_clean_with_their_fix() {
    for (name, _) in RACES {
        let scn = scenario(name);
        for strategy in [Strategy::Pct, Strategy::Random] {
            let r = explore(&scn, &opts(strategy, 1500, 7, Vec::new())).expect("valid");
            assert!(
                r.found.is_none(),
                "{name} ({strategy:?}) failed with the fix: {:?}",
                r.found.map(|f| f.what)
            );
            assert_eq!(r.executions, 1500, "{name}: the whole search ran");
            assert!(
                r.distinct > 100,
                "{name}: only {} distinct interleavings",
                r.distinct
            );
        }
    }
}

#[test]
fn model_defect_races_are_clean() {
    for name in CLEAN {
        let scn = scenario(name);
        for strategy in [Strategy::Pct, Strategy::Random] {
            let r = explore(&scn, &opts(strategy, 1500, 7, Vec::new())).expect("valid");
            assert!(
                r.found.is_none(),
                "{name} ({strategy:?}) failed: {:?}",
                r.found.map(|f| f.what)
            );
            assert_eq!(r.executions, 1500, "{name}: the whole search ran");
            assert!(
                r.distinct > 100,
                "{name}: only {} distinct interleavings",
                r.distinct
            );
        }
        // x86_64: a PMD maps 512 pages, so each execution is slow; a short
        // search still reaches the window (this seed found the defect at the
        // 9th interleaving).
        let mut o = opts(Strategy::Pct, 10, 2, Vec::new());
        o.run.geometry = Some(thpsim_scenario::Geometry::X86_64);
        let r = explore(&scn, &o).expect("valid");
        assert!(
            r.found.is_none(),
            "{name} (x86_64) failed: {:?}",
            r.found.map(|f| f.what)
        );
    }
}

#[test]
fn races_are_found_with_the_fix_reverted() {
    for (name, fix) in RACES {
        let scn = scenario(name);
        // Seed 001's window is one memory access wide while the splitter runs
        // dozens: a uniformly random schedule almost never keeps the zapping
        // CPU out that long (docs/PERFORMANCE.md); PCT finds it at once.
        let strategies: &[(Strategy, u64)] = if *fix == Fix::RmapPmdUnderPtl {
            &[(Strategy::Pct, 1), (Strategy::Pct, 2)]
        } else {
            &[(Strategy::Pct, 1), (Strategy::Random, 2)]
        };
        for &(strategy, seed) in strategies {
            let r = explore(&scn, &opts(strategy, 20_000, seed, vec![*fix])).expect("valid");
            let found = r.found.unwrap_or_else(|| {
                panic!(
                    "{name} ({strategy:?}): not found in {} interleavings",
                    r.executions
                )
            });
            assert!(found.switches_shrunk <= found.switches_found);
            assert!(found.token.starts_with("thp2-t-"), "{}", found.token);
            assert!(!found.trace.is_empty());
        }
    }
}

/// The trace of a replay, as the text report prints it.
fn trace_text(found: &thpsim::explore::Found) -> String {
    format!("{}\n{}\n", found.what, render_columns(&found.trace, 5, 44))
}

#[test]
fn committed_tokens_replay_the_committed_traces() {
    let bless = std::env::var_os("THPSIM_BLESS").is_some();
    for (name, fix) in RACES {
        let scn = scenario(name);
        let tok_path = root().join(format!("tests/replay/{name}.token"));
        let trace_path = root().join(format!("tests/replay/{name}.trace"));
        let committed = std::fs::read_to_string(&tok_path).expect("token");
        let committed = committed.trim();
        let token = match replay(&scn, committed).expect("valid") {
            Ok(found) => {
                // The token is this build's: it replays the committed trace.
                let want = std::fs::read_to_string(&trace_path)
                    .expect("committed trace (THPSIM_BLESS=1 writes it)");
                if !bless {
                    assert_eq!(
                        trace_text(&found),
                        want,
                        "{name}: the replayed trace changed"
                    );
                }
                committed.to_string()
            }
            Err(why) => {
                // Another build made it: refused, and saying so.
                assert!(
                    why.contains("another build") || why.contains("of format"),
                    "{name}: the committed token is refused for another reason: {why}"
                );
                let r = explore(&scn, &opts(Strategy::Pct, 20_000, 1, vec![*fix])).expect("valid");
                r.found.expect("the race is found").token
            }
        };
        let found = replay(&scn, &token)
            .expect("valid")
            .expect("this build's token");
        assert!(!found.report.passed(), "{name}: the token no longer fails");
        // Twice: replay is deterministic.
        let again = replay(&scn, &token).expect("valid").expect("parses");
        assert_eq!(
            trace_text(&again),
            trace_text(&found),
            "{name}: replay is not deterministic"
        );
        assert_eq!(again.token, token, "{name}: replay changed the schedule");
        if bless {
            std::fs::write(&tok_path, format!("{token}\n")).expect("write token");
            std::fs::write(&trace_path, trace_text(&found)).expect("write trace");
        }
    }
}

#[test]
fn bad_tokens_are_refused() {
    let scn = scenario("split_pmd_vs_wp_fault");
    let r = explore(
        &scn,
        &opts(Strategy::Pct, 20_000, 1, vec![Fix::SplitPmdPageLock]),
    )
    .expect("valid");
    let good = r.found.expect("found").token;
    // A token of another version of the scenario: one statement changed.
    let mut src = scn.source.clone();
    src = src.replacen("P: write A[..] = 0x11", "P: write A[..] = 0x12", 1);
    assert_ne!(
        src, scn.source,
        "the scenario has the statement the test edits"
    );
    let modified = thpsim_scenario::parse("modified.thp", &src).expect("parses");
    let why = replay(&modified, &good).expect("valid").unwrap_err();
    assert!(why.contains("another version of this scenario"), "{why}");
    // Schedules that do not fit: a switch past the last decision, a CPU that
    // does not exist; and one that does not fail (no switch at all).
    let (head, _) = good.rsplit_once('-').expect("token body");
    for (body, reason) in [
        ("999999:1", "does not fit"),
        ("1:7", "does not fit"),
        ("0", "without a failure"),
    ] {
        let why = replay(&scn, &format!("{head}-{body}"))
            .expect("valid")
            .unwrap_err();
        assert!(why.contains(reason), "{body}: {why}");
    }
    for bad in [
        "",
        "thp2-t-0-0",
        "thp1-t-1-29:2",
        "thp2-q-0-00000000-00000000-0",
        "thp2-t-zz-00000000-00000000-0",
        "thp2-t-4-00000000-00000000-0",
        "thp2-t-0-00000000-00000000-1:x",
    ] {
        assert!(
            replay(&scn, bad).expect("valid scenario").is_err(),
            "{bad:?} accepted"
        );
    }
}

/// The bounded strategy: with the fix, every schedule of the bound runs clean
/// and the search says it was exhaustive; reverted, it finds the race within
/// the bound the race needs (one preemption for seed 000's shapes, two for
/// seed 001's; seed 004's fails in every schedule, and its clean search goes
/// to two preemptions: a write-protect fault against DMA has few points).
#[test]
fn bounded_search_is_exhaustive_and_finds_the_reverted_races() {
    for (name, fix) in RACES {
        let scn = scenario(name);
        let clean_bound = if *fix == Fix::ThpWpAccurateMapcount {
            2
        } else {
            1
        };
        let clean = explore(
            &scn,
            &opts(
                Strategy::Bounded {
                    preemptions: clean_bound,
                },
                usize::MAX,
                0,
                Vec::new(),
            ),
        )
        .expect("valid");
        assert!(
            clean.found.is_none(),
            "{name}: {:?}",
            clean.found.map(|f| f.what)
        );
        let b = clean.bounded.expect("bounded counts");
        assert!(b.complete, "{name}: not exhaustive: {b:?}");
        assert_eq!(b.schedules as usize, clean.executions, "{name}");
        assert!(b.schedules > 100, "{name}: only {} schedules", b.schedules);
        let bound = if *fix == Fix::RmapPmdUnderPtl { 2 } else { 1 };
        let r = explore(
            &scn,
            &opts(
                Strategy::Bounded { preemptions: bound },
                usize::MAX,
                0,
                vec![*fix],
            ),
        )
        .expect("valid");
        let found = r
            .found
            .unwrap_or_else(|| panic!("{name}: the reverted race is not found within {bound}"));
        assert!(!found.trace.is_empty());
        assert!(!r.bounded.expect("counts").complete);
    }
}

/// The reduction of the bounded strategy prunes where steps commute and loses
/// nothing: on three threads it runs fewer schedules than the unreduced
/// search of the same bound, and where the outcome depends on the order (two
/// writers of one byte, a reader that expects one of them) both searches
/// find the failing order.
#[test]
fn the_bounded_reduction_prunes_and_loses_nothing() {
    let independent = thpsim_scenario::parse(
        "three.thp",
        "geometry tiny\nthp never\nprocess P\nP: mmap A 1p\nP: mmap B 1p\nP: mmap C 1p\n\
         P: write A[0] = 1\nP: write B[0] = 1\nP: write C[0] = 1\ntogether\n  \
         thread P: write A[0] = 2\n  thread P: write B[0] = 3\n  thread P: write C[0] = 4\nend\n",
    )
    .expect("parses");
    let run = |scn: &thpsim_scenario::Scenario, strategy| {
        explore(scn, &opts(strategy, usize::MAX, 0, Vec::new())).expect("valid")
    };
    let reduced = run(&independent, Strategy::Bounded { preemptions: 2 });
    let full = run(&independent, Strategy::BoundedUnreduced { preemptions: 2 });
    let (r, f) = (
        reduced.bounded.expect("counts"),
        full.bounded.expect("counts"),
    );
    assert!(reduced.found.is_none() && full.found.is_none());
    assert!(r.complete && f.complete);
    assert!(r.pruned > 0, "nothing pruned: {r:?}");
    assert_eq!(f.pruned, 0);
    assert!(r.schedules < f.schedules, "{r:?} vs {f:?}");

    let racy = thpsim_scenario::parse(
        "racy.thp",
        "geometry tiny\nthp never\nprocess P\nP: mmap A 1p\nP: mmap B 1p\nP: write A[0] = 1\n\
         P: write B[0] = 1\ntogether\n  thread P: write A[0] = 2\n  thread P: write A[0] = 3\n  \
         thread P: write B[0] = 4\nend\nP: read A[0] == 3\n",
    )
    .expect("parses");
    for strategy in [
        Strategy::Bounded { preemptions: 1 },
        Strategy::BoundedUnreduced { preemptions: 1 },
    ] {
        let r = run(&racy, strategy);
        let found = r
            .found
            .unwrap_or_else(|| panic!("{strategy:?}: the order is not found"));
        assert!(found.what.contains("line 13"), "{}", found.what);
    }
}

/// A bounded search splits into disjoint parts of the schedule tree: shards
/// (and jobs) of the unreduced search add up to exactly the whole, and the
/// reduced parts together are still exhaustive.
#[test]
fn bounded_parts_partition_the_tree() {
    let scn = thpsim_scenario::parse(
        "three.thp",
        "geometry tiny\nthp never\nprocess P\nP: mmap A 1p\nP: mmap B 1p\nP: mmap C 1p\n\
         P: write A[0] = 1\nP: write B[0] = 1\nP: write C[0] = 1\ntogether\n  \
         thread P: write A[0] = 2\n  thread P: write B[0] = 3\n  thread P: write C[0] = 4\nend\n",
    )
    .expect("parses");
    let search = |strategy, shard: Option<(u64, u64)>, jobs: usize| {
        let mut o = opts(strategy, usize::MAX, 0, Vec::new());
        o.shard = shard;
        o.jobs = jobs;
        let r = explore(&scn, &o).expect("valid");
        assert!(r.found.is_none());
        let b = r.bounded.expect("counts");
        assert!(b.complete, "{b:?}");
        (b.schedules, r.executions as u64)
    };
    for strategy in [
        Strategy::BoundedUnreduced { preemptions: 2 },
        Strategy::Bounded { preemptions: 2 },
    ] {
        let (whole, executions) = search(strategy, None, 1);
        assert_eq!(whole, executions);
        let parts: u64 = (0..3).map(|i| search(strategy, Some((i, 3)), 1).0).sum();
        let (jobs, _) = search(strategy, None, 2);
        if matches!(strategy, Strategy::BoundedUnreduced { .. }) {
            assert_eq!(parts, whole, "{strategy:?}: 3 shards");
            assert_eq!(jobs, whole, "{strategy:?}: 2 jobs");
        } else {
            // Each part prunes with what it explored itself: at least the
            // whole's schedules, at most the unreduced count.
            assert!(parts >= whole && jobs >= whole, "{parts} {jobs} {whole}");
        }
    }
}

/// A bounded search's progress estimate of the tree walked never goes back,
/// moves past the default path, and stays a fraction.
#[test]
fn bounded_progress_estimate_grows() {
    let scn = scenario("split_pmd_vs_wp_fault");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut o = opts(
        Strategy::Bounded { preemptions: 1 },
        usize::MAX,
        0,
        Vec::new(),
    );
    // One job: the callbacks of several jobs may arrive out of order.
    o.jobs = 1;
    o.progress = Some(std::sync::Arc::new(move |p: thpsim::explore::Progress| {
        s.lock()
            .unwrap()
            .push(p.bounded_done_ppm.expect("a bounded search's estimate"));
    }));
    let r = explore(&scn, &o).expect("valid");
    assert!(r.bounded.expect("counts").complete);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), r.executions);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(*seen.last().unwrap() > 0 && *seen.last().unwrap() < 1_000_000);
}

/// What a search reached: every kernel function and mark, by block and CPU.
fn reached(
    r: &thpsim::explore::ExploreReport,
) -> std::collections::BTreeSet<(usize, String, usize)> {
    let mut s = std::collections::BTreeSet::new();
    for b in &r.coverage {
        for reach in b.functions.iter().chain(&b.marks) {
            for (cpu, &n) in reach.executions.iter().enumerate() {
                if n > 0 {
                    s.insert((b.line, reach.name.clone(), cpu));
                }
            }
        }
    }
    s
}

/// The reduction (the fingerprint table, the sleep sets of preempted
/// threads, the repeated suffixes it skips) runs fewer schedules of the
/// bound and loses nothing the unreduced search reaches: on two- and
/// three-CPU race scenarios, with and without their fix, the same failure
/// verdict and, when clean, every kernel function and mark on every CPU.
#[test]
fn the_reduction_reaches_what_the_unreduced_search_reaches() {
    let mut fewer = false;
    for (name, revert, bound) in [
        ("split_pmd_vs_wp_fault", None, 2),
        ("split_page_vs_zap", None, 1),
        ("parallel_split_munmap_316", None, 1),
        ("parallel_split_munmap_316", Some(Fix::SplitAnonVmaWrite), 1),
        ("split_pmd_vs_wp_fault", Some(Fix::SplitPmdPageLock), 1),
        ("mlock_vs_split_and_cow", None, 1),
        ("swapin_vs_swapin", None, 1),
    ] {
        let scn = scenario(name);
        let reverts: Vec<Fix> = revert.into_iter().collect();
        let run = |strategy| {
            let mut o = opts(strategy, usize::MAX, 0, reverts.clone());
            o.jobs = 1;
            explore(&scn, &o).expect("valid")
        };
        let reduced = run(Strategy::Bounded { preemptions: bound });
        let full = run(Strategy::BoundedUnreduced { preemptions: bound });
        assert_eq!(
            reduced.found.is_some(),
            full.found.is_some(),
            "{name} {revert:?}: the verdicts differ"
        );
        if full.found.is_none() {
            let (r, f) = (
                reduced.bounded.expect("counts"),
                full.bounded.expect("counts"),
            );
            assert!(r.complete && f.complete, "{name}");
            assert!(r.schedules <= f.schedules, "{name}: {r:?} vs {f:?}");
            fewer |= r.schedules < f.schedules;
            assert_eq!(reached(&reduced), reached(&full), "{name} {revert:?}");
        }
    }
    assert!(fewer, "the reduction pruned nothing");
}
