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
