//! Shard lines and their merge (`thpsim merge`).
//!
//! A sharded search (`--shard I/N`, or a batch system's array index) writes
//! one JSON line: what search it is a shard of (scenario and its statement
//! hash, build hash, strategy, seed, depth, geometry, reverted fixes, the
//! iterations of the whole search, the shard count), what it ran (executions,
//! elapsed time), the fingerprints of its distinct schedules, its coverage
//! totals, and its failure if it found one. Since shard `i` of `n` runs the
//! execution indices `i mod n` of the same numbered search, the shards of a
//! search are disjoint and their union is the unsharded search: merging adds
//! up the executions and coverage, and the distinct schedules are the union
//! of the fingerprint sets (sorted in the line, so the union is exact).
//!
//! The fingerprints are encoded compactly: sorted, as differences from the
//! previous one, each difference as an unsigned LEB128 varint, the bytes in
//! base64 (RFC 4648, with padding).

use super::coverage::{self, BlockCoverage, BlockInfo, CoverageTotals};
use super::{sched, token, ExploreOptions, ExploreReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use thpsim_scenario::Scenario;

/// The shard line format this build writes and reads.
pub const FORMAT: u32 = 1;

/// The `type` of a shard line.
pub const TYPE: &str = "thpsim-shard";

/// The name of the fingerprint encoding.
pub const ENCODING: &str = "sorted-delta-leb128-base64";

/// The distinct schedules of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprints {
    pub encoding: String,
    pub count: usize,
    pub data: String,
}

impl Fingerprints {
    /// Encodes sorted, distinct fingerprints.
    pub fn encode(sorted: &[u64]) -> Fingerprints {
        let mut bytes = Vec::with_capacity(sorted.len() * 8);
        let mut prev = 0u64;
        for (j, &f) in sorted.iter().enumerate() {
            let mut d = if j == 0 { f } else { f.wrapping_sub(prev) };
            prev = f;
            loop {
                let b = (d & 0x7f) as u8;
                d >>= 7;
                if d == 0 {
                    bytes.push(b);
                    break;
                }
                bytes.push(b | 0x80);
            }
        }
        Fingerprints {
            encoding: ENCODING.to_string(),
            count: sorted.len(),
            data: base64_encode(&bytes),
        }
    }

    /// The fingerprints, sorted; refuses a malformed or unsorted list.
    pub fn decode(&self) -> Result<Vec<u64>, String> {
        if self.encoding != ENCODING {
            return Err(format!(
                "fingerprints in encoding `{}`; this thpsim reads `{ENCODING}`",
                self.encoding
            ));
        }
        let bytes = base64_decode(&self.data)?;
        let mut out = Vec::with_capacity(self.count);
        let (mut cur, mut shift, mut prev) = (0u64, 0u32, 0u64);
        for b in bytes {
            if shift >= 64 || (shift == 63 && b & 0x7e != 0) {
                return Err("fingerprints: a varint longer than 64 bits".to_string());
            }
            cur |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                let f = if out.is_empty() {
                    cur
                } else {
                    if cur == 0 {
                        return Err("fingerprints: not strictly increasing".to_string());
                    }
                    prev.checked_add(cur)
                        .ok_or_else(|| "fingerprints: past 2^64".to_string())?
                };
                out.push(f);
                prev = f;
                cur = 0;
                shift = 0;
            }
        }
        if shift != 0 {
            return Err("fingerprints: the last varint is cut short".to_string());
        }
        if out.len() != self.count {
            return Err(format!(
                "fingerprints: {} listed, the count says {}",
                out.len(),
                self.count
            ));
        }
        Ok(out)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(B64[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let bad = || "fingerprints: the data is not base64".to_string();
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (q, quad) in s.chunks(4).enumerate() {
        let last = q == s.len() / 4 - 1;
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(bad());
        }
        let mut n = 0u32;
        for &b in &quad[..4 - pad] {
            let v = B64.iter().position(|&x| x == b).ok_or_else(bad)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&got[..3 - pad]);
    }
    Ok(out)
}

/// The failure a shard found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardFailure {
    /// What failed (as `explore` prints it).
    pub what: String,
    /// The replay token of the shrunk schedule.
    pub token: String,
    /// The search index of the failing execution.
    pub index: Option<u64>,
}

