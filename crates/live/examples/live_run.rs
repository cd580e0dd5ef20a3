//! Runs one scenario on the live kernel and prints its records as JSON lines.
//!
//! `cargo run -p thpsim-live --example live_run -- FILE.thp` (as root).

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: live_run FILE.thp");
        return ExitCode::from(2);
    };
    let src = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let scn = match thpsim_scenario::parse(&path, &src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match thpsim_live::run_live(&scn) {
        Ok(report) => {
            println!("# kernel {}", report.kernel);
            for n in &report.notes {
                println!("# {n}");
            }
            for i in &report.interference {
                println!("# interference: {i}");
            }
            let mut failed = false;
            for r in &report.records {
                if let thpsim_live::LiveRecord::Expect { ok: false, .. } = r {
                    failed = true;
                }
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
