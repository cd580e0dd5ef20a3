//! `thpsim divergences`: the places where the model departs from Linux 5.8 on
//! purpose, read from the `DIVERGENCE:` marks of the model's own sources
//! (embedded at build time), so the list cannot drift from the code.
//!
//! A mark is the word `DIVERGENCE:` in a comment. Its text runs to the end of
//! the comment paragraph (the next blank comment line, a line that is not a
//! comment, or a `#` heading), or to the closing parenthesis when the mark
//! opens inside one (`(DIVERGENCE: no OOM killer)`). A doc comment's mark
//! belongs to the next `fn`, a line comment's to the `fn` it sits in, and a
//! mark in the module's `//!` header to the module.
//! A mention in backticks (`` `DIVERGENCE:` ``) is not a mark.

use serde::Serialize;

include!(concat!(env!("OUT_DIR"), "/model_sources.rs"));

/// One mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The file, from the repository root.
    pub file: String,
    /// The modelled function the mark documents, or `(module)`.
    pub item: String,
    /// What differs from Linux 5.8, and why.
    pub text: String,
}

const MARK: &str = "DIVERGENCE:";

/// The comment text of a line (`//`, `///`, `//!`), if it is a comment.
fn comment(line: &str) -> Option<(&'static str, &str)> {
    let t = line.trim_start();
    for prefix in ["//!", "///", "//"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            return Some((prefix, rest.trim()));
        }
    }
    None
}

/// The name of the function declared on `line`, if any.
fn fn_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let i = t.find("fn ")?;
    let before = &t[..i];
    if !before
        .split_whitespace()
        .all(|w| matches!(w, "pub" | "pub(crate)" | "const" | "unsafe" | "extern"))
    {
        return None;
    }
    let rest = &t[i + 3..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The name of the item declared on `line`: `f()` for a function, the name
/// of a type, constant, field or variant otherwise.
fn item_name(line: &str) -> Option<String> {
    if let Some(f) = fn_name(line) {
        return Some(format!("{f}()"));
    }
    let words: Vec<&str> = line
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let kw = [
        "pub", "crate", "const", "static", "struct", "enum", "type", "trait", "mod",
    ];
    let name = words.iter().find(|w| !kw.contains(w))?;
    Some(name.to_string())
}

/// The marks of one source file.
pub fn marks_in(file: &str, src: &str) -> Vec<Divergence> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((prefix, body)) = comment(line) else {
            continue;
        };
        let Some(at) = body.find(MARK) else {
            continue;
        };
        if body[..at].ends_with('`') {
            continue;
        }
        let in_parens = body[..at].trim_end().ends_with('(');
        let mut text = body[at + MARK.len()..].trim().to_string();
        let mut j = i + 1;
        while j < lines.len() {
            match comment(lines[j]) {
                Some((p, b)) if p == prefix && !b.is_empty() && !b.starts_with('#') => {
                    if in_parens && text.contains(')') {
                        break;
                    }
                    text.push(' ');
                    text.push_str(b);
                    j += 1;
                }
                _ => break,
            }
        }
        if in_parens {
            // Up to the parenthesis that closes the one the mark opened.
            let mut depth = 0i32;
            let mut cut = text.len();
            for (k, c) in text.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        cut = k;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            text.truncate(cut);
        }
        let found = match prefix {
            "//!" => None,
            // A doc comment documents the item after it.
            "///" => lines[j..]
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["))
                .and_then(item_name),
            // A line comment sits in the function that encloses it.
            _ => lines[..i]
                .iter()
                .rev()
                .find_map(|l| fn_name(l))
                .map(|f| format!("{f}()")),
        };
        let item = found.unwrap_or_else(|| "(module)".to_string());
        out.push(Divergence {
            file: file.to_string(),
            item,
            text: text.trim().trim_end_matches(['.', ';']).to_string() + ".",
        });
    }
    out
}

/// Every mark of the model, by file in path order.
pub fn list() -> Vec<Divergence> {
    MODEL_SOURCES
        .iter()
        .flat_map(|(f, s)| marks_in(f, s))
        .collect()
}

/// The marks as a Markdown table (the one in docs/ARCHITECTURE.md).
pub fn markdown(list: &[Divergence]) -> String {
    let mut out = String::from("| file | function | divergence |\n|---|---|---|\n");
    for d in list {
        out.push_str(&format!(
            "| {} | `{}` | {} |\n",
            d.file,
            d.item,
            d.text.replace('|', "\\|")
        ));
    }
    out
}

/// The marks as text, one per paragraph.
pub fn text(list: &[Divergence]) -> String {
    let mut out = String::new();
    for d in list {
        out.push_str(&format!("{} {}\n  {}\n", d.file, d.item, d.text));
    }
    out.push_str(&format!(
        "{} divergence(s) from Linux 5.8 marked in the model\n",
        list.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_marks_of_every_shape() {
        let src = "//! The header (DIVERGENCE: one (nested) thing) and more.\n\
                   //! Not a mark: `DIVERGENCE:` in backticks.\n\
                   \n\
                   /// Models f().\n\
                   ///\n\
                   /// DIVERGENCE: first line\n\
                   /// second line.\n\
                   ///\n\
                   /// Not part of it.\n\
                   pub fn f_name(x: u32) {\n\
                       // DIVERGENCE: inside\n\
                       let _ = x;\n\
                   }\n\
                   fn g() {}\n\
                   enum E {\n\
                       /// Out of memory (DIVERGENCE: no OOM killer).\n\
                       Oom,\n\
                   }\n";
        let m = marks_in("a.rs", src);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].item, "(module)");
        assert_eq!(m[0].text, "one (nested) thing.");
        assert_eq!(m[1].item, "f_name()");
        assert_eq!(m[1].text, "first line second line.");
        assert_eq!(m[2].item, "f_name()");
        assert_eq!(
            (m[3].item.as_str(), m[3].text.as_str()),
            ("Oom", "no OOM killer.")
        );
    }

    #[test]
    fn the_model_has_marks_and_each_names_its_place() {
        let l = list();
        assert!(l.len() >= 10, "only {} marks", l.len());
        assert!(l.iter().all(|d| d.file.starts_with("crates/model/src/")));
        assert!(l.iter().all(|d| d.text.len() > 10), "{l:?}");
    }
}
