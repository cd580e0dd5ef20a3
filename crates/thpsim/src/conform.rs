//! `thpsim conform`: the same scenario on the model and on the running kernel,
//! compared observable by observable.
//!
//! Observables are what both sides report per line: a step's outcome and the
//! byte a `read` returned; an `expect`'s finding; each page of a `show` (kind,
//! label, mapcount, first byte). Where Linux 5.8 and the running kernel differ
//! by design, the scenario marks the line with a trailing comment
//! `# diverges: REASON`; a difference there is reported as an expected
//! divergence, not hidden. docs/CONFORMANCE.md lists the known ones.

use crate::run::{run, Record, RunOptions};
use serde::Serialize;
use std::collections::BTreeMap;
use thpsim_live::{LiveError, LiveRecord};
use thpsim_scenario::{Scenario, ScenarioError};

/// Why conform could not compare.
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    /// The file is invalid (exit 2).
    #[error(transparent)]
    Invalid(#[from] ScenarioError),
    /// The machine or kernel cannot run this scenario live (exit 2).
    #[error("{0}")]
    Environment(String),
    /// Background work (khugepaged, reclaim, compaction) changed the live
    /// run in every attempt: nothing was compared (exit 2).
    #[error(
        "background work interfered with the live run in each of {attempts} attempts, so \
         nothing was compared: {}",
        what.join("; ")
    )]
    Interference { attempts: u32, what: Vec<String> },
}

/// Live runs tried before giving up on interference.
pub const LIVE_ATTEMPTS: u32 = 3;

/// One observable on both sides.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub line: usize,
    /// What is observed (`read A[0]`, `show P A page 3`, ...).
    pub what: String,
    pub model: String,
    pub live: String,
    pub agree: bool,
    /// The reason, if the line is marked as an expected divergence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_divergence: Option<String>,
}

/// The comparison.
#[derive(Clone, Debug, Serialize)]
pub struct ConformReport {
    pub scenario: String,
    pub kernel: String,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
}

impl ConformReport {
    /// Differences not marked as expected.
    pub fn unexpected(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| !r.agree && r.expected_divergence.is_none())
    }
    pub fn agrees(&self) -> bool {
        self.unexpected().next().is_none()
    }
}

/// The `# diverges: REASON` marks of a source, by line.
pub fn divergence_marks(src: &str) -> BTreeMap<usize, String> {
    src.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            l.split_once("# diverges:")
                .map(|(_, r)| (i + 1, r.trim().to_string()))
        })
        .collect()
}

/// Frame labels renumbered by first appearance within each `show` line: which
/// pages share a frame is comparable between two kernels, the frame's global
/// number is not (it depends on which freed frame an allocator hands out next).
#[derive(Default)]
struct LocalLabels(BTreeMap<usize, BTreeMap<String, String>>);

impl LocalLabels {
    fn get(&mut self, line: usize, label: Option<&str>) -> Option<String> {
        let m = self.0.entry(line).or_default();
        let n = m.len() + 1;
        label.map(|l| {
            m.entry(l.to_string())
                .or_insert_with(|| format!("#{n}"))
                .clone()
        })
    }
}

/// `expect ... same|other ...`: only the verdict compares (see LocalLabels).
fn expect_obs(text: &str, ok: bool, found: &str) -> String {
    if text.contains(" same ") || text.contains(" other ") {
        if ok {
            "holds".to_string()
        } else {
            "does not hold".to_string()
        }
    } else {
        found.to_string()
    }
}

/// Observables keyed by (line, index within the line).
type Observables = BTreeMap<(usize, usize), (String, String)>;

fn push(
    out: &mut Observables,
    n: &mut BTreeMap<usize, usize>,
    line: usize,
    what: String,
    obs: String,
) {
    let i = n.entry(line).or_default();
    out.insert((line, *i), (what, obs));
    *i += 1;
}

fn model_observables(records: &[Record]) -> Observables {
    let (mut out, mut n, mut labels) = (BTreeMap::new(), BTreeMap::new(), LocalLabels::default());
    for r in records {
        match r {
            Record::Step {
                line,
                text,
                outcome,
                value,
                ..
            } => push(
                &mut out,
                &mut n,
                *line,
                text.clone(),
                step_obs(outcome.keyword(), *value),
            ),
            Record::Expect {
                line,
                text,
                found,
                ok,
            } => push(
                &mut out,
                &mut n,
                *line,
                text.clone(),
                expect_obs(text, *ok, found),
            ),
            Record::Page {
                line,
                process,
                region,
                offset,
                kind,
                page,
                mapcount,
                value,
                ..
            } => {
                let label = labels.get(*line, page.as_deref());
                let obs = page_obs(kind.keyword(), label.as_deref(), *mapcount, *value);
                push(
                    &mut out,
                    &mut n,
                    *line,
                    format!("show {process} {region} page {offset}"),
                    obs,
                )
            }
            Record::Show { .. } | Record::Violation { .. } => {}
        }
    }
    out
}

