//! The conformance corpus (`scenarios/conform/`, the swap scenarios of
//! `scenarios/swap/`, those of `scenarios/khugepaged/` without a
//! `khugepaged` limits line, and the hugetlb scenarios of `scenarios/hugetlb/` but
//! those where 5.8 itself breaks) against the
//! running kernel: every file agrees with the model (expected divergences
//! aside). Runs with
//! `THPSIM_LIVE=1` as root on Linux with THP; otherwise it says why it is
//! skipped.

use std::path::Path;
use thpsim::conform::{conform, ConformError};

#[test]
fn conformance_corpus_agrees_with_the_running_kernel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let list = |sub: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(root.join(sub))
            .expect("scenario folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "thp"))
            .collect();
        v.sort();
        v
    };
    let files = list("conform");
    assert!(
        files.len() >= 30,
        "the conformance corpus has {} scenarios",
        files.len()
    );
    let hugetlb: Vec<_> = list("hugetlb")
        .into_iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .expect("read")
                .contains("# 5.8 breaks:")
        })
        .collect();
    assert!(hugetlb.len() >= 4, "{} hugetlb scenarios", hugetlb.len());
    let swap = list("swap");
    assert!(swap.len() >= 8, "{} swap scenarios", swap.len());
    // The live runner refuses the `khugepaged max_ptes_...` line (its
    // khugepaged is MADV_COLLAPSE, which ignores the limits).
    let khugepaged: Vec<_> = list("khugepaged")
        .into_iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .any(|l| l.starts_with("khugepaged "))
        })
        .collect();
    assert!(
        khugepaged.len() >= 3,
        "{} khugepaged scenarios",
        khugepaged.len()
    );
    let files: Vec<_> = files
        .into_iter()
        .chain(hugetlb)
        .chain(swap)
        .chain(khugepaged)
        .collect();
    if let Err(e) = thpsim_live::live_tests_enabled() {
        eprintln!("skipped: {e}");
        return;
    }
    let mut failures = Vec::new();
    for p in &files {
        let src = std::fs::read_to_string(p).expect("read");
        let name = p.display().to_string();
        let scn = thpsim_scenario::parse(&name, &src).unwrap_or_else(|e| panic!("{name}: {e}"));
        match conform(&scn) {
            Ok(r) if r.agrees() => {}
            Ok(r) => failures.push(thpsim::conform::text(&r)),
            Err(ConformError::Environment(why)) => eprintln!("{name}: skipped: {why}"),
            Err(ConformError::Invalid(e)) => failures.push(format!("{name}: invalid: {e}")),
            Err(e @ ConformError::Interference { .. }) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} scenario(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
