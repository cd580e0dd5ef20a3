//! thpsim: the library behind the `thpsim` command. It runs scenario files
//! ([`thpsim_scenario`]) on the model ([`thpsim_model`]) and renders reports.
//!
//! - [`run`]: the interpreter and the quiescent-point checks.
//! - [`output`]: the text and JSON renderings of a run.
//! - [`labels`]: physical pages renamed by first appearance.
//! - [`bundled`]: the scenarios shipped in `scenarios/`.
//! - [`divergences`]: the model's `DIVERGENCE:` marks (`thpsim divergences`).

pub mod bench;
pub mod conform;
pub mod divergences;
pub mod explore;
pub mod generate;
pub mod labels;
pub mod output;
pub mod run;

/// The scenarios shipped with thpsim.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

    /// A bundled scenario's source by name (`fork_child_write`, `races/x`).
    pub fn find(name: &str) -> Option<&'static str> {
        let name = name.strip_suffix(".thp").unwrap_or(name);
        let name = name.strip_prefix("scenarios/").unwrap_or(name);
        BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// The first comment line of a scenario (its one-line description).
    pub fn describe(src: &str) -> &str {
        src.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix('#')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("")
    }
}

/// `thpsim fixes`: each seed fix, and which kernel profiles have it (a
/// profile without the fix refuses to revert it).
pub fn fixes_table() -> String {
    use thpsim_scenario::KernelVersion;
    let mut out = String::from("name                         seed  5.8   3.16  title [upstream]\n");
    for f in thpsim_model::fixes::Fix::ALL {
        let has = |k: KernelVersion| {
            if k.has_fix(f.name()) == Some(true) {
                "yes"
            } else {
                "-"
            }
        };
        out.push_str(&format!(
            "{:<28} {:03}   {:<5} {:<5} {}  [{}]\n",
            f.name(),
            f.seed(),
            has(KernelVersion::V5_8),
            has(KernelVersion::V3_16),
            f.title(),
            f.commit()
        ));
    }
    out
}
