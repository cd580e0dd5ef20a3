//! The lexer: splits the source into lines of tokens.
//!
//! Words are `[A-Za-z_][A-Za-z0-9_-]*` (keywords such as `move-pages` and
//! `thp-pmd` contain hyphens; the parser checks that names do not). Numbers are
//! decimal or `0x` hex with an optional unit suffix; in hex, `b` is a digit, so
//! `0x1b` is 27 bytes. A number followed by `.` and a digit is a dotted
//! number such as `5.8` (a kernel version; `1..2` stays a range). `#` starts
//! a comment. Any other character is an error that poisons its line (the
//! parser skips it) without stopping the lexer.

use crate::ast::{Span, Unit};
use crate::error::Diag;

/// A number as written, validated: its value and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Number {
    pub value: u64,
    pub unit: Unit,
    /// The unit was written (not the default bytes).
    pub explicit_unit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Word(String),
    Number(Number),
    /// A dotted number such as `5.8` or `3.16` (the text is the token's).
    Dotted,
    Colon,
    Semi,
    LBracket,
    RBracket,
    DotDot,
    /// `=`
    Eq,
    /// `==`
    EqEq,
    /// `=>`
    Arrow,
    Plus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub span: Span,
    /// The source text of the token.
    pub text: String,
}

impl Token {
    /// The word, if the token is one.
    pub fn word(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Word(w) => Some(w),
            _ => None,
        }
    }

    /// A zero-length span just after the token.
    pub fn after(&self) -> Span {
        Span {
            offset: self.span.end(),
            len: 0,
            line: self.span.line,
            column: self.span.column + self.text.chars().count(),
        }
    }
}

/// The tokens of one source line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub tokens: Vec<Token>,
    /// A lexical error was found on the line (already reported); skip it.
    pub poisoned: bool,
}

/// Splits `src` into lines of tokens; lexical errors are returned separately.
pub(crate) fn lex(src: &str) -> (Vec<Line>, Vec<Diag>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut offset = 0usize;
    for (index, text) in src.split('\n').enumerate() {
        let (line, err) = lex_line(text, offset, index + 1);
        lines.push(line);
        errors.extend(err);
        offset += text.len() + 1;
    }
    (lines, errors)
}

fn lex_line(text: &str, line_offset: usize, line_no: usize) -> (Line, Option<Diag>) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut tokens = Vec::new();
    let mut j = 0usize;
    let span_of = |from: usize, to: usize| -> Span {
        // `from..to` are indices into `chars`.
        let start = chars.get(from).map_or(text.len(), |c| c.0);
        let end = chars.get(to).map_or(text.len(), |c| c.0);
        Span {
            offset: line_offset + start,
            len: end.saturating_sub(start),
            line: line_no,
            column: from + 1,
        }
    };
    let text_of = |from: usize, to: usize| -> String {
        chars
            .get(from..to.min(chars.len()))
            .map(|cs| cs.iter().map(|c| c.1).collect())
            .unwrap_or_default()
    };
    while let Some(&(_, ch)) = chars.get(j) {
        let start = j;
        let next = chars.get(j + 1).map(|c| c.1);
        let kind = if ch.is_whitespace() {
            j += 1;
            continue;
        } else if ch == '#' {
            break;
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            while chars
                .get(j)
                .is_some_and(|c| c.1.is_ascii_alphanumeric() || c.1 == '_' || c.1 == '-')
            {
                j += 1;
            }
            TokenKind::Word(text_of(start, j))
        } else if ch.is_ascii_digit() {
            while chars
                .get(j)
                .is_some_and(|c| c.1.is_ascii_alphanumeric() || c.1 == '_')
            {
                j += 1;
            }
            let mut dotted = false;
            while chars.get(j).is_some_and(|c| c.1 == '.')
                && chars.get(j + 1).is_some_and(|c| c.1.is_ascii_digit())
            {
                dotted = true;
                j += 1;
                while chars
                    .get(j)
                    .is_some_and(|c| c.1.is_ascii_alphanumeric() || c.1 == '_')
                {
                    j += 1;
                }
            }
            let word = text_of(start, j);
            if dotted {
                TokenKind::Dotted
            } else {
                match number(&word) {
                    Ok(n) => TokenKind::Number(n),
                    Err((msg, help)) => {
                        let d = Diag::new(span_of(start, j), msg).help(help);
                        return (poisoned(tokens), Some(d));
                    }
                }
            }
        } else {
            j += 1;
            match (ch, next) {
                (':', _) => TokenKind::Colon,
                (';', _) => TokenKind::Semi,
                ('[', _) => TokenKind::LBracket,
                (']', _) => TokenKind::RBracket,
                ('+', _) => TokenKind::Plus,
                ('.', Some('.')) => {
                    j += 1;
                    TokenKind::DotDot
                }
                ('=', Some('=')) => {
                    j += 1;
                    TokenKind::EqEq
                }
                ('=', Some('>')) => {
                    j += 1;
                    TokenKind::Arrow
                }
                ('=', _) => TokenKind::Eq,
                ('.', _) => {
                    let d = Diag::new(span_of(start, j), "unexpected `.`")
                        .help("a range is written `A[start..end]`, with two dots");
                    return (poisoned(tokens), Some(d));
                }
                _ => {
                    let shown: String = ch.escape_debug().collect();
                    let d = Diag::new(span_of(start, j), format!("unexpected character `{shown}`"))
                        .help("names are letters, digits and `_`; `#` starts a comment");
                    return (poisoned(tokens), Some(d));
                }
            }
        };
        tokens.push(Token {
            kind,
            span: span_of(start, j),
            text: text_of(start, j),
        });
    }
    (
        Line {
            tokens,
            poisoned: false,
        },
        None,
    )
}

