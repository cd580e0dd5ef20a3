//! Errors: every error names the line and column and points at the offending
//! text (rendered by miette with the source line).

use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

use crate::ast::Span;

/// An invalid scenario (or a quantity that does not resolve). `Display` reads
/// `line 7, column 12: unknown operation `mmapp``; rendered through miette it
/// also shows the source line with the culprit underlined, and a help text
/// when there is one.
#[derive(Debug, Error, Diagnostic)]
#[error("line {line}, column {column}: {message}")]
pub struct ScenarioError {
    /// 1-based line of the culprit.
    pub line: usize,
    /// 1-based column (in characters) of the culprit.
    pub column: usize,
    /// What is wrong, without the position.
    pub message: String,
    /// The scenario source, shared with the related errors (absent for
    /// errors made without one, such as [`crate::Quantity::resolve`]'s; see
    /// [`ScenarioError::with_source`]).
    #[source_code]
    pub src: Option<Arc<NamedSource<String>>>,
    /// The culprit: byte offset and length in the source.
    #[label("here")]
    pub source_span: SourceSpan,
    /// How to fix it, when there is something useful to say.
    #[help]
    pub help: Option<String>,
    /// Further errors found in the same file (after the first).
    #[related]
    pub related: Vec<ScenarioError>,
}

impl ScenarioError {
    /// An error at `span`, without source text.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        ScenarioError {
            line: span.line,
            column: span.column,
            message: message.into(),
            src: None,
            source_span: span.into(),
            help: None,
            related: Vec::new(),
        }
    }

    /// The culprit's span.
    pub fn span(&self) -> Span {
        Span {
            offset: self.source_span.offset(),
            len: self.source_span.len(),
            line: self.line,
            column: self.column,
        }
    }

    /// Attaches the scenario's name and source (to this error and its related ones).
    pub fn with_source(self, name: &str, source: &str) -> Self {
        self.with_shared_source(&Arc::new(NamedSource::new(name, source.to_string())))
    }

    fn with_shared_source(mut self, src: &Arc<NamedSource<String>>) -> Self {
        self.src = Some(Arc::clone(src));
        self.related = self
            .related
            .into_iter()
            .map(|r| r.with_shared_source(src))
            .collect();
        self
    }

    /// Sets the help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// An error found while parsing or checking, before it is given the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diag {
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
}

impl Diag {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Diag {
            span,
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn into_error(self) -> ScenarioError {
        let mut e = ScenarioError::new(self.span, self.message);
        e.help = self.help;
        e
    }
}

/// Edit distance (for "did you mean" help texts).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            let del = prev[j + 1] + 1;
            let ins = cur[j] + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The closest candidate to `word`, if it is close enough to be a typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if word.len() > 40 {
        return None;
    }
    let limit = (word.chars().count() / 3).clamp(1, 2);
    candidates
        .into_iter()
        .map(|c| (distance(&word.to_ascii_lowercase(), c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("mmapp", ["mmap", "munmap"]), Some("mmap"));
        assert_eq!(suggest("xyz", ["mmap", "munmap"]), None);
        assert_eq!(suggest("Kernel", ["kernel", "device"]), Some("kernel"));
        assert_eq!(distance("", "ab"), 2);
    }
}
