//! The conformance corpus (`scenarios/conform/`) against the running kernel:
//! every file agrees with the model (expected divergences aside). Runs with
//! `THPSIM_LIVE=1` as root on Linux with THP; otherwise it says why it is
//! skipped.

use std::path::Path;
use thpsim::conform::{conform, ConformError};

#[test]
fn conformance_corpus_agrees_with_the_running_kernel() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/conform");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/conform")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "thp"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the conformance corpus has {} scenarios",
        files.len()
    );
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