/// One shard's line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardLine {
    /// Always [`TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// [`FORMAT`].
    pub format: u32,
    pub scenario: String,
    /// `token::scenario_hash` of its source, 8 hex digits.
    pub scenario_hash: String,
    /// `token::CODE_HASH` of the build that ran it, 8 hex digits.
    pub build: String,
    pub strategy: String,
    pub seed: u64,
    pub depth: usize,
    pub geometry: String,
    pub reverted: Vec<String>,
    /// `[i, n]`: shard `i` of `n`.
    pub shard: (u64, u64),
    /// Executions of the whole search (`None`: bounded by time only).
    pub iterations: Option<u64>,
    /// The time bound of this shard's run, if any.
    pub time_ms: Option<u64>,
    /// OS threads the shard ran on.
    pub jobs: usize,
    pub executions: usize,
    pub elapsed_ms: u64,
    /// The number of distinct schedules (the fingerprints' count).
    pub distinct: usize,
    pub fingerprints: Fingerprints,
    /// The scenario's `together` blocks (for the coverage report).
    pub blocks: Vec<BlockInfo>,
    pub coverage: CoverageTotals,
    pub failure: Option<ShardFailure>,
    /// A bounded search's counts (its part of the schedule tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded: Option<super::bounded::BoundedStats>,
}

/// The shard line of a search.
pub fn line(scn: &Scenario, opts: &ExploreOptions, r: &ExploreReport) -> ShardLine {
    ShardLine {
        kind: TYPE.to_string(),
        format: FORMAT,
        scenario: r.scenario.clone(),
        scenario_hash: format!("{:08x}", token::scenario_hash(&scn.source)),
        build: format!("{:08x}", token::CODE_HASH),
        strategy: r.strategy.name().to_string(),
        seed: r.seed,
        depth: r.depth,
        geometry: r.geometry.to_string(),
        reverted: r.reverted.clone(),
        shard: r.shard.unwrap_or((0, 1)),
        iterations: (opts.iterations != usize::MAX).then_some(opts.iterations as u64),
        time_ms: opts
            .time
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        jobs: r.jobs,
        executions: r.executions,
        elapsed_ms: u64::try_from(r.elapsed_ms).unwrap_or(u64::MAX),
        distinct: r.fingerprints.len(),
        fingerprints: Fingerprints::encode(&r.fingerprints),
        blocks: coverage::blocks(scn),
        coverage: r.coverage_totals.clone(),
        failure: r.found.as_ref().map(|f| ShardFailure {
            what: f.what.clone(),
            token: f.token.clone(),
            index: f.index,
        }),
        bounded: r.bounded,
    }
}

/// A shard line and where it was read.
#[derive(Clone, Debug)]
pub struct Located {
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub shard: ShardLine,
    /// The decoded fingerprints.
    pub fingerprints: Vec<u64>,
}

/// Reads the shard lines of one file's text (blank lines are skipped).
/// `Err` names the file and line.
pub fn read(file: &str, text: &str) -> Result<Vec<Located>, String> {
    let mut out = Vec::new();
    for (k, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let at = |e: String| format!("{file} line {}: {e}", k + 1);
        let v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| at(format!("not a JSON line: {e}")))?;
        if v.get("type").and_then(|t| t.as_str()) != Some(TYPE) {
            return Err(at(format!(
                "not a shard line (a shard line has \"type\": \"{TYPE}\"; `thpsim explore \
                 --shard I/N` writes them)"
            )));
        }
        match v.get("format").and_then(|f| f.as_u64()) {
            Some(f) if f == u64::from(FORMAT) => {}
            Some(f) => {
                return Err(at(format!(
                    "a shard line of format {f}; this thpsim reads format {FORMAT}"
                )))
            }
            None => return Err(at("a shard line without a format".to_string())),
        }
        let shard: ShardLine =
            serde_json::from_value(v).map_err(|e| at(format!("malformed shard line: {e}")))?;
        let (i, n) = shard.shard;
        if n == 0 || i >= n {
            return Err(at(format!("shard {i}/{n}: needs 0 <= I < N")));
        }
        let fingerprints = shard.fingerprints.decode().map_err(at)?;
        if fingerprints.len() != shard.distinct {
            return Err(at(format!(
                "{} fingerprints, but \"distinct\" says {}",
                fingerprints.len(),
                shard.distinct
            )));
        }
        out.push(Located {
            file: file.to_string(),
            line: k + 1,
            shard,
            fingerprints,
        });
    }
    Ok(out)
}