fn poisoned(tokens: Vec<Token>) -> Line {
    Line {
        tokens,
        poisoned: true,
    }
}

const UNIT_HELP: &str =
    "numbers are decimal or 0x hex, with an optional unit: b k m g p h u (bytes, KiB, MiB, GiB, base pages, PMD pages, PUD pages)";

/// Validates a number token (ASCII alphanumerics and `_`, starting with a digit).
fn number(text: &str) -> Result<Number, (String, &'static str)> {
    let hex = text.starts_with("0x") || text.starts_with("0X");
    let body = if hex {
        text.get(2..).unwrap_or("")
    } else {
        text
    };
    let digits_len = body
        .chars()
        .take_while(|c| {
            if hex {
                c.is_ascii_hexdigit()
            } else {
                c.is_ascii_digit()
            }
        })
        .count();
    let digits = body.get(..digits_len).unwrap_or("");
    let rest = body.get(digits_len..).unwrap_or("");
    if digits.is_empty() {
        return Err((
            format!("bad number `{text}`: no digits after `0x`"),
            UNIT_HELP,
        ));
    }
    let mut rest_chars = rest.chars();
    let (unit, explicit_unit) = match (rest_chars.next(), rest_chars.next()) {
        (None, _) => (Unit::Bytes, false),
        (Some(c), None) => match Unit::from_suffix(c) {
            Some(u) => (u, true),
            None => {
                return Err((
                    format!("bad number `{text}`: unknown unit `{c}`"),
                    UNIT_HELP,
                ))
            }
        },
        (Some(_), Some(_)) => {
            return Err((
                format!("bad number `{text}`: unknown unit `{rest}`"),
                UNIT_HELP,
            ))
        }
    };
    let value = u64::from_str_radix(digits, if hex { 16 } else { 10 }).map_err(|_| {
        (
            format!("number `{text}` is too large"),
            "numbers must fit in 64 bits",
        )
    })?;
    Ok(Number {
        value,
        unit,
        explicit_unit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        let (lines, errs) = lex(src);
        assert!(errs.is_empty(), "{errs:?}");
        lines
            .into_iter()
            .flat_map(|l| l.tokens)
            .map(|t| t.kind)
            .collect()
    }

    fn num(value: u64, unit: Unit) -> TokenKind {
        TokenKind::Number(Number {
            value,
            unit,
            explicit_unit: unit != Unit::Bytes,
        })
    }

    #[test]
    fn tokens() {
        use TokenKind::*;
        assert_eq!(
            kinds("P: write A[1h+3p..2h] = 0x11 => ok # c"),
            vec![
                Word("P".into()),
                Colon,
                Word("write".into()),
                Word("A".into()),
                LBracket,
                num(1, Unit::Pmd),
                Plus,
                num(3, Unit::Page),
                DotDot,
                num(2, Unit::Pmd),
                RBracket,
                Eq,
                num(0x11, Unit::Bytes),
                Arrow,
                Word("ok".into()),
            ]
        );
        assert_eq!(
            kinds("read A[0] == 1; x"),
            vec![
                Word("read".into()),
                Word("A".into()),
                LBracket,
                num(0, Unit::Bytes),
                RBracket,
                EqEq,
                num(1, Unit::Bytes),
                Semi,
                Word("x".into()),
            ]
        );
        assert_eq!(
            kinds("kernel 5.8 3.16 A[1..2]"),
            vec![
                Word("kernel".into()),
                Dotted,
                Dotted,
                Word("A".into()),
                LBracket,
                num(1, Unit::Bytes),
                DotDot,
                num(2, Unit::Bytes),
                RBracket,
            ]
        );
        let (lines, _) = lex("kernel 3.16.1x");
        assert_eq!(lines[0].tokens[1].text, "3.16.1x");
        assert_eq!(
            kinds("move-pages thp-pmd x86_64"),
            vec![
                Word("move-pages".into()),
                Word("thp-pmd".into()),
                Word("x86_64".into()),
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number("0x1b").map(|n| n.value), Ok(27));
        assert_eq!(
            number("0x10p").map(|n| (n.value, n.unit)),
            Ok((16, Unit::Page))
        );
        assert_eq!(
            number("12b").map(|n| (n.value, n.unit)),
            Ok((12, Unit::Bytes))
        );
        assert_eq!(
            number("64m").map(|n| (n.value, n.unit)),
            Ok((64, Unit::Mib))
        );
        assert!(number("2q").is_err());
        assert!(number("2kb").is_err());
        assert!(number("0x").is_err());
        assert!(number("0xg1").is_err());
        assert!(number("99999999999999999999").is_err());
        assert!(number("0x1_0").is_err());
    }

    #[test]
    fn positions() {
        let (lines, errs) = lex("a\n  é bc\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].span.line, errs[0].span.column), (2, 3));
        assert!(lines[1].poisoned);
        let (lines, _) = lex("é:x  yy");
        assert!(lines[0].poisoned);
        let (lines, _) = lex("# é\n\tab cd");
        let t = &lines[1].tokens[1];
        assert_eq!(
            (t.span.offset, t.span.len, t.span.line, t.span.column),
            (9, 2, 2, 5)
        );
        assert_eq!(t.after().column, 7);
    }
}
