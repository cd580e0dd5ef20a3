//! Generated scenarios (`thpsim::generate`, issue 4's differential fuzzing):
//! a bounded, seeded number run on the model on both geometries, and a
//! smaller seeded number compared with the running kernel (`conform`) when
//! asked (`THPSIM_LIVE=1`) and this machine can run scenarios live (root,
//! Linux, THP), skipped with the reason otherwise.

use thpsim::conform::{conform, ConformError};
use thpsim::generate::{generate, generate_with_swap};
use thpsim::run::{run, RunOptions};
use thpsim_scenario::Geometry;

/// Runs `seeds` on the model on both geometries, on every CPU; the failures.
fn model_failures(seeds: std::ops::Range<u64>, steps: usize) -> Vec<String> {
    let seeds: Vec<u64> = seeds.collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let src = generate(seed, steps);
                let scn = match thpsim_scenario::parse(&format!("generated-{seed}"), &src) {
                    Ok(scn) => scn,
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("seed {seed}: does not parse: {e}\n{src}"));
                        continue;
                    }
                };
                for geometry in [Geometry::X86_64, Geometry::Tiny] {
                    let opts = RunOptions {
                        geometry: Some(geometry),
                        reverts: vec![],
                        ..RunOptions::default()
                    };
                    let failure = match run(&scn, &opts) {
                        Ok(report) if report.passed() => continue,
                        Ok(report) => thpsim::output::text(&report),
                        Err(e) => format!("invalid: {e}"),
                    };
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("seed {seed} on {geometry:?}:\n{failure}\n{src}"));
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

#[test]
fn generated_scenarios_run_on_the_model() {
    let failures = model_failures(1000..1100, 40);
    assert!(
        failures.is_empty(),
        "{} generated scenario(s) failed on the model:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn generated_scenarios_agree_with_the_running_kernel() {
    if let Err(e) = thpsim_live::live_tests_enabled() {
        eprintln!("skipped: {e}");
        return;
    }
    let mut failures = Vec::new();
    // Ten plain seeds, then ten with swap (MADV_PAGEOUT steps on a swap
    // device the live runner sets up).
    for seed in 0..20 {
        let src = if seed < 10 {
            generate(seed, 25)
        } else {
            generate_with_swap(seed, 25)
        };
        let name = format!("generated-{seed}");
        let scn = thpsim_scenario::parse(&name, &src)
            .unwrap_or_else(|e| panic!("seed {seed}: does not parse: {e}\n{src}"));
        match conform(&scn) {
            Ok(r) if r.agrees() => {}
            Ok(r) => failures.push(format!("seed {seed}:\n{}{src}", thpsim::conform::text(&r))),
            Err(ConformError::Environment(why)) => {
                eprintln!("skipped: {why}");
                return;
            }
            Err(e @ ConformError::Interference { .. }) => {
                failures.push(format!("seed {seed}: {e}\n{src}"))
            }
            Err(ConformError::Invalid(e)) => {
                failures.push(format!("seed {seed}: invalid: {e}\n{src}"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} generated scenario(s) differ from the running kernel:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