/// A failure of the merged search.
#[derive(Clone, Debug, Serialize)]
pub struct MergedFailure {
    pub shard: (u64, u64),
    pub file: String,
    pub line: usize,
    pub what: String,
    pub token: String,
    pub index: Option<u64>,
}

/// The verdict over a set of shard lines.
#[derive(Clone, Debug, Serialize)]
pub struct Merged {
    /// `clean`, `failed` or `incomplete`.
    pub verdict: &'static str,
    pub scenario: String,
    pub scenario_hash: String,
    pub build: String,
    pub strategy: String,
    pub seed: u64,
    pub depth: usize,
    pub geometry: String,
    pub reverted: Vec<String>,
    /// The shard count.
    pub shards: u64,
    /// The shards present, in order.
    pub present: Vec<u64>,
    pub missing: Vec<u64>,
    /// The iterations of the whole search (`None`: time-bounded).
    pub iterations: Option<u64>,
    /// Executions of the present shards.
    pub executions: usize,
    /// Executions the present shards were asked for (`None`: time-bounded).
    pub asked: Option<u64>,
    /// Distinct schedules: the size of the union of the shards' sets.
    pub distinct: usize,
    /// The sum of the shards' times and the longest one.
    pub elapsed_ms_total: u64,
    pub elapsed_ms_max: u64,
    pub failures: Vec<MergedFailure>,
    pub coverage: Vec<BlockCoverage>,
    pub warnings: Vec<String>,
    /// A bounded search's counts summed over the shards present
    /// (`complete`: every shard present walked its whole part).
    pub bounded: Option<super::bounded::BoundedStats>,
}

impl Merged {
    /// The exit code: 0 whole and clean, 1 a failure, 2 shards missing.
    pub fn exit_code(&self) -> u8 {
        if !self.failures.is_empty() {
            1
        } else if !self.missing.is_empty() {
            2
        } else {
            0
        }
    }
}

fn fixes(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(",")
    }
}

