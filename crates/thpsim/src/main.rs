//! The `thpsim` command: a thin layer over the `thpsim` library.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::process::ExitCode;
use thpsim::run::{run, RunOptions};
use thpsim::{bundled, explore, output};
use thpsim_model::fixes::Fix;

#[derive(Parser)]
#[command(
    name = "thpsim",
    version,
    about = "An executable model of the Linux 5.8 huge-page memory manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum GeometryArg {
    #[value(name = "x86_64")]
    X86_64,
    Tiny,
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    /// Probabilistic concurrency testing (a bug depth: --depth).
    Pct,
    /// A uniformly random choice at every decision.
    Random,
    /// Every schedule with at most --preemptions preemptions, less those
    /// equivalent to one already run: a complete search of that bound.
    Bounded,
    /// Retired: it only varied the last few decisions (use `bounded`).
    #[value(hide = true)]
    Dfs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario on the model (one interleaving). Exit 0: everything
    /// holds; 1: a check failed; 2: invalid input.
    Run {
        /// A scenario file, or the name of a bundled scenario (`thpsim list`).
        file: String,
        /// Print JSON lines (one object per step and per shown page).
        #[arg(long)]
        json: bool,
        /// Revert a seed fix (repeatable; `thpsim fixes` lists them).
        #[arg(long = "revert", value_name = "NAME")]
        revert: Vec<String>,
        /// Override the scenario's geometry.
        #[arg(long, value_enum)]
        geometry: Option<GeometryArg>,
    },
    /// Search the interleavings of the scenario's `together` blocks. Exit 0:
    /// nothing found in the whole search; 1: a failure (printed with its
    /// trace and replay token); 2: invalid input.
    Explore {
        /// A scenario file, or the name of a bundled scenario.
        file: String,
        #[arg(long, value_enum, default_value = "pct")]
        strategy: StrategyArg,
        /// How many interleavings to run (default 10000; with --time alone,
        /// no bound but the time).
        #[arg(long)]
        iterations: Option<usize>,
        /// Stop after this many seconds (alone: search for that long).
        #[arg(long)]
        time: Option<f64>,
        /// PCT's bug depth.
        #[arg(long, default_value_t = 3)]
        depth: usize,
        /// The preemption bound of `--strategy bounded`.
        #[arg(long, default_value_t = 2)]
        preemptions: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run slice I of N (`--shard 0/4`): deterministic, with its own seed.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        #[arg(long = "revert", value_name = "NAME")]
        revert: Vec<String>,
        #[arg(long, value_enum)]
        geometry: Option<GeometryArg>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run the scenario on the model and on the running kernel and compare every
    /// `show`, `expect` and step. Exit 0: they agree (expected divergences
    /// aside); 1: they differ; 2: invalid file, or this machine cannot run it.
    Conform {
        /// A scenario file (not with --generate).
        #[arg(required_unless_present = "generate")]
        file: Option<String>,
        #[arg(long)]
        json: bool,
        /// Instead of a file: generate N scenarios (differential fuzzing) and
        /// compare each; the first that differs is printed with its text.
        #[arg(long, value_name = "N", conflicts_with = "file")]
        generate: Option<u64>,
        /// The first seed of --generate (scenario i uses seed S + i).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Steps per generated scenario.
        #[arg(long, default_value_t = 25)]
        steps: usize,
    },
    /// Replay a failure from its token: the same schedule, failure and trace.
    Replay {
        file: String,
        token: String,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks (figures for docs/PERFORMANCE.md). `races`: interleavings per
    /// second with each fix, time to the first failure with it reverted.
    Bench {
        #[arg(value_parser = ["races"])]
        what: String,
        /// Seeds per strategy for the time to the first failure.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Interleavings of the clean search.
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
        /// Give up on a seed after this many interleavings.
        #[arg(long, default_value_t = 100_000)]
        max_iterations: usize,
    },
    /// List the bundled scenarios.
    List,
    /// List the seed fixes that `--revert` can switch off.
    Fixes,
    /// List where the model departs from Linux 5.8 on purpose (the
    /// `DIVERGENCE:` marks of its sources).
    Divergences {
        /// As the Markdown table of docs/ARCHITECTURE.md.
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
}

fn load(file: &str) -> Result<(String, String), String> {
    match std::fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(|s| (file.to_string(), s))
            .map_err(|_| format!("{file}: not valid UTF-8")),
        Err(e) => match bundled::find(file) {
            Some(src) => Ok((
                format!("scenarios/{}.thp", file.trim_end_matches(".thp")),
                src.to_string(),
            )),
            None => Err(format!(
                "{file}: {e} (and no bundled scenario has that name; see `thpsim list`)"
            )),
        },
    }
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--shard takes I/N with 0 <= I < N, not `{s}`");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// `thpsim conform --generate N --seed S`: generated scenarios on the model and
/// the running kernel; stops at the first that differs and prints it.
fn conform_generated(n: u64, seed: u64, steps: usize, json: bool) -> ExitCode {
    if let Err(e) = thpsim_live::environment() {
        eprintln!("error: cannot conform here: {e}");
        return ExitCode::from(2);
    }
    for s in seed..seed.saturating_add(n) {
        let src = thpsim::generate::generate(s, steps);
        let name = format!("generated-seed-{s}.thp");
        let scn = match thpsim_scenario::parse(&name, &src) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("internal error: seed {s} generated an invalid scenario: {e}\n{src}");
                return ExitCode::from(2);
            }
        };
        match thpsim::conform::conform(&scn) {
            Ok(r) if r.agrees() => {}
            Ok(r) => {
                if json {
                    emit(&format!(
                        "{}\n",
                        serde_json::to_string(&r).unwrap_or_default()
                    ));
                } else {
                    emit(&format!(
                        "seed {s} differs:\n{src}\n{}",
                        thpsim::conform::text(&r)
                    ));
                }
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("error: seed {s}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    emit(&format!(
        "agree: {n} generated scenarios (seeds {seed}..{}, {steps} steps each)\n",
        seed.saturating_add(n)
    ));
    ExitCode::SUCCESS
}

/// Prints to stdout, ignoring a closed pipe (`thpsim run x | head`).
fn emit(s: &str) {
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn parse_reverts(revert: &[String]) -> Result<Vec<Fix>, String> {
    revert
        .iter()
        .map(|r| match Fix::by_name(r) {
            Some(f) if f.revertible() => Ok(f),
            Some(f) => Err(format!("reverting `{}` is not supported yet", f.name())),
            None => Err(format!("unknown fix `{r}`; `thpsim fixes` lists them")),
        })
        .collect()
}

fn geometry_of(g: Option<GeometryArg>) -> Option<thpsim_scenario::Geometry> {
    g.map(|g| match g {
        GeometryArg::X86_64 => thpsim_scenario::Geometry::X86_64,
        GeometryArg::Tiny => thpsim_scenario::Geometry::Tiny,
    })
}

fn parse_file(file: &str) -> Result<(String, String, thpsim_scenario::Scenario), ExitCode> {
    let (name, src) = load(file).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    match thpsim_scenario::parse(&name, &src) {
        Ok(s) => Ok((name, src, s)),
        Err(e) => {
            eprintln!("{:?}", miette::Report::new(e.with_source(&name, &src)));
            Err(ExitCode::from(2))
        }
    }
}

fn invalid(e: thpsim_scenario::ScenarioError, name: &str, src: &str) -> ExitCode {
    eprintln!("{:?}", miette::Report::new(e.with_source(name, src)));
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // A deadlock found while exploring is reported by thpsim; this keeps shuttle
    // from printing its own hint about backtraces.
    if std::env::var_os(shuttle::CAPTURE_BACKTRACE).is_none() {
        std::env::set_var(shuttle::CAPTURE_BACKTRACE, "1");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Explore {
            file,
            strategy,
            iterations,
            time,
            depth,
            preemptions,
            seed,
            shard,
            revert,
            geometry,
            json,
        } => {
            let (name, src, scn) = match parse_file(&file) {
                Ok(x) => x,
                Err(c) => return c,
            };
            let reverts = match parse_reverts(&revert) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let shard = match shard.as_deref().map(parse_shard).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let time = match time.map(std::time::Duration::try_from_secs_f64) {
                None => None,
                Some(Ok(t)) if !t.is_zero() => Some(t),
                Some(_) => {
                    eprintln!(
                        "error: --time must be a positive number of seconds (at most {})",
                        u64::MAX
                    );
                    return ExitCode::from(2);
                }
            };
            if iterations == Some(0) {
                eprintln!("error: --iterations must be at least 1");
                return ExitCode::from(2);
            }
            if depth == 0 {
                eprintln!("error: --depth must be at least 1");
                return ExitCode::from(2);
            }
            if matches!(strategy, StrategyArg::Dfs) {
                eprintln!(
                    "error: --strategy dfs is retired: it only ever varied the last few \
                     decisions, so a clean run said almost nothing; --strategy bounded \
                     --preemptions K searches every schedule of that bound"
                );
                return ExitCode::from(2);
            }
            let bounded = matches!(strategy, StrategyArg::Bounded);
            // --time alone bounds the search by time only; a bounded search
            // ends when it is exhaustive.
            let iterations = match (iterations, time) {
                (Some(n), _) => n,
                (None, Some(_)) => usize::MAX,
                (None, None) if bounded => usize::MAX,
                (None, None) => explore::ExploreOptions::default().iterations,
            };
            let bar = (!json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
                let bounded = iterations != usize::MAX;
                let b = if bounded {
                    indicatif::ProgressBar::new(iterations as u64)
                } else {
                    indicatif::ProgressBar::new_spinner()
                };
                let template = if bounded {
                    "{spinner} {pos}/{len} interleavings {per_sec} [{elapsed_precise}]"
                } else {
                    "{spinner} {pos} interleavings {per_sec} [{elapsed_precise}]"
                };
                b.set_style(
                    indicatif::ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            let progress = bar.clone().map(|b| {
                std::sync::Arc::new(move |n: usize| {
                    if n.is_multiple_of(64) {
                        b.set_position(n as u64)
                    }
                }) as std::sync::Arc<dyn Fn(usize) + Send + Sync>
            });
            let opts = explore::ExploreOptions {
                run: RunOptions {
                    geometry: geometry_of(geometry),
                    reverts,
                },
                strategy: match strategy {
                    StrategyArg::Pct => explore::Strategy::Pct,
                    StrategyArg::Random => explore::Strategy::Random,
                    StrategyArg::Bounded => explore::Strategy::Bounded { preemptions },
                    StrategyArg::Dfs => explore::Strategy::Dfs,
                },
                iterations,
                time,
                depth,
                seed,
                shard,
                progress,
            };
            let result = explore::explore(&scn, &opts);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match result {
                Err(e) => invalid(e, &name, &src),
                Ok(r) => {
                    if json {
                        emit(&format!(
                            "{}\n",
                            serde_json::to_string(&r).unwrap_or_default()
                        ));
                    } else {
                        emit(&output::explore_text(&r));
                    }
                    if r.found.is_some() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
            }
        }
        Command::Conform {
            file: None,
            generate: Some(n),
            seed,
            steps,
            json,
        } => conform_generated(n, seed, steps, json),
        Command::Conform { file, json, .. } => {
            let Some(file) = file else {
                eprintln!("error: conform needs a FILE or --generate N");
                return ExitCode::from(2);
            };
            let (name, src, scn) = match parse_file(&file) {
                Ok(x) => x,
                Err(c) => return c,
            };
            match thpsim::conform::conform(&scn) {
                Err(thpsim::conform::ConformError::Invalid(e)) => invalid(e, &name, &src),
                Err(thpsim::conform::ConformError::Environment(why)) => {
                    eprintln!("error: cannot conform {name} here: {why}");
                    ExitCode::from(2)
                }
                Err(e @ thpsim::conform::ConformError::Interference { .. }) => {
                    eprintln!("error: cannot conform {name} now: {e}");
                    ExitCode::from(2)
                }
                Ok(r) => {
                    if json {
                        emit(&format!(
                            "{}\n",
                            serde_json::to_string(&r).unwrap_or_default()
                        ));
                    } else {
                        emit(&thpsim::conform::text(&r));
                    }
                    if r.agrees() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
            }
        }
        Command::Replay { file, token, json } => {
            let (name, src, scn) = match parse_file(&file) {
                Ok(x) => x,
                Err(c) => return c,
            };
            match explore::replay(&scn, &token) {
                Err(e) => invalid(e, &name, &src),
                Ok(Err(e)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
                Ok(Ok(found)) => {
                    if json {
                        emit(&format!(
                            "{}\n",
                            serde_json::to_string(&found).unwrap_or_default()
                        ));
                    } else {
                        emit(&output::found_text(&found));
                    }
                    if found.report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
            }
        }
        Command::Bench {
            what: _,
            seeds,
            iterations,
            max_iterations,
        } => {
            emit(&thpsim::bench::races(seeds, iterations, max_iterations));
            ExitCode::SUCCESS
        }
        Command::List => {
            for (name, src) in bundled::BUNDLED {
                emit(&format!("{name:<36} {}\n", bundled::describe(src)));
            }
            ExitCode::SUCCESS
        }
        Command::Divergences { markdown, json } => {
            let list = thpsim::divergences::list();
            emit(&if json {
                format!("{}\n", serde_json::to_string(&list).unwrap_or_default())
            } else if markdown {
                thpsim::divergences::markdown(&list)
            } else {
                thpsim::divergences::text(&list)
            });
            ExitCode::SUCCESS
        }
        Command::Fixes => {
            for f in Fix::ALL {
                let state = if f.revertible() {
                    ""
                } else {
                    "  (revert: not supported yet)"
                };
                emit(&format!(
                    "{:<28} seed {:03}  {}  [{}]{state}\n",
                    f.name(),
                    f.seed(),
                    f.title(),
                    f.commit()
                ));
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            file,
            json,
            revert,
            geometry,
        } => {
            let (name, src) = match load(&file) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut opts = RunOptions {
                geometry: geometry.map(|g| match g {
                    GeometryArg::X86_64 => thpsim_scenario::Geometry::X86_64,
                    GeometryArg::Tiny => thpsim_scenario::Geometry::Tiny,
                }),
                reverts: Vec::new(),
            };
            for r in &revert {
                match Fix::by_name(r) {
                    Some(f) if f.revertible() => opts.reverts.push(f),
                    Some(f) => {
                        eprintln!("error: reverting `{}` is not supported yet", f.name());
                        return ExitCode::from(2);
                    }
                    None => {
                        eprintln!("error: unknown fix `{r}`; `thpsim fixes` lists them");
                        return ExitCode::from(2);
                    }
                }
            }
            let result = thpsim_scenario::parse(&name, &src).and_then(|scn| run(&scn, &opts));
            match result {
                Ok(report) => {
                    if json {
                        emit(&output::json(&report));
                    } else {
                        emit(&output::text(&report));
                    }
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    let e = e.with_source(&name, &src);
                    eprintln!("{:?}", miette::Report::new(e));
                    ExitCode::from(2)
                }
            }
        }
    }
}
