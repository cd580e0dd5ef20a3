//! Embeds the bundled scenarios (`scenarios/**/*.thp`) for `thpsim list` and
//! `thpsim run NAME`, and the model's sources (`crates/model/src/**/*.rs`) for
//! `thpsim divergences`, which lists their `DIVERGENCE:` marks.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, root: &Path, ext: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, root, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            let rel = p.strip_prefix(root).unwrap_or(&p).with_extension("");
            out.push((rel.to_string_lossy().replace('\\', "/"), p));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let root = manifest.join("../../scenarios");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, "thp", &mut files);
    for (_, p) in &files {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut src = String::from(
        "/// Bundled scenarios: (name, source).\npub const BUNDLED: &[(&str, &str)] = &[\n",
    );
    for (name, p) in &files {
        let abs = p.canonicalize().unwrap_or(p.clone());
        src.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    src.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("out dir"));
    std::fs::write(out_dir.join("bundled.rs"), src).expect("write bundled.rs");

    let model = manifest.join("../model/src");
    println!("cargo:rerun-if-changed={}", model.display());
    let mut files = Vec::new();
    collect(&model, &model, "rs", &mut files);
    let mut src = String::from(
        "/// The model's sources: (path from the repository root, text).\n\
         pub const MODEL_SOURCES: &[(&str, &str)] = &[\n",
    );
    for (name, p) in &files {
        println!("cargo:rerun-if-changed={}", p.display());
        let abs = p.canonicalize().unwrap_or(p.clone());
        src.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            format!("crates/model/src/{name}.rs"),
            abs.display().to_string()
        ));
    }
    src.push_str("];\n");
    std::fs::write(out_dir.join("model_sources.rs"), src).expect("write model_sources.rs");

    // The code a replay token depends on: the model, the interpreter and the
    // explorer. A token records this hash; another build refuses it.
    let mut code = files.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>();
    let thpsim_src = manifest.join("src");
    code.push(thpsim_src.join("run.rs"));
    let mut explore = Vec::new();
    collect(&thpsim_src.join("explore"), &thpsim_src, "rs", &mut explore);
    code.extend(explore.into_iter().map(|(_, p)| p));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in &code {
        println!("cargo:rerun-if-changed={}", p.display());
        let text = std::fs::read(p).expect("read source");
        for b in text {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    std::fs::write(
        out_dir.join("code_hash.rs"),
        format!(
            "/// FNV-1a of the model's, the interpreter's and the explorer's sources.\n\
             pub const CODE_HASH: u32 = {:#010x};\n",
            (h ^ (h >> 32)) as u32
        ),
    )
    .expect("write code_hash.rs");
}
