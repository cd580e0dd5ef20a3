//! Replay tokens: everything `thpsim replay` needs to rerun one schedule.
//!
//! `thp2-<geometry>-<reverted fixes>-<build>-<scenario>-<switches>`:
//! - geometry `t` (tiny) or `x` (x86_64);
//! - the reverted fixes as a hex mask of seed numbers (bit 0 = seed 000);
//! - `build`: a hash of the model's, the interpreter's and the explorer's
//!   sources (`CODE_HASH`, made by build.rs), since any change there can
//!   change which schedule a switch list means;
//! - `scenario`: a hash of the scenario's statements (comments and blank
//!   space aside, line structure kept);
//! - the switches `k:t` (decision `k` runs task `t`), or `0` for none.
//!
//! A token from another build or another version of the scenario is refused
//! with the reason, never replayed as something else.

use super::Switches;
use thpsim_model::fixes::Fix;
use thpsim_model::Config;

include!(concat!(env!("OUT_DIR"), "/code_hash.rs"));

/// The token format this build writes and reads.
pub const FORMAT: u32 = 2;

/// A parsed token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub geometry: thpsim_scenario::Geometry,
    pub fixes: Vec<Fix>,
    pub build: u32,
    pub scenario: u32,
    pub switches: Switches,
}

fn fnv(bytes: impl IntoIterator<Item = u8>) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// The hash of a scenario's statements: each line without its comment and
/// surrounding blanks (so editing a comment keeps the token; moving or
/// changing a statement does not).
pub fn scenario_hash(src: &str) -> u32 {
    let mut canon = String::new();
    for line in src.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        canon.push_str(code);
        canon.push('\n');
    }
    fnv(canon.bytes())
}

/// The token of a schedule of the scenario `src` under `cfg`.
pub fn encode(cfg: &Config, src: &str, sw: &Switches) -> String {
    let geo = if cfg.geometry.name == "tiny" {
        "t"
    } else {
        "x"
    };
    let mut mask = 0u32;
    for f in cfg.fixes.reverted() {
        mask |= 1 << f.seed();
    }
    let body: Vec<String> = sw.0.iter().map(|(k, t)| format!("{k}:{t}")).collect();
    format!(
        "thp{FORMAT}-{geo}-{mask:x}-{CODE_HASH:08x}-{:08x}-{}",
        scenario_hash(src),
        if body.is_empty() {
            "0".to_string()
        } else {
            body.join(",")
        }
    )
}

/// Parses a token (its shape only; see [`check`]).
pub fn parse(tok: &str) -> Result<Token, String> {
    let tok = tok.trim();
    let bad = || {
        format!(
            "`{tok}` is not a thpsim replay token \
             (thp{FORMAT}-GEOMETRY-FIXES-BUILD-SCENARIO-SWITCHES)"
        )
    };
    let (version, rest) = tok.split_once('-').ok_or_else(bad)?;
    match version.strip_prefix("thp").map(str::parse::<u32>) {
        Some(Ok(FORMAT)) => {}
        Some(Ok(v)) => {
            return Err(format!(
                "`{tok}` is a replay token of format {v}; this build of thpsim reads format \
                 {FORMAT}: explore again to get a token for it"
            ))
        }
        _ => return Err(bad()),
    }
    let parts: Vec<&str> = rest.splitn(5, '-').collect();
    let [geo, mask, build, scenario, body] = parts[..] else {
        return Err(bad());
    };
    let geometry = match geo {
        "t" => thpsim_scenario::Geometry::Tiny,
        "x" => thpsim_scenario::Geometry::X86_64,
        _ => return Err(bad()),
    };
    let mask = u32::from_str_radix(mask, 16).map_err(|_| bad())?;
    let fixes: Vec<Fix> = Fix::ALL
        .into_iter()
        .filter(|f| mask & (1 << f.seed()) != 0)
        .collect();
    let known = fixes.iter().fold(0u32, |m, f| m | 1 << f.seed());
    if known != mask {
        return Err(format!(
            "`{tok}` reverts fixes this thpsim does not have (mask {mask:#x})"
        ));
    }
    let hex = |s: &str| {
        (s.len() == 8)
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
            .ok_or_else(bad)
    };
    let (build, scenario) = (hex(build)?, hex(scenario)?);
    let mut sw = Vec::new();
    if body != "0" {
        for pair in body.split(',') {
            let (k, t) = pair.split_once(':').ok_or_else(bad)?;
            sw.push((k.parse().map_err(|_| bad())?, t.parse().map_err(|_| bad())?));
        }
        if sw.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(format!("`{tok}`: the switch points must be increasing"));
        }
    }
    Ok(Token {
        geometry,
        fixes,
        build,
        scenario,
        switches: Switches(sw),
    })
}

/// Refuses a token made by another build or for another version of the
/// scenario `src`.
pub fn check(t: &Token, src: &str) -> Result<(), String> {
    if t.build != CODE_HASH {
        return Err(format!(
            "the token was made by another build of thpsim's model (code {:08x}; this build is \
             {CODE_HASH:08x}): its switches would mean another schedule here. Explore again \
             with this build to get a token",
            t.build
        ));
    }
    let h = scenario_hash(src);
    if t.scenario != h {
        return Err(format!(
            "the token was made for another version of this scenario (statements {:08x}; this \
             file's are {h:08x}): explore this file again to get a token",
            t.scenario
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_does_not_fit() {
        let mut cfg = Config::new(thpsim_model::types::Geometry::TINY);
        cfg.fixes.revert(Fix::SplitPmdPageLock);
        let src = "process P\nP: mmap A 1h # a comment\n";
        let sw = Switches(vec![(3, 1), (9, 2)]);
        let tok = encode(&cfg, src, &sw);
        let t = parse(&tok).expect("parses");
        assert_eq!(t.switches, sw);
        assert_eq!(t.fixes, vec![Fix::SplitPmdPageLock]);
        assert!(check(&t, src).is_ok());
        // A comment may change; a statement may not.
        assert!(check(&t, "process P\nP: mmap A 1h # another\n").is_ok());
        let e = check(&t, "process P\nP: mmap A 2h\n").unwrap_err();
        assert!(e.contains("another version of this scenario"), "{e}");
        let other_build = tok.replacen(&format!("{CODE_HASH:08x}"), "00000000", 1);
        let e = check(&parse(&other_build).expect("parses"), src).unwrap_err();
        assert!(e.contains("another build"), "{e}");
        let e = parse("thp1-t-1-29:2").unwrap_err();
        assert!(e.contains("format 1"), "{e}");
        for bad in [
            "",
            "thp2-q-0-00000000-00000000-0",
            "thp2-t-zz-00000000-00000000-0",
            "thp2-t-0-000-00000000-0",
            "thp2-t-0-00000000-00000000-1:x",
            "thp2-t-40-00000000-00000000-0",
            "thp2-t-0-00000000-00000000-5:1,3:1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
