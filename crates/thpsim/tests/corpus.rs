//! The scenario corpus: every bundled scenario under `scenarios/` (except the
//! race scenarios, which need the explorer) runs on both geometries, with the
//! audit and the memory oracle after every step, and must hold. The
//! conformance corpus (`scenarios/conform/`) is written for x86_64, the live
//! kernel's geometry, and runs there only.
//!
//! A scenario where Linux 5.8 itself breaks an invariant the model checks
//! (its fork does not copy pinned pages: scenarios/pins/; its hugetlb COW
//! deadlocks on i_mmap_rwsem: scenarios/hugetlb/) marks the step with
//! `# 5.8 breaks: ID`; it must fail with exactly those violations on exactly
//! those lines (the step itself may not finish), and nothing else.

use std::collections::BTreeSet;

use thpsim::bundled::BUNDLED;
use thpsim::output;
use thpsim::run::{run, Record, RunOptions};
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
                ..RunOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: invalid: {e}"));
        let breaks = breaks_marks(src);
        if breaks.is_empty() {
            if !report.passed() {
                failed.push(format!("{name}:\n{}", output::text(&report)));
            }
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut other = false;
        for r in report.failures() {
            match r {
                Record::Violation { line, violation } => {
                    seen.insert((*line, violation.id.to_string()));
                }
                // The step that breaks it may not finish (a CPU that would
                // hang, as a self-deadlock does, is stopped).
                Record::Step { line, .. } if breaks.iter().any(|(l, _)| l == line) => {}
                _ => other = true,
            }
        }
        if other || seen != breaks {
            failed.push(format!(
                "{name}: 5.8 should break {breaks:?} and nothing else; it broke {seen:?}:\n{}",
                output::text(&report)
            ));
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

/// The `# 5.8 breaks: ID` marks of a source: (line, invariant ID).
fn breaks_marks(src: &str) -> BTreeSet<(usize, String)> {
    src.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (_, rest) = l.split_once("# 5.8 breaks:")?;
            Some((i + 1, rest.split_whitespace().next()?.to_string()))
        })
        .collect()
}

#[test]
fn the_breaks_marks_are_read() {
    let marks = breaks_marks("a\nP: write A[0] = 1  # 5.8 breaks: MEM-PIN-COHERENT (why)\n");
    assert_eq!(
        marks.into_iter().collect::<Vec<_>>(),
        vec![(2, "MEM-PIN-COHERENT".to_string())]
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