/// Merges shard lines into one verdict. `Err` (invalid input) names the file
/// and line of the first line that belongs to another search.
pub fn merge(lines: &[Located]) -> Result<Merged, String> {
    let Some(first) = lines.first() else {
        return Err("no shard lines to merge".to_string());
    };
    let f = &first.shard;
    let mut sorted_reverted = f.reverted.clone();
    sorted_reverted.sort();
    for l in &lines[1..] {
        let s = &l.shard;
        let mut rev = s.reverted.clone();
        rev.sort();
        let bound = |x: &ShardLine| {
            x.bounded
                .map_or(String::new(), |b| format!("{} preemptions", b.preemptions))
        };
        let checks: [(&str, String, String); 11] = [
            ("preemption bound", bound(f), bound(s)),
            ("scenario", f.scenario.clone(), s.scenario.clone()),
            (
                "scenario statements (hash)",
                f.scenario_hash.clone(),
                s.scenario_hash.clone(),
            ),
            ("build", f.build.clone(), s.build.clone()),
            ("strategy", f.strategy.clone(), s.strategy.clone()),
            ("seed", f.seed.to_string(), s.seed.to_string()),
            ("shard count", f.shard.1.to_string(), s.shard.1.to_string()),
            ("geometry", f.geometry.clone(), s.geometry.clone()),
            ("reverted fixes", fixes(&sorted_reverted), fixes(&rev)),
            (
                "iterations",
                f.iterations.map_or("none".to_string(), |n| n.to_string()),
                s.iterations.map_or("none".to_string(), |n| n.to_string()),
            ),
            (
                "depth",
                if f.strategy == "pct" {
                    f.depth.to_string()
                } else {
                    String::new()
                },
                if s.strategy == "pct" {
                    s.depth.to_string()
                } else {
                    String::new()
                },
            ),
        ];
        for (what, a, b) in checks {
            if a != b {
                return Err(format!(
                    "{} line {}: a shard of another search: {what} `{b}`, but {} line {} has \
                     `{a}`",
                    l.file, l.line, first.file, first.line
                ));
            }
        }
    }
    let n = f.shard.1;
    let mut warnings = Vec::new();
    let mut kept: BTreeMap<u64, &Located> = BTreeMap::new();
    let mut failures: Vec<MergedFailure> = Vec::new();
    for l in lines {
        let i = l.shard.shard.0;
        match kept.get(&i) {
            Some(k) => warnings.push(format!(
                "shard {i}/{n} appears twice: {} line {} is ignored ({} line {} counts)",
                l.file, l.line, k.file, k.line
            )),
            None => {
                kept.insert(i, l);
            }
        }
        // A failure is real whichever line found it.
        if let Some(fl) = &l.shard.failure {
            if !failures.iter().any(|x| x.token == fl.token) {
                failures.push(MergedFailure {
                    shard: l.shard.shard,
                    file: l.file.clone(),
                    line: l.line,
                    what: fl.what.clone(),
                    token: fl.token.clone(),
                    index: fl.index,
                });
            }
        }
    }
    let missing: Vec<u64> = (0..n).filter(|i| !kept.contains_key(i)).collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|i| i.to_string()).collect();
        let shown = if list.len() > 20 {
            format!("{}, ... ({} in all)", list[..20].join(", "), list.len())
        } else {
            list.join(", ")
        };
        warnings.push(format!(
            "{} of {n} shards missing: {shown}; the merged search is not the whole search",
            missing.len()
        ));
    }
    let mut union: Vec<u64> = kept
        .values()
        .flat_map(|l| l.fingerprints.iter().copied())
        .collect();
    union.sort_unstable();
    union.dedup();
    let mut totals = CoverageTotals::default();
    for l in kept.values() {
        totals.merge(&l.shard.coverage);
    }
    let executions = kept.values().map(|l| l.shard.executions).sum();
    let asked = f.iterations.map(|it| {
        kept.keys()
            .map(|&i| {
                sched::Slice::all(usize::try_from(it).unwrap_or(usize::MAX))
                    .shard(i, n)
                    .count()
                    .unwrap_or(0)
            })
            .sum::<u64>()
    });
    for l in kept.values() {
        let s = &l.shard;
        if s.failure.is_some() {
            continue;
        }
        let want = s.iterations.map(|it| {
            sched::Slice::all(usize::try_from(it).unwrap_or(usize::MAX))
                .shard(s.shard.0, n)
                .count()
                .unwrap_or(0)
        });
        if let Some(want) = want.filter(|&w| (s.executions as u64) < w) {
            warnings.push(format!(
                "shard {}/{n} ({} line {}) ran {} of its {want} executions{}",
                s.shard.0,
                l.file,
                l.line,
                s.executions,
                if s.time_ms.is_some() {
                    " (its time ran out)"
                } else {
                    ""
                }
            ));
        }
    }
    let coverage = totals.report_blocks(&f.blocks);
    let bounded = f.bounded.map(|b0| {
        let mut b = super::bounded::BoundedStats {
            preemptions: b0.preemptions,
            complete: missing.is_empty(),
            ..Default::default()
        };
        for l in kept.values() {
            let s = l.shard.bounded.unwrap_or_default();
            b.schedules += s.schedules;
            b.pruned += s.pruned;
            b.complete &= s.complete;
        }
        b
    });
    let verdict = if !failures.is_empty() {
        "failed"
    } else if !missing.is_empty() {
        "incomplete"
    } else {
        "clean"
    };
    Ok(Merged {
        verdict,
        scenario: f.scenario.clone(),
        scenario_hash: f.scenario_hash.clone(),
        build: f.build.clone(),
        strategy: f.strategy.clone(),
        seed: f.seed,
        depth: f.depth,
        geometry: f.geometry.clone(),
        reverted: f.reverted.clone(),
        shards: n,
        present: kept.keys().copied().collect(),
        missing,
        iterations: f.iterations,
        executions,
        asked,
        distinct: union.len(),
        elapsed_ms_total: kept.values().map(|l| l.shard.elapsed_ms).sum(),
        elapsed_ms_max: kept.values().map(|l| l.shard.elapsed_ms).max().unwrap_or(0),
        failures,
        coverage,
        warnings,
        bounded,
    })
}

