//! Rendering a run: text for people (each step and its outcome; `show` as a
//! compact per-page table with runs of equal pages folded into one line, like
//! `0-511 #1 thp-pmd map=2`), JSON lines for programs.

use crate::run::{Record, RunReport};
use std::fmt::Write;

fn outcome_word(o: thpsim_scenario::Outcome) -> &'static str {
    o.keyword()
}

/// The text rendering.
pub fn text(report: &RunReport) -> String {
    let mut out = String::new();
    let reverted = if report.reverted.is_empty() {
        String::new()
    } else {
        format!(", reverted: {}", report.reverted.join(", "))
    };
    let _ = writeln!(
        out,
        "thpsim run {} (geometry {}, engine {}{})",
        report.scenario, report.geometry, report.engine, reverted
    );
    let mut i = 0;
    let recs = &report.records;
    while i < recs.len() {
        match &recs[i] {
            Record::Step {
                line,
                text,
                outcome,
                expected,
                value,
                ok,
                detail,
                note,
                cpu,
            } => {
                let mut status = if *ok {
                    outcome_word(*outcome).to_string()
                } else {
                    format!("FAIL: {}", outcome_word(*outcome))
                };
                if !ok && outcome != expected {
                    status = format!(
                        "FAIL: {} (expected {})",
                        outcome_word(*outcome),
                        outcome_word(*expected)
                    );
                }
                if let Some(v) = value {
                    let _ = write!(status, " (read {v:#04x})");
                }
                if let Some(d) = detail {
                    let _ = write!(status, "{}{d}", if *ok { " " } else { ": " });
                }
                if let Some(n) = note {
                    let _ = write!(status, " ({n})");
                }
                let cpu = if *cpu > 0 {
                    format!("[CPU{cpu}] ")
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{line:>4}  {:<44} {status}", format!("{cpu}{text}"));
                i += 1;
            }
            Record::Expect {
                line,
                text,
                ok,
                found,
            } => {
                let status = if *ok {
                    "ok".to_string()
                } else {
                    format!("FAIL: found {found}")
                };
                let _ = writeln!(out, "{line:>4}  {text:<44} {status}");
                i += 1;
            }
            Record::Show { line, text } => {
                let _ = writeln!(out, "{line:>4}  {text}");
                i += 1;
            }
            Record::Page { line, .. } => {
                let mut j = i;
                while j < recs.len() {
                    let Record::Page { line: l2, .. } = &recs[j] else {
                        break;
                    };
                    if l2 != line {
                        break;
                    }
                    j += 1;
                }
                fold_pages(&recs[i..j], &mut out);
                i = j;
            }
            Record::Violation { line, violation } => {
                let _ = writeln!(
                    out,
                    "{line:>4}  VIOLATION {} ({:?}): {}",
                    violation.id, violation.kind, violation.message
                );
                if !violation.backtrace.is_empty() {
                    let cpu = violation
                        .cpu
                        .map_or(String::new(), |c| format!("CPU{} ", c.0));
                    let _ = writeln!(out, "        {cpu}in {}", violation.backtrace.join(" <- "));
                }
                i += 1;
            }
        }
    }
    let failures: Vec<usize> = report.failures().map(record_line).collect();
    if failures.is_empty() {
        let _ = writeln!(out, "ok: every step, expectation and check holds");
    } else {
        let lines: Vec<String> = failures.iter().map(|l| l.to_string()).collect();
        let _ = writeln!(
            out,
            "FAILED: {} check(s) failed (line {})",
            failures.len(),
            lines.join(", ")
        );
    }
    out
}

fn record_line(r: &Record) -> usize {
    match r {
        Record::Step { line, .. }
        | Record::Expect { line, .. }
        | Record::Show { line, .. }
        | Record::Page { line, .. }
        | Record::Violation { line, .. } => *line,
    }
}

/// Folds runs of equal pages: same kind, label, mapcount, value and node.
fn fold_pages(pages: &[Record], out: &mut String) {
    let key = |r: &Record| match r {
        Record::Page {
            kind,
            page,
            mapcount,
            value,
            node,
            ..
        } => Some((*kind, page.clone(), *mapcount, *value, *node)),
        _ => None,
    };
    let off = |r: &Record| {
        if let Record::Page { offset, .. } = r {
            *offset
        } else {
            0
        }
    };
    let mut i = 0;
    while i < pages.len() {
        let k = key(&pages[i]);
        let mut j = i + 1;
        while j < pages.len() && key(&pages[j]) == k && off(&pages[j]) == off(&pages[j - 1]) + 1 {
            j += 1;
        }
        if let Some((kind, page, mapcount, value, node)) = k {
            let range = if j - i > 1 {
                format!("{}-{}", off(&pages[i]), off(&pages[j - 1]))
            } else {
                off(&pages[i]).to_string()
            };
            let label = page.unwrap_or_else(|| "-".into());
            let node = node.map_or(String::new(), |n| {
                if n > 0 {
                    format!(" node={n}")
                } else {
                    String::new()
                }
            });
            let _ = writeln!(
                out,
                "        {range:<10} {label:<5} {:<8} map={mapcount} val={value:#04x}{node}",
                kind.keyword()
            );
        }
        i = j;
    }
}

/// JSON lines: one object per record, then a summary.
pub fn json(report: &RunReport) -> String {
    let mut out = String::new();
    for r in &report.records {
        let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
    }
    let summary = serde_json::json!({
        "type": "summary",
        "scenario": report.scenario,
        "geometry": report.geometry,
        "engine": report.engine,
        "reverted": report.reverted,
        "passed": report.passed(),
        "failures": report.failures().count(),
    });
    let _ = writeln!(out, "{summary}");
    out
}

/// The text rendering of an exploration.
pub fn explore_text(r: &crate::explore::ExploreReport) -> String {
    let mut out = String::new();
    let reverted = if r.reverted.is_empty() {
        String::new()
    } else {
        format!(", reverted: {}", r.reverted.join(", "))
    };
    let shard = r
        .shard
        .map_or(String::new(), |(i, n)| format!(", shard {i}/{n}"));
    let params = match r.strategy {
        crate::explore::Strategy::Bounded { preemptions }
        | crate::explore::Strategy::BoundedUnreduced { preemptions } => {
            format!("preemptions {preemptions}")
        }
        crate::explore::Strategy::Pct => format!("seed {}, depth {}", r.seed, r.depth),
        crate::explore::Strategy::Random => format!("seed {}", r.seed),
    };
    let _ = writeln!(
        out,
        "thpsim explore {} (strategy {}, {params}{shard}{reverted})",
        r.scenario,
        r.strategy.name(),
    );
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    if let Some(f) = &r.found {
        out.push_str(&found_text(f));
        if let Some(i) = f.index {
            let _ = writeln!(
                out,
                "found by execution index {i} of seed {} (after {} executions)",
                r.seed, f.at_execution
            );
        }
        out.push('\n');
    }
    for b in &r.coverage {
        out.push_str(&crate::explore::coverage::text(b));
    }
    if let (Some(b), None) = (&r.bounded, &r.found) {
        let _ = if b.complete {
            writeln!(
                out,
                "ok: exhaustive up to {} preemption{}: {} schedules, {} pruned, no failure ({:.2}s)",
                b.preemptions,
                if b.preemptions == 1 { "" } else { "s" },
                b.schedules,
                b.pruned,
                r.elapsed_ms as f64 / 1000.0
            )
        } else {
            writeln!(
                out,
                "ok: no failure, but NOT exhaustive: the search up to {} preemptions stopped \
                 after {} schedules ({} pruned) in {:.2}s, before the bound was covered",
                b.preemptions,
                b.schedules,
                b.pruned,
                r.elapsed_ms as f64 / 1000.0
            )
        };
        return out;
    }
    let verdict = if r.found.is_some() {
        "FAILED"
    } else {
        "ok: no failure"
    };
    let jobs = if r.jobs > 1 {
        format!(" on {} jobs", r.jobs)
    } else {
        String::new()
    };
    let how = match r.strategy {
        crate::explore::Strategy::Bounded { preemptions }
        | crate::explore::Strategy::BoundedUnreduced { preemptions } => format!(
            "strategy {} up to {preemptions} preemptions",
            r.strategy.name()
        ),
        _ => format!("strategy {} and seed {}", r.strategy.name(), r.seed),
    };
    let _ = writeln!(
        out,
        "{verdict}: {} interleavings run ({} distinct) with {how} in {:.2}s{jobs}",
        r.executions,
        r.distinct,
        r.elapsed_ms as f64 / 1000.0
    );
    out
}

/// A failure: what failed, the interleaving as CPU columns, the token.
pub fn found_text(f: &crate::explore::Found) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "FAILURE: {}", f.what);
    let _ = writeln!(
        out,
        "\ninterleaving ({} context switches, shrunk from {}):\n",
        f.switches_shrunk, f.switches_found
    );
    out.push_str(&crate::explore::render_columns(&f.trace, 5, 44));
    for r in f.report.failures() {
        if let Record::Violation { violation, .. } = r {
            let cpu = violation
                .cpu
                .map_or(String::new(), |c| format!("CPU{} ", c.0));
            let _ = writeln!(out, "\n{cpu}{}: {}", violation.id, violation.message);
            if !violation.backtrace.is_empty() {
                let _ = writeln!(out, "  in {}", violation.backtrace.join(" <- "));
            }
        }
    }
    let _ = writeln!(
        out,
        "\nreplay: thpsim replay {} {}",
        f.report.scenario, f.token
    );
    out
}