fn live_observables(records: &[LiveRecord]) -> Observables {
    let (mut out, mut n, mut labels) = (BTreeMap::new(), BTreeMap::new(), LocalLabels::default());
    for r in records {
        match r {
            LiveRecord::Step {
                line,
                text,
                outcome,
                value,
            } => push(
                &mut out,
                &mut n,
                *line,
                text.clone(),
                step_obs(outcome.keyword(), *value),
            ),
            LiveRecord::Expect {
                line,
                text,
                found,
                ok,
            } => push(
                &mut out,
                &mut n,
                *line,
                text.clone(),
                expect_obs(text, *ok, found),
            ),
            LiveRecord::Page {
                line,
                process,
                region,
                offset,
                kind,
                page,
                mapcount,
                value,
                ..
            } => {
                let label = labels.get(*line, page.as_deref());
                let obs = page_obs(kind, label.as_deref(), *mapcount, *value);
                push(
                    &mut out,
                    &mut n,
                    *line,
                    format!("show {process} {region} page {offset}"),
                    obs,
                )
            }
        }
    }
    out
}

fn step_obs(outcome: &str, value: Option<u8>) -> String {
    match value {
        Some(v) => format!("{outcome} (read {v:#04x})"),
        None => outcome.to_string(),
    }
}

fn page_obs(kind: &str, label: Option<&str>, mapcount: i64, value: u8) -> String {
    format!(
        "{kind} {} map={mapcount} val={value:#04x}",
        label.unwrap_or("-")
    )
}

/// Runs the scenario on the model (x86_64) and on the running kernel and
/// compares them.
pub fn conform(scn: &Scenario) -> Result<ConformReport, ConformError> {
    if scn
        .header
        .geometry
        .as_ref()
        .is_some_and(|g| g.value == thpsim_scenario::Geometry::Tiny)
    {
        return Err(ConformError::Environment(
            "the running kernel has the x86_64 geometry; this scenario asks for `geometry tiny`"
                .into(),
        ));
    }
    if !scn.header.reverts.is_empty() {
        return Err(ConformError::Environment(
            "a scenario that reverts a fix describes a kernel that is not running here".into(),
        ));
    }
    let model = run(
        scn,
        &RunOptions {
            geometry: Some(thpsim_scenario::Geometry::X86_64),
            reverts: Vec::new(),
            ..RunOptions::default()
        },
    )?;
    thpsim_live::environment().map_err(|e| ConformError::Environment(e.to_string()))?;
    let mut attempt = 0;
    let live = loop {
        attempt += 1;
        let live = thpsim_live::run_live(scn).map_err(|e| match e {
            LiveError::Invalid { line, message } => {
                ConformError::Environment(format!("line {line}: {message}"))
            }
            other => ConformError::Environment(other.to_string()),
        })?;
        if live.interference.is_empty() {
            break live;
        }
        if attempt == LIVE_ATTEMPTS {
            return Err(ConformError::Interference {
                attempts: attempt,
                what: live.interference,
            });
        }
    };
    let mut notes = live.notes;
    if attempt > 1 {
        notes.push(format!(
            "background work interfered with {} earlier live run(s); this one ran undisturbed",
            attempt - 1
        ));
    }
    let marks = divergence_marks(&scn.source);
    let m = model_observables(&model.records);
    let l = live_observables(&live.records);
    let mut keys: Vec<_> = m.keys().chain(l.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    let rows = keys
        .into_iter()
        .map(|k| {
            let (mw, mo) = m
                .get(&k)
                .cloned()
                .unwrap_or_else(|| (String::new(), "(not reached)".into()));
            let (lw, lo) = l
                .get(&k)
                .cloned()
                .unwrap_or_else(|| (String::new(), "(not reached)".into()));
            Row {
                line: k.0,
                what: if mw.is_empty() { lw } else { mw },
                agree: mo == lo,
                model: mo,
                live: lo,
                expected_divergence: marks.get(&k.0).cloned(),
            }
        })
        .collect();
    Ok(ConformReport {
        scenario: scn.name.clone(),
        kernel: live.kernel,
        notes,
        rows,
    })
}

/// The text rendering: the differences side by side, then a verdict.
pub fn text(r: &ConformReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "thpsim conform {} (model: Linux 5.8; live: Linux {})",
        r.scenario, r.kernel
    );
    let diffs: Vec<&Row> = r.rows.iter().filter(|x| !x.agree).collect();
    if !diffs.is_empty() {
        let _ = writeln!(
            out,
            "{:>4}  {:<34} {:<32} {:<32} ",
            "line", "observable", "model (5.8)", "live"
        );
        for d in &diffs {
            let tag = match &d.expected_divergence {
                Some(reason) => format!("expected divergence: {reason}"),
                None => "DIFFERS".to_string(),
            };
            let _ = writeln!(
                out,
                "{:>4}  {:<34} {:<32} {:<32} {tag}",
                d.line, d.what, d.model, d.live
            );
        }
    }
    let n_expected = diffs
        .iter()
        .filter(|d| d.expected_divergence.is_some())
        .count();
    let n_unexpected = diffs.len() - n_expected;
    if n_unexpected == 0 {
        let _ = writeln!(
            out,
            "agree: {} observables compared, {} expected divergence(s)",
            r.rows.len(),
            n_expected
        );
    } else {
        let _ = writeln!(
            out,
            "DIFFER: {n_unexpected} of {} observables differ ({} expected divergence(s))",
            r.rows.len(),
            n_expected
        );
    }
    out
}
