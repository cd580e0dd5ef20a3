//! The scenario corpus: every bundled scenario under `scenarios/` (except the
//! race scenarios, which need the explorer) runs on both geometries, with the
//! audit and the memory oracle after every step, and must hold. The
//! conformance corpus (`scenarios/conform/`) is written for x86_64, the live
//! kernel's geometry, and runs there only.

use thpsim::bundled::BUNDLED;
use thpsim::output;
use thpsim::run::{run, RunOptions};
use thpsim_scenario::Geometry;

fn run_all(geometry: Geometry) {
    let mut failed = Vec::new();
    let mut count = 0;
    for (name, src) in BUNDLED {
        if name.starts_with("races/") {
            continue;
        }
        // The conformance corpus is written for the live kernel's geometry.
        if name.starts_with("conform/") && geometry != Geometry::X86_64 {
            continue;
        }
        count += 1;
        let scn = thpsim_scenario::parse(name, src).unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = run(
            &scn,
            &RunOptions {
                geometry: Some(geometry),
                reverts: Vec::new(),
            },
        )
        .unwrap_or_else(|e| panic!("{name}: invalid: {e}"));
        if !report.passed() {
            failed.push(format!("{name}:\n{}", output::text(&report)));
        }
    }
    assert!(count >= 25, "the corpus has {count} scenarios");
    assert!(
        failed.is_empty(),
        "{} scenario(s) failed on {geometry:?}:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn corpus_holds_on_tiny() {
    run_all(Geometry::Tiny);
}

#[test]
fn corpus_holds_on_x86_64() {
    run_all(Geometry::X86_64);
}
