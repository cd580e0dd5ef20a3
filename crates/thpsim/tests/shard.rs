//! Distributed search: shards run as separate processes (given by `--shard`,
//! by a Slurm job array's or a Kubernetes Indexed Job's environment) merge to
//! exactly the unsharded search; `--jobs` splits a search without changing
//! it; `thpsim merge` refuses lines of different searches and fails when a
//! shard failed.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The variables a batch system sets; cleared so that the test's own
/// environment (a CI job array, say) cannot shard the runs.
const SHARD_ENV: &[&str] = &[
    "JOB_COMPLETION_INDEX",
    "THPSIM_SHARDS",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
];

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thpsim"));
    c.args(args);
    for v in SHARD_ENV {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn thpsim(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("run thpsim")
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn thpsim")
}

fn race(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../scenarios/races/{name}.thp"))
        .to_str()
        .expect("utf8")
        .to_string()
}

fn tmp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("thpsim-shard-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// How a shard is told which one it is.
#[derive(Clone, Copy, Debug)]
enum Via {
    Flag,
    Slurm,
    Kubernetes,
}

/// Runs the 4 shards of a search at once, as separate processes; returns
/// the files holding their lines.
fn run_shards(dir: &Path, base: &[&str], via: Via, tag: &str) -> Vec<PathBuf> {
    let mut children = Vec::new();
    for i in 0..4u32 {
        let file = dir.join(format!("{tag}-{via:?}-{i}.jsonl"));
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        let (id, idx) = ((10 + i).to_string(), i.to_string());
        let env: Vec<(&str, &str)> = match via {
            Via::Flag => {
                args.extend(["--shard".to_string(), format!("{i}/4")]);
                // One shard per process, each on 2 jobs, the line to a file.
                args.extend(["--jobs", "2", "--output"].map(String::from));
                args.push(file.to_str().expect("utf8").to_string());
                Vec::new()
            }
            // A job array `--array=10-13`: the index less the array's first.
            Via::Slurm => vec![
                ("SLURM_ARRAY_TASK_ID", id.as_str()),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_MIN", "10"),
            ],
            Via::Kubernetes => vec![
                ("JOB_COMPLETION_INDEX", idx.as_str()),
                ("THPSIM_SHARDS", "4"),
            ],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        children.push((file, spawn(&args, &env), via));
    }
    children
        .into_iter()
        .map(|(file, child, via)| {
            let out = child.wait_with_output().expect("shard ran");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{via:?}: {stderr}");
            match via {
                // stdout has the usual report; the line is in the file.
                Via::Flag => {
                    let s = String::from_utf8_lossy(&out.stdout);
                    assert!(s.contains("ok: no failure"), "{s}");
                }
                // The line is all stdout gets.
                _ => {
                    let s = String::from_utf8_lossy(&out.stdout);
                    assert_eq!(s.lines().count(), 1, "{s}");
                    std::fs::write(&file, &out.stdout).expect("write line");
                }
            }
            file
        })
        .collect()
}

#[test]
fn four_shards_merge_to_the_unsharded_search() {
    let dir = tmp_dir("merge");
    let scn = race("split_pmd_vs_wp_fault");
    for strategy in ["pct", "random"] {
        let base = [
            "explore",
            scn.as_str(),
            "--geometry",
            "tiny",
            "--iterations",
            "300",
            "--seed",
            "5",
            "--strategy",
            strategy,
        ];
        let mut whole_args = base.to_vec();
        whole_args.extend(["--jobs", "1", "--json"]);
        let whole = json(&thpsim(&whole_args, &[]));
        assert_eq!(whole["executions"], 300, "{strategy}");
        let distinct = whole["distinct"].as_u64().expect("distinct");
        assert!(distinct > 50, "{strategy}: {distinct} distinct");
        for via in [Via::Flag, Via::Slurm, Via::Kubernetes] {
            let files = run_shards(&dir, &base, via, strategy);
            // Each line is its shard of the search.
            let mut sum = 0;
            for (i, f) in files.iter().enumerate() {
                let text = std::fs::read_to_string(f).expect("shard line");
                let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
                assert_eq!(line["type"], "thpsim-shard");
                assert_eq!(line["shard"], serde_json::json!([i, 4]), "{via:?}");
                assert_eq!(line["strategy"], strategy);
                sum += line["executions"].as_u64().expect("executions");
            }
            assert_eq!(sum, 300, "{strategy} {via:?}");
            let mut args = vec!["merge", "--json"];
            args.extend(files.iter().map(|f| f.to_str().expect("utf8")));
            let out = thpsim(&args, &[]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let m = json(&out);
            assert_eq!(m["verdict"], "clean");
            assert_eq!(m["executions"], 300, "{strategy} {via:?}");
            assert_eq!(m["distinct"], distinct, "{strategy} {via:?}");
            assert_eq!(m["missing"], serde_json::json!([]));
            // The same executions: the same coverage, count for count.
            assert_eq!(m["coverage"], whole["coverage"], "{strategy} {via:?}");
            // The text verdict says the same.
            let out = thpsim(
                &args[..1]
                    .iter()
                    .chain(&args[2..])
                    .copied()
                    .collect::<Vec<_>>(),
                &[],
            );
            let s = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{s}");
            assert!(
                s.contains(&format!(
                    "ok: no failure in the whole search: 300 interleavings run of 300 asked \
                     ({distinct} distinct)"
                )) && s.contains("coverage of the together block at line"),
                "{s}"
            );
        }
    }
}

#[test]
fn jobs_split_a_search_without_changing_it() {
    let scn = race("split_page_vs_zap");
    for (strategy, shard) in [("pct", None), ("random", None), ("pct", Some("1/3"))] {
        let run = |jobs: &str| {
            let mut args = vec![
                "explore",
                scn.as_str(),
                "--iterations",
                "240",
                "--strategy",
                strategy,
                "--jobs",
                jobs,
            ];
            if let Some(s) = shard {
                args.extend(["--shard", s]);
            } else {
                args.push("--json");
            }
            let out = thpsim(&args, &[]);
            assert_eq!(out.status.code(), Some(0), "{args:?}");
            json(&out)
        };
        let (one, two) = (run("1"), run("2"));
        assert_eq!(two["jobs"], 2, "{strategy} {shard:?}");
        assert_eq!(one["executions"], two["executions"], "{strategy} {shard:?}");
        assert_eq!(one["distinct"], two["distinct"], "{strategy} {shard:?}");
        assert_eq!(one["coverage"], two["coverage"], "{strategy} {shard:?}");
        if shard.is_some() {
            // The very same schedules.
            assert_eq!(one["executions"], 80);
            assert_eq!(one["fingerprints"], two["fingerprints"]);
        } else {
            assert_eq!(one["executions"], 240);
        }
    }
    // A bounded search splits its tree among the jobs and still says it is
    // exhaustive; stopped after --iterations, it runs on one job and says so.
    let bounded = |extra: &[&str]| {
        let mut a = vec![
            "explore",
            scn.as_str(),
            "--strategy",
            "bounded",
            "--preemptions",
            "1",
        ];
        a.extend(extra);
        let out = thpsim(&a, &[]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(0), "{s}");
        s
    };
    let one = bounded(&["--jobs", "1"]);
    let two = bounded(&["--jobs", "2"]);
    let count = |s: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix("ok: exhaustive up to 1 preemption: "))
            .and_then(|l| l.split(' ').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("not exhaustive: {s}"))
    };
    assert_eq!(count(&one), count(&two), "{one}\n{two}");
    let capped = bounded(&["--jobs", "2", "--iterations", "10"]);
    assert!(
        capped.contains("note: a bounded search stopped after --iterations runs on one job"),
        "{capped}"
    );
}

/// The line of one shard of a small clean search.
fn line(seed: &str, strategy: &str, shard: &str) -> String {
    let out = thpsim(
        &[
            "explore",
            &race("split_pmd_vs_wp_fault"),
            "--iterations",
            "40",
            "--seed",
            seed,
            "--strategy",
            strategy,
            "--shard",
            shard,
            "--jobs",
            "1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn merge_refuses_lines_of_another_search() {
    let dir = tmp_dir("refuse");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("utf8").to_string()
    };
    let a0 = line("1", "pct", "0/2");
    let a1 = line("1", "pct", "1/2");
    let good0 = write("a0.jsonl", &a0);
    // Both shards in one file, a blank line between: whole and clean.
    let both = write("both.jsonl", &format!("{a0}\n{a1}"));
    let out = thpsim(&["merge", &both], &[]);
    assert_eq!(out.status.code(), Some(0));
    let retagged = |from: &str, to: &str| {
        assert!(a1.contains(from), "no `{from}` in {a1}");
        a1.replacen(from, to, 1)
    };
    for (name, text, why) in [
        ("seed.jsonl", line("2", "pct", "1/2"), "seed `2`"),
        (
            "strategy.jsonl",
            line("1", "random", "1/2"),
            "strategy `random`",
        ),
        ("count.jsonl", line("1", "pct", "1/3"), "shard count `3`"),
        (
            "build.jsonl",
            {
                let v: Value = serde_json::from_str(&a1).expect("json");
                let b = v["build"].as_str().expect("build").to_string();
                retagged(&format!("\"build\":\"{b}\""), "\"build\":\"00000000\"")
            },
            "build `00000000`",
        ),
        (
            "scenario.jsonl",
            {
                let v: Value = serde_json::from_str(&a1).expect("json");
                let h = v["scenario_hash"].as_str().expect("hash").to_string();
                retagged(
                    &format!("\"scenario_hash\":\"{h}\""),
                    "\"scenario_hash\":\"00000000\"",
                )
            },
            "scenario statements",
        ),
    ] {
        let other = write(name, &text);
        let out = thpsim(&["merge", &good0, &other], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{other} line 1: a shard of another search"))
                && stderr.contains(why),
            "{name}: {stderr}"
        );
    }
    // Lines that are not shard lines, named by file and line.
    for (name, text, why) in [
        (
            "garbage.jsonl",
            format!("{a0}\nnot json\n"),
            "line 3: not a JSON line",
        ),
        (
            "report.jsonl",
            "{\"type\":\"summary\"}\n".to_string(),
            "line 1: not a shard line",
        ),
        (
            "format.jsonl",
            a0.replacen("\"format\":1", "\"format\":9", 1),
            "line 1: a shard line of format 9",
        ),
        (
            "cut.jsonl",
            a0.replacen("\"distinct\":", "\"distinct\":1", 1),
            "line 1: ",
        ),
    ] {
        let f = write(name, &text);
        let out = thpsim(&["merge", &f], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(&format!("{f} {why}")), "{name}: {stderr}");
    }
    // A shard missing: not a whole search (exit 2, with a warning); a shard
    // twice: counted once. Lines can come from stdin.
    let mut child = command(&["merge", "-", &good0], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), a0.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("merge ran");
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{s}");
    assert!(
        s.contains("warning: shard 0/2 appears twice")
            && s.contains("warning: 1 of 2 shards missing: 1")
            && s.contains("INCOMPLETE")
            && s.contains("20 interleavings run of 20 asked"),
        "{s}"
    );
    let out = thpsim(&["merge", &dir.join("absent.jsonl").to_string_lossy()], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn merge_fails_when_a_shard_failed() {
    let dir = tmp_dir("failed");
    let scn = race("split_pmd_vs_wp_fault");
    let mut files = Vec::new();
    let mut failed = 0;
    let mut tokens = std::collections::BTreeSet::new();
    for i in 0..2 {
        let out = thpsim(
            &[
                "explore",
                &scn,
                "--revert",
                "split-pmd-page-lock",
                "--iterations",
                "400",
                "--shard",
                &format!("{i}/2"),
            ],
            &[],
        );
        let code = out.status.code();
        assert!(code == Some(0) || code == Some(1), "{code:?}");
        failed += usize::from(code == Some(1));
        if code == Some(1) {
            let line: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("a shard line");
            tokens.insert(
                line["failure"]["token"]
                    .as_str()
                    .expect("token")
                    .to_string(),
            );
        }
        let f = dir.join(format!("shard-{i}.jsonl"));
        std::fs::write(&f, &out.stdout).expect("write");
        files.push(f.to_str().expect("utf8").to_string());
    }
    assert!(
        failed > 0,
        "the reverted race was not found in 400 executions"
    );
    let out = thpsim(&["merge", &files[0], &files[1], "--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let m = json(&out);
    assert_eq!(m["verdict"], "failed");
    let failures = m["failures"].as_array().expect("failures");
    // Shards that shrank to the same schedule list it once.
    assert_eq!(failures.len(), tokens.len());
    let f = &failures[0];
    assert!(
        f["what"]
            .as_str()
            .is_some_and(|w| w.contains("MEM-PRIVATE")),
        "{f}"
    );
    assert!(f["index"].is_u64(), "{f}");
    // The token replays the failure.
    let token = f["token"].as_str().expect("token");
    let out = thpsim(&["replay", &scn, token], &[]);
    assert_eq!(out.status.code(), Some(1));
    let out = thpsim(&["merge", &files[0], &files[1]], &[]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("FAILURE in shard") && s.contains("replay: thpsim replay"),
        "{s}"
    );
}

#[test]
fn bad_shards_from_flags_or_the_environment_exit_2() {
    let scn = race("split_pmd_vs_wp_fault");
    let args = ["explore", scn.as_str(), "--iterations", "10"];
    for (env, why) in [
        (vec![("JOB_COMPLETION_INDEX", "1")], "THPSIM_SHARDS is not"),
        (vec![("THPSIM_SHARDS", "4")], "JOB_COMPLETION_INDEX is not"),
        (
            vec![("JOB_COMPLETION_INDEX", "4"), ("THPSIM_SHARDS", "4")],
            "must be below",
        ),
        (
            vec![("JOB_COMPLETION_INDEX", "x"), ("THPSIM_SHARDS", "4")],
            "not a non-negative integer",
        ),
        (
            vec![("SLURM_ARRAY_TASK_ID", "3")],
            "SLURM_ARRAY_TASK_COUNT is not",
        ),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "4"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            "contiguous range",
        ),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_MIN", "2"),
            ],
            "below SLURM_ARRAY_TASK_MIN",
        ),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("JOB_COMPLETION_INDEX", "1"),
                ("THPSIM_SHARDS", "4"),
            ],
            "both",
        ),
    ] {
        let out = thpsim(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(why), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The flag wins over the environment.
    let out = thpsim(
        &[
            "explore",
            scn.as_str(),
            "--iterations",
            "10",
            "--shard",
            "1/2",
        ],
        &[("JOB_COMPLETION_INDEX", "9")],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["shard"], serde_json::json!([1, 2]));
    for bad in [
        &["--strategy", "dfs"][..],
        &[
            "--strategy",
            "bounded",
            "--iterations",
            "10",
            "--shard",
            "0/2",
        ],
        &["--jobs", "0"],
        &["--shard", "2/2"],
        &["--shard", "1"],
    ] {
        let mut a = args.to_vec();
        a.extend(bad);
        let out = thpsim(&a, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Shards of a bounded search are parts of its schedule tree: merged, they
/// are the exhaustive search, with the same schedules as one run.
#[test]
fn bounded_shards_merge_to_the_exhaustive_search() {
    let dir = tmp_dir("bounded");
    let scn = race("split_pmd_vs_wp_fault");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "explore".to_string(),
            scn.clone(),
            "--strategy".into(),
            "bounded".into(),
            "--preemptions".into(),
            "1".into(),
            "--jobs".into(),
            "1".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let whole = thpsim(
        &args(&["--json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    let whole = json(&whole);
    let mut files = Vec::new();
    for i in 0..3 {
        let a = args(&["--shard", &format!("{i}/3")]);
        let out = thpsim(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(out.status.code(), Some(0));
        let f = dir.join(format!("b{i}.jsonl"));
        std::fs::write(&f, &out.stdout).expect("write");
        files.push(f.to_str().expect("utf8").to_string());
    }
    let out = thpsim(&["merge", &files[0], &files[1], &files[2]], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let want = format!(
        "ok: exhaustive up to 1 preemption in 3 shard(s): {} schedules,",
        whole["bounded"]["schedules"]
    );
    assert!(text.contains(&want), "{want}\n{text}");
}
