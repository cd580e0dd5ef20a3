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
    about = "An executable model of the Linux 5.8 huge-page memory manager (and of the pre-4.5 THP design, `kernel 3.16`)"
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
        /// Compare every mapped page with the memory oracle at every
        /// quiescent point (by default only the pages whose content,
        /// translation or frame changed; the end of the run is always a full
        /// sweep).
        #[arg(long)]
        full_checks: bool,
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
        /// Run shard I of N (`--shard 0/4`): the execution indices I mod N of
        /// the search, disjoint from the other shards. Without it, taken from
        /// JOB_COMPLETION_INDEX + THPSIM_SHARDS (Kubernetes Indexed Job) or
        /// SLURM_ARRAY_TASK_ID + SLURM_ARRAY_TASK_COUNT (Slurm job array). A
        /// sharded search prints one JSON shard line (`thpsim merge` reads them).
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// OS threads to split the search among on this machine (default: all
        /// cores). The first failure stops them all.
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// Write the shard line to FILE instead of stdout (stdout then gets the
        /// usual report). Also without a shard: the search is then shard 0/1.
        #[arg(long, value_name = "FILE")]
        output: Option<String>,
        #[arg(long = "revert", value_name = "NAME")]
        revert: Vec<String>,
        #[arg(long, value_enum)]
        geometry: Option<GeometryArg>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Merge the shard lines of a sharded search (files of JSON lines, `-` for
    /// stdin) into one verdict. Exit 0: every shard present and clean; 1: a
    /// shard found a failure; 2: invalid input, lines of different searches, or
    /// shards missing.
    Merge {
        #[arg(required = true, value_name = "FILES")]
        files: Vec<String>,
        /// Print the verdict as one JSON object.
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
        /// With --generate: add a swap device and MADV_PAGEOUT steps of
        /// random mapped ranges.
        #[arg(long, requires = "generate")]
        swap: bool,
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
    /// `kernel`: each workload on the live kernel, through `thpsim run` and
    /// on the raw model, alternately, with the ratios (Linux, root; changes
    /// THP settings under the live runner's lock and puts them back).
    Bench {
        #[arg(value_parser = ["races", "kernel"])]
        what: String,
        /// `kernel`: rounds of each workload (figures are min/median/max).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// `kernel`: only these workloads (comma-separated names).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// `kernel`: JSON lines instead of the Markdown table.
        #[arg(long)]
        json: bool,
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
    /// The live runner's state on this machine (Linux, root).
    Live {
        #[command(subcommand)]
        what: LiveCommand,
    },
    /// List the bundled scenarios.
    List,
    /// List the seed fixes that `--revert` can switch off, and which kernel (5.8, 3.16) has each.
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

#[derive(Subcommand)]
enum LiveCommand {
    /// Put back what a killed live run (`conform`, `bench kernel`) left
    /// behind: its swap device and its THP, khugepaged and hugetlb settings,
    /// from the saved files in /run/thpsim-live (only the knobs and swap
    /// steps a run makes; anything else there is refused and named). Waits
    /// for a run in progress. Exit 0: done, or nothing to do; 2: cannot.
    Restore,
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

/// The shard a batch system gives this process, from its environment (`get`
/// reads a variable): a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` with
/// the count in `THPSIM_SHARDS` (the Job sets it, e.g. to
/// `.spec.completions`), or a Slurm job array's `SLURM_ARRAY_TASK_ID` with
/// `SLURM_ARRAY_TASK_COUNT` (less `SLURM_ARRAY_TASK_MIN`, when set).
/// `Ok(None)`: neither.
fn shard_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<(u64, u64)>, String> {
    let num = |var: &str| -> Result<Option<u64>, String> {
        match get(var) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{var}={v:?} is not a non-negative integer")),
        }
    };
    let k8s = (num("JOB_COMPLETION_INDEX")?, num("THPSIM_SHARDS")?);
    let slurm = (
        num("SLURM_ARRAY_TASK_ID")?,
        num("SLURM_ARRAY_TASK_COUNT")?,
        num("SLURM_ARRAY_TASK_MIN")?,
    );
    let from_k8s = match k8s {
        (None, None) => None,
        (Some(_), None) => {
            return Err(
                "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but THPSIM_SHARDS is \
                not: the Job must set THPSIM_SHARDS to its completion count \
                (.spec.completions)"
                    .to_string(),
            )
        }
        (None, Some(_)) => {
            return Err(
                "THPSIM_SHARDS is set but JOB_COMPLETION_INDEX is not: THPSIM_SHARDS is the \
                shard count of a Kubernetes Indexed Job (use --shard I/N elsewhere)"
                    .to_string(),
            )
        }
        (Some(i), Some(n)) => {
            if n == 0 || i >= n {
                return Err(format!(
                    "JOB_COMPLETION_INDEX={i} with THPSIM_SHARDS={n}: the index must be below \
                    the shard count (set THPSIM_SHARDS to the Job's .spec.completions)"
                ));
            }
            Some((i, n))
        }
    };
    let from_slurm = match slurm {
        (None, _, _) => None,
        (Some(_), None, _) => {
            return Err(
                "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: cannot tell \
                the shard count (use --shard I/N)"
                    .to_string(),
            )
        }
        (Some(id), Some(n), min) => {
            let min = min.unwrap_or(0);
            let i = id.checked_sub(min).ok_or_else(|| {
                format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
            })?;
            if n == 0 || i >= n {
                return Err(format!(
                    "SLURM_ARRAY_TASK_ID={id} (less SLURM_ARRAY_TASK_MIN={min}) is not below \
                    SLURM_ARRAY_TASK_COUNT={n}: the array must be one contiguous range \
                    (--array=0-{})",
                    n.saturating_sub(1)
                ));
            }
            Some((i, n))
        }
    };
    match (from_k8s, from_slurm) {
        (Some(_), Some(_)) => Err(
            "both JOB_COMPLETION_INDEX (Kubernetes) and SLURM_ARRAY_TASK_ID (Slurm) are set: \
             pass --shard I/N"
                .to_string(),
        ),
        (a, b) => Ok(a.or(b)),
    }
}

/// The progress display of a search: schedules run, distinct, rate, and the
/// time left when the search is bounded (`total` executions, `time`).
fn progress_bar(
    total: Option<u64>,
    time: Option<std::time::Duration>,
) -> (
    indicatif::ProgressBar,
    std::sync::Arc<dyn Fn(explore::Progress) + Send + Sync>,
) {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{spinner} {pos}/{len} schedules, {msg} [{wide_bar}]"
    } else {
        "{spinner} {pos} schedules, {msg}"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let start = std::time::Instant::now();
    let b = bar.clone();
    // Jobs report from their threads, not always in order: show only news.
    let shown = std::sync::atomic::AtomicUsize::new(0);
    let update = move |p: explore::Progress| {
        if !(p.executions.is_multiple_of(16) || p.executions < 16)
            || shown.fetch_max(p.executions, std::sync::atomic::Ordering::Relaxed) > p.executions
        {
            return;
        }
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        let rate = p.executions as f64 / secs;
        let by_count = total.map(|n| n.saturating_sub(p.executions as u64) as f64 / rate.max(1e-9));
        let by_time = time.map(|t| (t.as_secs_f64() - secs).max(0.0));
        // A bounded search's tree: the walked fraction is an estimate
        // (`Bounded::progress`), and so is the time left from it.
        let tree = p.bounded_done_ppm.map(|ppm| ppm as f64 / 1e6);
        let by_tree = tree.filter(|&f| f > 0.0).map(|f| secs * (1.0 - f) / f);
        let left = [by_count, by_time, by_tree]
            .into_iter()
            .flatten()
            .reduce(f64::min);
        let left = left.map_or(String::new(), |l| {
            let l = l.round() as u64;
            let about = if by_tree.is_some() { "about " } else { "" };
            format!(
                ", {about}{}:{:02}:{:02} left",
                l / 3600,
                l / 60 % 60,
                l % 60
            )
        });
        let tree = tree.map_or(String::new(), |f| {
            format!(", ~{:.0}% of the tree", f * 100.0)
        });
        b.set_position(p.executions as u64);
        b.set_message(format!("{} distinct, {rate:.0}/s{tree}{left}", p.distinct));
    };
    (bar, std::sync::Arc::new(update))
}

/// Reads a file of shard lines (`-`: stdin).
fn read_shard_file(file: &str) -> Result<Vec<explore::shard::Located>, String> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        s
    } else {
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{file}: not valid UTF-8"))?
    };
    explore::shard::read(if file == "-" { "stdin" } else { file }, &text)
}

/// `thpsim merge FILES...`.
fn merge(files: &[String], json: bool) -> ExitCode {
    if files.iter().filter(|f| f.as_str() == "-").count() > 1 {
        eprintln!("error: `-` (stdin) can be given once");
        return ExitCode::from(2);
    }
    let mut lines = Vec::new();
    for f in files {
        match read_shard_file(f) {
            Ok(mut l) => lines.append(&mut l),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let merged = match explore::shard::merge(&lines) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        for w in &merged.warnings {
            eprintln!("warning: {w}");
        }
        emit(&format!(
            "{}\n",
            serde_json::to_string(&merged).unwrap_or_default()
        ));
    } else {
        emit(&explore::shard::text(&merged));
    }
    ExitCode::from(merged.exit_code())
}

/// `thpsim bench kernel`: the model beside the live kernel.
fn bench_kernel(rounds: usize, only: &[String], json: bool) -> ExitCode {
    if let Err(e) = thpsim_live::environment() {
        eprintln!("error: cannot benchmark against the kernel here: {e}");
        return ExitCode::from(2);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let figs = thpsim::bench::kernel::run(rounds, only, |name| {
        eprintln!("bench kernel: {name} ({rounds} rounds)");
    });
    match figs {
        Ok(figs) if json => {
            for f in &figs {
                let mut v = serde_json::to_value(f).unwrap_or_default();
                v["kernel_release"] = serde_json::Value::from(release.clone());
                emit(&format!("{v}\n"));
            }
            ExitCode::SUCCESS
        }
        Ok(figs) => {
            emit(&thpsim::bench::kernel::table(&figs, &release));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `thpsim conform --generate N --seed S`: generated scenarios on the model and
/// the running kernel; stops at the first that differs and prints it.
fn conform_generated(n: u64, seed: u64, steps: usize, swap: bool, json: bool) -> ExitCode {
    if let Err(e) = thpsim_live::environment() {
        eprintln!("error: cannot conform here: {e}");
        return ExitCode::from(2);
    }
    for s in seed..seed.saturating_add(n) {
        let src = if swap {
            thpsim::generate::generate_with_swap(s, steps)
        } else {
            thpsim::generate::generate(s, steps)
        };
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
        "agree: {n} generated scenarios (seeds {seed}..{}, {steps} steps each{})\n",
        seed.saturating_add(n),
        if swap { ", with swap" } else { "" }
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
            Some(f) => Ok(f),
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
    // A process `thpsim bench kernel` started to run one workload.
    if let Some(code) = thpsim_live::bench::serve_if_asked() {
        return ExitCode::from(code);
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
            jobs,
            output,
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
            let shard = match shard.as_deref() {
                Some(s) => parse_shard(s).map(Some),
                None => shard_from_env(|v| std::env::var(v).ok()),
            };
            let shard = match shard {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let jobs = match jobs {
                Some(0) => {
                    eprintln!("error: --jobs must be at least 1");
                    return ExitCode::from(2);
                }
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
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
            let mut opts = explore::ExploreOptions {
                run: RunOptions {
                    geometry: geometry_of(geometry),
                    reverts,
                    ..RunOptions::default()
                },
                strategy: match strategy {
                    StrategyArg::Pct => explore::Strategy::Pct,
                    StrategyArg::Random => explore::Strategy::Random,
                    // Refused above; `bounded` is what replaced it.
                    StrategyArg::Bounded | StrategyArg::Dfs => {
                        explore::Strategy::Bounded { preemptions }
                    }
                },
                iterations,
                time,
                depth,
                seed,
                shard,
                jobs,
                progress: None,
            };
            if let Err(e) = opts.check() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let bar = (!json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
                let (bar, update) = progress_bar(opts.slice().count(), time);
                opts.progress = Some(update);
                bar
            });
            let result = explore::explore(&scn, &opts);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match result {
                Err(e) => invalid(e, &name, &src),
                Ok(r) => {
                    let line = (shard.is_some() || output.is_some()).then(|| {
                        serde_json::to_string(&explore::shard::line(&scn, &opts, &r))
                            .unwrap_or_default()
                    });
                    let code = if r.found.is_some() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    };
                    match (line, &output) {
                        (Some(line), Some(file)) => {
                            if let Err(e) = std::fs::write(file, format!("{line}\n")) {
                                eprintln!("error: cannot write the shard line to {file}: {e}");
                                return ExitCode::from(2);
                            }
                        }
                        // Sharded, no file: the line is all stdout gets.
                        (Some(line), None) => {
                            emit(&format!("{line}\n"));
                            return code;
                        }
                        (None, _) => {}
                    }
                    if json {
                        emit(&format!(
                            "{}\n",
                            serde_json::to_string(&r).unwrap_or_default()
                        ));
                    } else {
                        emit(&output::explore_text(&r));
                    }
                    code
                }
            }
        }
        Command::Merge { files, json } => merge(&files, json),
        Command::Conform {
            file: None,
            generate: Some(n),
            seed,
            steps,
            swap,
            json,
        } => conform_generated(n, seed, steps, swap, json),
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
            what,
            seeds,
            iterations,
            max_iterations,
            rounds,
            only,
            json,
        } => {
            if what == "kernel" {
                return bench_kernel(rounds, &only, json);
            }
            emit(&thpsim::bench::races(seeds, iterations, max_iterations));
            ExitCode::SUCCESS
        }
        Command::Live {
            what: LiveCommand::Restore,
        } => match thpsim_live::restore_leftovers() {
            Ok(notes) if notes.is_empty() => {
                emit("nothing to restore: no live run left settings or a swap device behind\n");
                ExitCode::SUCCESS
            }
            Ok(notes) => {
                for n in notes {
                    emit(&format!("{n}\n"));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("thpsim live restore: {e}");
                ExitCode::from(2)
            }
        },
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
            emit(&thpsim::fixes_table());
            ExitCode::SUCCESS
        }
        Command::Run {
            file,
            json,
            revert,
            geometry,
            full_checks,
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
                full_checks,
            };
            for r in &revert {
                match Fix::by_name(r) {
                    Some(f) => opts.reverts.push(f),
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