/// The text verdict (coverage through explore's renderer).
pub fn text(m: &Merged) -> String {
    let mut out = String::new();
    let reverted = if m.reverted.is_empty() {
        String::new()
    } else {
        format!(", reverted: {}", m.reverted.join(", "))
    };
    let depth = if m.strategy == "pct" {
        format!(", depth {}", m.depth)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "thpsim merge {} (strategy {}, seed {}{depth}, geometry {}{reverted}, build {})",
        m.scenario, m.strategy, m.seed, m.geometry, m.build
    );
    let _ = writeln!(out, "shards: {} of {} present", m.present.len(), m.shards);
    for f in &m.failures {
        let at = f
            .index
            .map_or(String::new(), |i| format!(", execution index {i}"));
        let _ = writeln!(
            out,
            "FAILURE in shard {}/{} ({} line {}{at}): {}",
            f.shard.0, f.shard.1, f.file, f.line, f.what
        );
        let _ = writeln!(out, "  replay: thpsim replay {} {}", m.scenario, f.token);
    }
    if !m.failures.is_empty() {
        out.push('\n');
    }
    for b in &m.coverage {
        out.push_str(&coverage::text(b));
    }
    for w in &m.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let asked = m.asked.map_or(String::new(), |a| format!(" of {a} asked"));
    let summary = format!(
        "{} interleavings run{asked} ({} distinct) with strategy {} and seed {} in {} shard(s) \
         ({:.2}s in all, the longest {:.2}s)",
        m.executions,
        m.distinct,
        m.strategy,
        m.seed,
        m.present.len(),
        m.elapsed_ms_total as f64 / 1000.0,
        m.elapsed_ms_max as f64 / 1000.0
    );
    let _ = match m.verdict {
        "failed" => writeln!(out, "FAILED: {} failure(s); {summary}", m.failures.len()),
        "incomplete" => writeln!(
            out,
            "INCOMPLETE: no failure in the shards present, but {} of {} shards are missing; \
             {summary}",
            m.missing.len(),
            m.shards
        ),
        _ => match m.bounded {
            Some(b) if b.complete => writeln!(
                out,
                "ok: exhaustive up to {} preemption{} in {} shard(s): {} schedules, {} pruned, \
                 no failure ({:.2}s in all, the longest {:.2}s)",
                b.preemptions,
                if b.preemptions == 1 { "" } else { "s" },
                m.present.len(),
                b.schedules,
                b.pruned,
                m.elapsed_ms_total as f64 / 1000.0,
                m.elapsed_ms_max as f64 / 1000.0
            ),
            Some(b) => writeln!(
                out,
                "ok: no failure, but NOT exhaustive: a shard stopped before its part of the \
                 bound of {} preemptions was covered; {summary}",
                b.preemptions
            ),
            None => writeln!(out, "ok: no failure in the whole search: {summary}"),
        },
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip() {
        for v in [
            vec![],
            vec![0],
            vec![u64::MAX],
            vec![0, 1, 2, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX],
            (0..1000u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        ] {
            let e = Fingerprints::encode(&v);
            assert_eq!(e.decode().expect("decodes"), v);
        }
        let e = Fingerprints::encode(&[5, 9]);
        for bad in [
            Fingerprints {
                count: 3,
                ..e.clone()
            },
            Fingerprints {
                data: "!!!!".to_string(),
                ..e.clone()
            },
            Fingerprints {
                data: "BQ".to_string(),
                ..e.clone()
            },
            // 5, then a difference of 0: not increasing.
            Fingerprints {
                data: base64_encode(&[5, 0]),
                count: 2,
                ..e.clone()
            },
            // A varint cut short.
            Fingerprints {
                data: base64_encode(&[5, 0x80]),
                count: 2,
                ..e.clone()
            },
            Fingerprints {
                encoding: "raw".to_string(),
                ..e.clone()
            },
        ] {
            assert!(bad.decode().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).expect("decodes"), raw.as_bytes());
        }
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*"] {
            assert!(base64_decode(bad).is_err(), "{bad:?} accepted");
        }
    }
}
