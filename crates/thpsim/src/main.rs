//! The `thpsim` command: a thin layer over the `thpsim` library.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::process::ExitCode;
use thpsim::run::{run, RunOptions};
use thpsim::{bundled, output};
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
    /// List the bundled scenarios.
    List,
    /// List the seed fixes that `--revert` can switch off.
    Fixes,
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

/// Prints to stdout, ignoring a closed pipe (`thpsim run x | head`).
fn emit(s: &str) {
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for (name, src) in bundled::BUNDLED {
                emit(&format!("{name:<36} {}\n", bundled::describe(src)));
            }
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
