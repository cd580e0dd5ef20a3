//! The generator's scenarios under `kernel 3.16`: the 3.16 profile runs them
//! with every check on (the audit's 3.16 rules, the memory oracle), on both
//! geometries, and nothing fails or oopses. The generator knows nothing of
//! 3.16's design: the run is the test (no prediction is compared).

use thpsim::run::{run, RunOptions};

#[test]
fn generated_scenarios_hold_under_kernel_316() {
    let mut failed = Vec::new();
    for seed in 0..std::env::var("FUZZ316_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120u64)
    {
        // 3.16 has no deferred split queue: those steps are left out.
        let body: String = thpsim::generate::generate(seed, 40)
            .lines()
            .filter(|l| !l.contains("deferred-split"))
            .map(|l| format!("{l}\n"))
            .collect();
        let src = format!("kernel 3.16\n{body}");
        let scn = thpsim_scenario::parse("gen316.thp", &src)
            .unwrap_or_else(|e| panic!("seed {seed}: {e:?}\n{src}"));
        for geometry in [
            thpsim_scenario::Geometry::X86_64,
            thpsim_scenario::Geometry::Tiny,
        ] {
            let opts = RunOptions {
                geometry: Some(geometry),
                reverts: Vec::new(),
                ..RunOptions::default()
            };
            let report = run(&scn, &opts).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
            if !report.passed() {
                failed.push(format!(
                    "seed {seed} ({geometry:?}): {:?}",
                    report.failures().collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
