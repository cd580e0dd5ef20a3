//! Documentation generated from the code stays what the code says: the
//! divergence table of docs/ARCHITECTURE.md is `thpsim divergences --markdown`
//! (`THPSIM_BLESS=1` rewrites it).

use std::path::Path;

const BEGIN: &str = "<!-- thpsim divergences --markdown: begin -->\n";
const END: &str = "<!-- thpsim divergences --markdown: end -->";

#[test]
fn the_divergence_table_is_the_codes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&path).expect("docs/ARCHITECTURE.md");
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/ARCHITECTURE.md lacks the `{BEGIN}`...`{END}` markers");
    };
    let current = &doc[b + BEGIN.len()..e];
    let want = thpsim::divergences::markdown(&thpsim::divergences::list());
    if std::env::var_os("THPSIM_BLESS").is_some() && current != want {
        let fixed = format!("{}{want}{}", &doc[..b + BEGIN.len()], &doc[e..]);
        std::fs::write(&path, fixed).expect("write docs/ARCHITECTURE.md");
        return;
    }
    assert_eq!(
        current, want,
        "docs/ARCHITECTURE.md's divergence table is stale: run \
         `THPSIM_BLESS=1 cargo test --release -p thpsim --test docs`"
    );
}
