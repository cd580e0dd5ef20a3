//! The parser: lines of tokens to the typed syntax tree.
//!
//! Each line is split at `;` into statements, except that a `thread` line
//! takes the rest of its line as that thread's steps. A statement that fails
//! to parse is reported and skipped; parsing goes on with the next one, so
//! several errors can be reported at once. Name resolution (which processes,
//! regions, pins and files exist) is left to [`crate::check`].

use crate::ast::*;
use crate::error::{suggest, Diag};
use crate::lexer::{Line, Number, Token, TokenKind};

type PResult<T> = Result<T, Diag>;

/// Operations a process runs.
pub(crate) const PROCESS_OPS: &[&str] = &[
    "fork",
    "exit",
    "mmap",
    "memfd",
    "munmap",
    "mprotect",
    "madvise",
    "move-pages",
    "mlock",
    "munlock",
    "write",
    "read",
    "pin",
    "unpin",
    "mirror",
];
/// Operations of the `kernel` context.
pub(crate) const KERNEL_OPS: &[&str] =
    &["split-huge-page", "khugepaged", "reclaim", "deferred-split"];
/// Operations of the `device` context.
pub(crate) const DEVICE_OPS: &[&str] = &["write", "read"];
/// Operations of the `mirror` context.
pub(crate) const MIRROR_OPS: &[&str] = &["write", "read"];
/// The contexts that are not process names.
pub(crate) const CONTEXTS: &[&str] = &["kernel", "device", "mirror"];
/// Header keys.
pub(crate) const HEADER_KEYS: &[&str] = &[
    "geometry",
    "thp",
    "zero-page",
    "nodes",
    "hugetlb-pool",
    "swap",
    "memory",
    "revert",
    "kernel",
    "khugepaged",
];
/// Statement keywords (besides header keys and steps).
const STATEMENTS: &[&str] = &["process", "together", "thread", "end", "expect", "show"];

/// What [`parse_lines`] found.
pub(crate) struct Parsed {
    pub header: Header,
    pub items: Vec<Item>,
    pub errors: Vec<Diag>,
}

/// Parses lexed lines (poisoned lines are skipped: their error is already reported).
pub(crate) fn parse_lines(lines: &[Line]) -> Parsed {
    let mut p = Parser::default();
    for line in lines.iter().filter(|l| !l.poisoned) {
        p.line(&line.tokens);
    }
    if let Some(block) = p.block.take() {
        p.errors.push(
            Diag::new(block.span, "`together` without `end`")
                .help("close the block with a line `end` after its last `thread` line"),
        );
    }
    Parsed {
        header: p.header,
        items: p.items,
        errors: p.errors,
    }
}

#[derive(Default)]
struct Parser {
    header: Header,
    items: Vec<Item>,
    errors: Vec<Diag>,
    /// The first statement that is not a header line or a `process` declaration.
    body: Option<Span>,
    /// The open `together` block.
    block: Option<Block>,
}

struct Block {
    span: Span,
    threads: Vec<Thread>,
    /// A line inside failed (so an empty block is no news).
    poisoned: bool,
}

/// A cursor over the tokens of one statement.
struct Cursor<'t> {
    toks: &'t [Token],
    pos: usize,
}

impl<'t> Cursor<'t> {
    fn new(toks: &'t [Token]) -> Self {
        Cursor { toks, pos: 0 }
    }

    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }

    fn peek_kind(&self) -> Option<&'t TokenKind> {
        self.peek().map(|t| &t.kind)
    }

    fn peek_word(&self) -> Option<&'t str> {
        self.peek().and_then(|t| t.word())
    }

    fn bump(&mut self) -> Option<&'t Token> {
        let t = self.toks.get(self.pos);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, kind: &TokenKind) -> Option<&'t Token> {
        if self.peek_kind() == Some(kind) {
            self.bump()
        } else {
            None
        }
    }

    fn eat_word(&mut self, w: &str) -> Option<&'t Token> {
        if self.peek_word() == Some(w) {
            self.bump()
        } else {
            None
        }
    }

    /// The last token consumed (or the first, if none was).
    fn last(&self) -> Option<&'t Token> {
        self.toks.get(self.pos.saturating_sub(1))
    }

    /// A zero-length span after the last consumed token.
    fn after_last(&self) -> Span {
        self.last().map(Token::after).unwrap_or_default()
    }

    /// From `start` to the end of the last consumed token.
    fn span_from(&self, start: Span) -> Span {
        match self.last() {
            Some(t) => start.to(t.span),
            None => start,
        }
    }

    /// From the next token to the end of the statement.
    fn rest_span(&self) -> Span {
        match (self.peek(), self.toks.last()) {
            (Some(a), Some(b)) => a.span.to(b.span),
            _ => self.after_last(),
        }
    }

    /// "expected WHAT, found `x`" at the next token, or at the end of the statement.
    fn expected(&self, what: &str) -> Diag {
        match self.peek() {
            Some(t) => Diag::new(t.span, format!("expected {what}, found `{}`", t.text)),
            None => Diag::new(
                self.after_last(),
                format!("expected {what} at the end of the statement"),
            ),
        }
    }

    /// Checks that the statement is complete.
    fn finish(&self) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(Diag::new(
                self.rest_span(),
                format!("unexpected `{}` after the end of the statement", t.text),
            )
            .help("one statement per line; separate statements on one line with `;`")),
        }
    }

    /// Statements other than steps take no `=> OUTCOME`.
    fn no_outcome(&self, what: &str) -> PResult<()> {
        match self.peek() {
            Some(t) if t.kind == TokenKind::Arrow => Err(Diag::new(
                self.rest_span(),
                format!("`{what}` takes no outcome"),
            )
            .help("only steps (`CONTEXT: OP ...`) end with `=> OUTCOME`")),
            _ => Ok(()),
        }
    }
}

/// `khugepaged` starts the header line (not kernel work missing its `kernel:`)
/// when it stands alone, sets something (`=`) or names a `max_ptes_` key.
fn khugepaged_header_form(seg: &[Token]) -> bool {
    seg.len() == 1
        || seg.iter().any(|t| t.kind == TokenKind::Eq)
        || seg
            .get(1)
            .and_then(|t| t.word())
            .is_some_and(|w| w.starts_with("max_ptes"))
}

fn is_step(seg: &[Token]) -> bool {
    matches!(seg.get(1).map(|t| &t.kind), Some(TokenKind::Colon))
}

impl Parser {
    fn line(&mut self, toks: &[Token]) {
        let segs: Vec<&[Token]> = toks.split(|t| t.kind == TokenKind::Semi).collect();
        for (k, seg) in segs.iter().enumerate() {
            let Some(first) = seg.first() else { continue };
            if first.word() == Some("thread") && !is_step(seg) {
                let rest = segs.get(k + 1..).unwrap_or(&[]);
                if let Err(d) = self.thread(seg, rest) {
                    self.fail(d);
                }
                return;
            }
            if let Err(d) = self.statement(seg) {
                self.fail(d);
            }
        }
    }

    fn fail(&mut self, d: Diag) {
        if let Some(b) = self.block.as_mut() {
            b.poisoned = true;
        }
        self.errors.push(d);
    }

    fn start_body(&mut self, span: Span) {
        if self.body.is_none() {
            self.body = Some(span);
        }
    }

    fn statement(&mut self, seg: &[Token]) -> PResult<()> {
        let mut c = Cursor::new(seg);
        let Some(first) = c.peek() else { return Ok(()) };
        let keyword = if is_step(seg) { None } else { first.word() };
        if self.block.is_some() && keyword != Some("end") {
            return Err(if keyword == Some("together") {
                Diag::new(first.span, "`together` blocks cannot be nested")
                    .help("close the open block with `end` first")
            } else {
                Diag::new(
                    c.rest_span(),
                    format!("only `thread` lines may appear inside `together`, found `{}`", first.text),
                )
                .help("write `thread P: step; step` (one thread a line), and close the block with `end`")
            });
        }
        if is_step(seg) {
            let step = step(&mut c)?;
            self.start_body(step.span);
            self.items.push(Item::Step(step));
            return Ok(());
        }
        let Some(word) = first.word() else {
            return Err(Diag::new(
                first.span,
                format!("expected a statement, found `{}`", first.text),
            )
            .help("a step is written `CONTEXT: OP ARGS`, e.g. `P: mmap A 2h`"));
        };
        c.bump();
        match word {
            "process" => {
                let name = process_name(&mut c, "process")?;
                c.no_outcome("process")?;
                c.finish()?;
                let span = c.span_from(first.span);
                self.items.push(Item::Process(Spanned::new(name, span)));
            }
            "together" => {
                c.finish()?;
                self.start_body(first.span);
                self.block = Some(Block {
                    span: first.span,
                    threads: Vec::new(),
                    poisoned: false,
                });
            }
            "end" => {
                c.finish()?;
                let Some(block) = self.block.take() else {
                    return Err(Diag::new(first.span, "`end` without `together`"));
                };
                if block.threads.is_empty() {
                    if block.poisoned {
                        return Ok(());
                    }
                    return Err(Diag::new(block.span, "empty `together` block").help(
                        "add `thread CONTEXT: step; ...` lines between `together` and `end`",
                    ));
                }
                self.items.push(Item::Together(Together {
                    span: block.span,
                    threads: block.threads,
                }));
            }
            "expect" => {
                let e = expect(&mut c, first.span)?;
                self.start_body(e.span);
                self.items.push(Item::Expect(e));
            }
            "show" => {
                let process = process_name(&mut c, "process")?;
                let target = parse_target(&mut c, Want::Either, "show", "region")?;
                c.no_outcome("show")?;
                c.finish()?;
                let span = c.span_from(first.span);
                self.start_body(span);
                self.items.push(Item::Show(Show {
                    span,
                    process,
                    target,
                }));
            }
            "kernel" if seg.get(1).is_some_and(|t| t.word().is_some()) => {
                let op = seg.get(1).and_then(|t| t.word()).unwrap_or("");
                return Err(Diag::new(first.span, "missing `:` after `kernel`").help(format!(
                    "kernel work is written `kernel: {op} ...`; the header line `kernel {}` selects the kernel design",
                    KernelVersion::keywords()
                )));
            }
            // `khugepaged KEY=N ...` is the header line; `khugepaged P A[..]`
            // is kernel work without its context.
            "khugepaged" if !khugepaged_header_form(seg) => {
                return Err(self.unknown_statement(first, "khugepaged", seg))
            }
            w if HEADER_KEYS.contains(&w) => self.header_line(first, &mut c)?,
            w => return Err(self.unknown_statement(first, w, seg)),
        }
        Ok(())
    }

    fn unknown_statement(&self, first: &Token, w: &str, seg: &[Token]) -> Diag {
        // `mirror read M[0]`: the context, not the operation.
        if let Some(op) = seg.get(1).and_then(|t| t.word()) {
            if w == "mirror" && MIRROR_OPS.contains(&op) {
                return Diag::new(first.span, "missing `:` after `mirror`")
                    .help(format!("a step is written `mirror: {op} M[...]`"));
            }
        }
        if PROCESS_OPS.contains(&w) || KERNEL_OPS.contains(&w) {
            let ctx = if KERNEL_OPS.contains(&w) {
                "kernel"
            } else {
                "P"
            };
            return Diag::new(first.span, format!("`{w}` needs a context")).help(format!(
                "a step is written `CONTEXT: OP ARGS`, e.g. `{ctx}: {w} ...`"
            ));
        }
        let (d, keywords) = if self.body.is_none() {
            (
                Diag::new(first.span, format!("unknown header key `{w}`")),
                HEADER_KEYS,
            )
        } else {
            (
                Diag::new(first.span, format!("unknown statement `{w}`")),
                STATEMENTS,
            )
        };
        if let Some(s) = suggest(w, HEADER_KEYS.iter().chain(STATEMENTS).copied()) {
            return d.help(format!("did you mean `{s}`?"));
        }
        if let Some(op) = seg.get(1).and_then(|t| t.word()) {
            if PROCESS_OPS.contains(&op) || KERNEL_OPS.contains(&op) {
                return d.help(format!("missing `:`? a step is written `{w}: {op} ...`"));
            }
        }
        if self.body.is_none() {
            d.help(format!(
                "header keys: {}; a step is written `CONTEXT: OP ARGS`",
                keywords.join(" | ")
            ))
        } else {
            d.help("a statement is a step `CONTEXT: OP ARGS`, `process P`, `together`, `expect` or `show`")
        }
    }

    fn header_line(&mut self, key: &Token, c: &mut Cursor<'_>) -> PResult<()> {
        let k = key.word().unwrap_or("");
        if let Some(body) = self.body {
            return Err(
                Diag::new(key.span, "header lines must come before the first step")
                    .help(format!("move this line above line {}", body.line)),
            );
        }
        let dup = |old: Option<Span>| -> PResult<()> {
            match old {
                Some(o) => Err(Diag::new(key.span, format!("duplicate `{k}` line"))
                    .help(format!("`{k}` is already set on line {}", o.line))),
                None => Ok(()),
            }
        };
        let h = &mut self.header;
        match k {
            "geometry" => {
                dup(h.geometry.as_ref().map(|v| v.span))?;
                h.geometry = Some(keyword_arg(
                    c,
                    Geometry::from_keyword,
                    &Geometry::keywords(),
                    "geometry",
                )?);
            }
            "thp" => {
                dup(h.thp.as_ref().map(|v| v.span))?;
                h.thp = Some(keyword_arg(
                    c,
                    ThpPolicy::from_keyword,
                    &ThpPolicy::keywords(),
                    "THP policy",
                )?);
            }
            "zero-page" => {
                dup(h.zero_page.as_ref().map(|v| v.span))?;
                let on_off = |w: &str| match w {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                };
                h.zero_page = Some(keyword_arg(c, on_off, "on | off", "zero-page setting")?);
            }
            "nodes" => {
                dup(h.nodes.as_ref().map(|v| v.span))?;
                let n = count(c, "the number of nodes")?;
                let v = u32::try_from(n.value)
                    .ok()
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| {
                        Diag::new(n.span, "the number of nodes must be between 1 and 2^32-1")
                    })?;
                h.nodes = Some(Spanned::new(v, n.span));
            }
            "hugetlb-pool" => {
                dup(h.hugetlb_pool.as_ref().map(|v| v.span))?;
                h.hugetlb_pool = Some(count(c, "the hugetlb pool size (a number of pages)")?);
            }
            "swap" => {
                dup(h.swap.as_ref().map(|v| v.span))?;
                h.swap = Some(quantity(c, "a swap size")?);
            }
            "memory" => {
                dup(h.memory.as_ref().map(|v| v.span))?;
                h.memory = Some(quantity(c, "a memory size")?);
            }
            "kernel" => {
                dup(h.kernel.as_ref().map(|v| v.span))?;
                h.kernel = Some(kernel_version(c)?);
            }
            "khugepaged" => {
                dup(h.khugepaged.as_ref().map(|v| v.span))?;
                h.khugepaged = Some(khugepaged_settings(c, key.span)?);
            }
            _ => {
                // revert NAME
                let t = match c.peek() {
                    Some(t) if t.word().is_some() => t,
                    _ => return Err(c.expected("the name of a fix (`thpsim fixes` lists them)")),
                };
                c.bump();
                if let Some(old) = h.reverts.iter().find(|r| r.value == t.text) {
                    return Err(
                        Diag::new(t.span, format!("`revert {}` is given twice", t.text))
                            .help(format!("first on line {}", old.span.line)),
                    );
                }
                h.reverts.push(Spanned::new(t.text.clone(), t.span));
            }
        }
        c.no_outcome(k)?;
        c.finish()
    }

    /// `thread CTX: step; step; ...` (`rest` are the statements after it on the line).
    fn thread(&mut self, seg: &[Token], rest: &[&[Token]]) -> PResult<()> {
        let mut c = Cursor::new(seg);
        let Some(first) = c.bump() else { return Ok(()) };
        if self.block.is_none() {
            return Err(Diag::new(first.span, "`thread` outside a `together` block")
                .help("write `together` on the line before, and `end` after the last thread"));
        }
        if c.peek().is_none() {
            return Err(
                c.expected("the thread's context (a process, `kernel`, `device` or `mirror`)")
            );
        }
        let ctx_span = c.peek().map(|t| t.span).unwrap_or_default();
        let ctx = context(&mut c)?;
        if c.eat(&TokenKind::Colon).is_none() {
            return Err(c.expected("`:` after the thread's context"));
        }
        if c.peek().is_none() {
            return Err(
                Diag::new(c.after_last(), "a thread needs at least one step")
                    .help("write `thread P: step; step; ...`"),
            );
        }
        let mut s = step_body(&mut c, ctx.clone())?;
        s.span = ctx_span.to(s.span);
        let mut steps = vec![s];
        for seg in rest {
            let mut c = Cursor::new(seg);
            let Some(t) = c.peek() else { continue };
            let mut this = ctx.clone();
            if is_step(seg) {
                // The context may be restated: `thread P: exit; P: exit`.
                this = context(&mut c)?;
                c.bump();
                if this.to_string() != ctx.to_string() {
                    return Err(Diag::new(
                        t.span,
                        format!("this thread runs as `{ctx}`, not `{this}`"),
                    )
                    .help("a thread's steps all run in its context; start another `thread` line"));
                }
            } else if t.word() == Some("thread") {
                return Err(Diag::new(t.span, "`thread` must start its own line"));
            }
            let mut s = step_body(&mut c, this)?;
            s.span = t.span.to(s.span);
            steps.push(s);
        }
        let span = match steps.last() {
            Some(s) => first.span.to(s.span),
            None => first.span,
        };
        if let Some(block) = self.block.as_mut() {
            block.threads.push(Thread {
                span,
                context: ctx,
                steps,
            });
        }
        Ok(())
    }
}

fn is_name(w: &str) -> bool {
    let mut cs = w.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A name of the given kind (`process`, `region`, `pin`, `file`).
fn name(c: &mut Cursor<'_>, what: &str) -> PResult<Name> {
    let Some(t) = c.peek() else {
        return Err(c.expected(&format!("a {what} name")));
    };
    match t.word() {
        Some(w) if is_name(w) => {
            c.bump();
            Ok(Name {
                text: w.to_string(),
                span: t.span,
            })
        }
        Some(w) => Err(Diag::new(t.span, format!("bad {what} name `{w}`"))
            .help("names are letters, digits and `_`, and start with a letter or `_`")),
        None => Err(c.expected(&format!("a {what} name"))),
    }
}

/// A process name (not `kernel`, `device` or `mirror`).
fn process_name(c: &mut Cursor<'_>, what: &str) -> PResult<Name> {
    let n = name(c, what)?;
    if CONTEXTS.contains(&n.text.as_str()) {
        return Err(Diag::new(
            n.span,
            format!("`{}` is a context, not a process name", n.text),
        )
        .help("choose another name for the process"));
    }
    Ok(n)
}

/// The context before `:` (the cursor is at it).
fn context(c: &mut Cursor<'_>) -> PResult<Context> {
    let Some(t) = c.peek() else {
        return Err(c.expected("a context"));
    };
    let ctx = match t.word() {
        Some("kernel") => Context::Kernel,
        Some("device") => Context::Device,
        Some("mirror") => Context::Mirror,
        Some(w) if is_name(w) => Context::Process(Name {
            text: w.to_string(),
            span: t.span,
        }),
        _ => {
            return Err(Diag::new(t.span, format!("unknown context `{}`", t.text))
                .help("a context is a process name, `kernel`, `device` or `mirror`"))
        }
    };
    c.bump();
    Ok(ctx)
}

/// `CONTEXT: OP ARGS [=> OUTCOME]`.
fn step(c: &mut Cursor<'_>) -> PResult<Step> {
    let start = c.peek().map(|t| t.span).unwrap_or_default();
    let ctx = context(c)?;
    if c.eat(&TokenKind::Colon).is_none() {
        return Err(c.expected("`:`"));
    }
    let mut s = step_body(c, ctx)?;
    s.span = start.to(s.span);
    Ok(s)
}

/// `OP ARGS [=> OUTCOME]` in the given context.
fn step_body(c: &mut Cursor<'_>, ctx: Context) -> PResult<Step> {
    let Some(op_tok) = c.peek() else {
        return Err(c.expected(&format!("an operation after `{ctx}:`")));
    };
    let Some(word) = op_tok.word() else {
        return Err(c.expected("an operation"));
    };
    c.bump();
    let op = op(c, &ctx, word, op_tok)?;
    let outcome = if c.eat(&TokenKind::Arrow).is_some() {
        Some(keyword_arg(
            c,
            Outcome::from_keyword,
            &Outcome::keywords(),
            "outcome",
        )?)
    } else {
        None
    };
    c.finish()?;
    Ok(Step {
        span: c.span_from(op_tok.span),
        op_span: op_tok.span,
        context: ctx,
        op,
        outcome,
    })
}

fn op(c: &mut Cursor<'_>, ctx: &Context, word: &str, op_tok: &Token) -> PResult<Op> {
    let allowed = match ctx {
        Context::Process(_) => PROCESS_OPS,
        Context::Kernel => KERNEL_OPS,
        Context::Device => DEVICE_OPS,
        Context::Mirror => MIRROR_OPS,
    };
    if !allowed.contains(&word) {
        let span = op_tok.span;
        return Err(if word == "expect" || word == "show" {
            Diag::new(span, format!("`{word}` is written without a context")).help(format!(
                "e.g. `{word} P A[0]{}`",
                if word == "expect" { " thp-pmd" } else { "" }
            ))
        } else if PROCESS_OPS.contains(&word) {
            let also = if DEVICE_OPS.contains(&word) {
                ", `device` or `mirror`"
            } else {
                ""
            };
            Diag::new(
                span,
                format!("`{word}` needs a process{also} context, not `{ctx}`"),
            )
            .help(format!("write `P: {word} ...`"))
        } else if KERNEL_OPS.contains(&word) {
            Diag::new(
                span,
                format!("`{word}` is kernel work: it needs the `kernel` context, not `{ctx}`"),
            )
            .help(format!("write `kernel: {word} ...`"))
        } else {
            let d = Diag::new(span, format!("unknown operation `{word}`"));
            match suggest(word, allowed.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!(
                    "operations in this context: {}",
                    allowed.join(" | ")
                )),
            }
        });
    }
    let op = match (ctx, word) {
        (Context::Device, "write") => Op::DeviceWrite {
            target: parse_target(c, Want::Either, "write", "pin")?,
            value: assign_byte(c, "write")?,
        },
        (Context::Device, _) => Op::DeviceRead {
            target: parse_target(c, Want::Place, "read", "pin")?,
            expect: compare_byte(c)?,
        },
        (Context::Mirror, "write") => Op::MirrorWrite {
            target: parse_target(c, Want::Either, "write", "mirror")?,
            value: assign_byte(c, "write")?,
        },
        (Context::Mirror, _) => Op::MirrorRead {
            target: parse_target(c, Want::Place, "read", "mirror")?,
            expect: compare_byte(c)?,
        },
        (_, "fork") => Op::Fork {
            child: process_name(c, "child process")?,
        },
        (_, "exit") => Op::Exit,
        (_, "mmap") => mmap(c)?,
        (_, "memfd") => {
            let file = name(c, "file")?;
            let size = quantity(c, "a size")?;
            let hugetlb = c.eat_word("hugetlb").is_some();
            Op::Memfd {
                file,
                size,
                hugetlb,
            }
        }
        (_, "munmap") => Op::Munmap {
            target: parse_target(c, Want::Range, word, "region")?,
        },
        (_, "mlock") => Op::Mlock {
            target: parse_target(c, Want::Range, word, "region")?,
        },
        (_, "munlock") => Op::Munlock {
            target: parse_target(c, Want::Range, word, "region")?,
        },
        (_, "mprotect") => Op::Mprotect {
            target: parse_target(c, Want::Range, word, "region")?,
            prot: keyword_arg(
                c,
                Protection::from_keyword,
                &Protection::keywords(),
                "protection",
            )?,
        },
        (_, "madvise") => Op::Madvise {
            target: parse_target(c, Want::Range, word, "region")?,
            advice: keyword_arg(c, Advice::from_keyword, &Advice::keywords(), "advice")?,
        },
        (_, "move-pages") => {
            let target = parse_target(c, Want::Range, word, "region")?;
            if c.eat_word("node").is_none() {
                return Err(c.expected("`node=N`"));
            }
            if c.eat(&TokenKind::Eq).is_none() {
                return Err(c.expected("`=` after `node`"));
            }
            let node = node_number(c)?;
            let all = c.eat_word("all").is_some();
            Op::MovePages { target, node, all }
        }
        (_, "write") => Op::Write {
            target: parse_target(c, Want::Either, word, "region")?,
            value: assign_byte(c, "write")?,
        },
        (_, "read") => Op::Read {
            target: parse_target(c, Want::Place, word, "region")?,
            expect: compare_byte(c)?,
        },
        (_, "pin") => pin(c)?,
        (_, "mirror") => {
            let mirror = name(c, "mirror")?;
            if c.eat(&TokenKind::Eq).is_none() {
                return Err(c.expected("`=` after the mirror's name (`mirror M = A[0..1h]`)"));
            }
            Op::Mirror {
                mirror,
                target: parse_target(c, Want::Range, word, "region")?,
            }
        }
        (_, "unpin") => Op::Unpin {
            pin: name(c, "pin")?,
        },
        (_, "split-huge-page") => Op::SplitHugePage {
            process: process_name(c, "process")?,
            target: parse_target(c, Want::Place, word, "region")?,
        },
        (_, "khugepaged") => Op::Khugepaged {
            process: process_name(c, "process")?,
            target: parse_target(c, Want::Range, word, "region")?,
        },
        (_, "reclaim") => Op::Reclaim {
            process: process_name(c, "process")?,
            target: parse_target(c, Want::Range, word, "region")?,
        },
        _ => Op::DeferredSplit,
    };
    Ok(op)
}

/// `pin R = RANGE [write] [fast]` (modifiers in any order, each at most once).
fn pin(c: &mut Cursor<'_>) -> PResult<Op> {
    let pin = name(c, "pin")?;
    if c.eat(&TokenKind::Eq).is_none() {
        return Err(c.expected("`=` after the pin's name (`pin R = A[0..1h]`)"));
    }
    let target = parse_target(c, Want::Range, "pin", "region")?;
    let mut write: Option<Span> = None;
    let mut fast: Option<Span> = None;
    while let Some(t) = c.peek() {
        let Some(w) = t.word() else { break };
        let slot = match w {
            "write" => &mut write,
            "fast" => &mut fast,
            _ => {
                let d = Diag::new(t.span, format!("unknown pin option `{w}`"));
                return Err(match suggest(w, ["write", "fast"]) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help("pin options: write | fast (`pin R = A[0..1h] write fast`)"),
                });
            }
        };
        if let Some(first) = slot {
            return Err(Diag::new(t.span, format!("`{w}` is given twice"))
                .help(format!("first at column {}", first.column)));
        }
        *slot = Some(t.span);
        c.bump();
    }
    Ok(Op::Pin {
        pin,
        target,
        write: write.is_some(),
        fast: fast.is_some(),
    })
}

/// `kernel 5.8 | 3.16` (the cursor is after `kernel`).
fn kernel_version(c: &mut Cursor<'_>) -> PResult<Spanned<KernelVersion>> {
    let what = format!("the kernel version ({})", KernelVersion::keywords());
    let Some(t) = c.peek() else {
        return Err(c.expected(&what));
    };
    if !matches!(t.kind, TokenKind::Dotted | TokenKind::Number(_)) {
        return Err(c.expected(&what));
    }
    match KernelVersion::from_keyword(&t.text) {
        Some(v) => {
            c.bump();
            Ok(Spanned::new(v, t.span))
        }
        None => Err(
            Diag::new(t.span, format!("unknown kernel version `{}`", t.text)).help(format!(
                "the model follows one of: {} (default 5.8)",
                KernelVersion::keywords()
            )),
        ),
    }
}

/// `khugepaged KEY=N ...` (the cursor is after `khugepaged`): any subset of
/// the keys, each at most once, at least one.
fn khugepaged_settings(c: &mut Cursor<'_>, key: Span) -> PResult<KhugepagedSettings> {
    let keys = KhugepagedSettings::KEYS;
    let all = keys.map(|k| format!("{k}=N")).join(" | ");
    let mut k = KhugepagedSettings {
        span: key,
        ..KhugepagedSettings::default()
    };
    if c.peek().is_none() {
        return Err(c.expected(&format!("a khugepaged setting ({all})")));
    }
    while let Some(t) = c.peek() {
        if t.kind == TokenKind::Arrow {
            break;
        }
        let Some(w) = t.word() else {
            return Err(c.expected(&format!("a khugepaged setting ({all})")));
        };
        let slot = match w {
            "max_ptes_none" => &mut k.max_ptes_none,
            "max_ptes_swap" => &mut k.max_ptes_swap,
            "max_ptes_shared" => &mut k.max_ptes_shared,
            _ => {
                let d = Diag::new(t.span, format!("unknown khugepaged setting `{w}`"));
                return Err(match suggest(w, keys) {
                    Some(s) => d.help(format!("did you mean `{s}`? ({all})")),
                    None => d.help(format!("khugepaged settings: {all}")),
                });
            }
        };
        if let Some(first) = slot {
            return Err(Diag::new(t.span, format!("`{w}` is given twice"))
                .help(format!("first at column {}", first.span.column)));
        }
        c.bump();
        if c.eat(&TokenKind::Eq).is_none() {
            return Err(c.expected(&format!("`=` after `{w}` (`{w}=N`)")));
        }
        let n = count(c, &format!("the value of `{w}` (a number of PTEs)"))?;
        *slot = Some(Spanned::new(n.value, t.span.to(n.span)));
    }
    k.span = c.span_from(key);
    Ok(k)
}

/// `mmap A SIZE [shared] [hugetlb | file=F]` (modifiers in any order).
fn mmap(c: &mut Cursor<'_>) -> PResult<Op> {
    let region = name(c, "region")?;
    let size = quantity(c, "a size")?;
    let mut shared: Option<Span> = None;
    let mut backing: Option<Spanned<Backing>> = None;
    while let Some(t) = c.peek() {
        let Some(w) = t.word() else { break };
        let conflict = |b: &Spanned<Backing>| -> Diag {
            let was = match &b.value {
                Backing::File(f) => format!("file={f}"),
                _ => "hugetlb".to_string(),
            };
            Diag::new(t.span, format!("`{w}` conflicts with `{was}`"))
                .help("a mapping is anonymous, `hugetlb` or `file=F`")
        };
        match w {
            "shared" => {
                if shared.is_some() {
                    return Err(Diag::new(t.span, "`shared` is given twice"));
                }
                shared = Some(t.span);
                c.bump();
            }
            "hugetlb" => {
                if let Some(b) = &backing {
                    return Err(conflict(b));
                }
                backing = Some(Spanned::new(Backing::Hugetlb, t.span));
                c.bump();
            }
            "file" => {
                if let Some(b) = &backing {
                    return Err(conflict(b));
                }
                c.bump();
                if c.eat(&TokenKind::Eq).is_none() {
                    return Err(c.expected("`=` after `file` (`file=F`)"));
                }
                let f = name(c, "file")?;
                let span = t.span.to(f.span);
                backing = Some(Spanned::new(Backing::File(f), span));
            }
            _ => {
                let d = Diag::new(t.span, format!("unknown mmap option `{w}`"));
                return Err(match suggest(w, ["shared", "hugetlb", "file"]) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help("mmap options: shared | hugetlb | file=F"),
                });
            }
        }
    }
    let backing = backing.unwrap_or_else(|| Spanned::new(Backing::Anon, size.span));
    if matches!(backing.value, Backing::File(_)) && shared.is_none() {
        return Err(
            Diag::new(backing.span, "a `file=F` mapping must be `shared`")
                .help("write `file=F shared`"),
        );
    }
    Ok(Op::Mmap {
        region,
        size,
        backing,
        shared: shared.is_some(),
    })
}

/// A keyword argument (advice, protection, outcome, ...).
fn keyword_arg<T>(
    c: &mut Cursor<'_>,
    from: impl Fn(&str) -> Option<T>,
    all: &str,
    what: &str,
) -> PResult<Spanned<T>> {
    let Some(t) = c.peek() else {
        return Err(c.expected(&format!("the {what} ({all})")));
    };
    let Some(w) = t.word() else {
        return Err(c.expected(&format!("the {what} ({all})")));
    };
    match from(w) {
        Some(v) => {
            c.bump();
            Ok(Spanned::new(v, t.span))
        }
        None => {
            let d = Diag::new(t.span, format!("unknown {what} `{w}`"));
            let options: Vec<&str> = all.split(" | ").collect();
            Err(match suggest(w, options) {
                Some(s) => d.help(format!("did you mean `{s}`? ({all})")),
                None => d.help(format!("expected one of: {all}")),
            })
        }
    }
}

fn number_token<'t>(c: &mut Cursor<'t>, what: &str) -> PResult<(&'t Token, Number)> {
    match c.peek() {
        Some(t) => match t.kind {
            TokenKind::Number(n) => {
                c.bump();
                Ok((t, n))
            }
            TokenKind::Dotted => {
                // `0.1`: a number has no fraction; point at the dot.
                let dot = t.text.find('.').unwrap_or(0);
                let span = Span {
                    offset: t.span.offset + dot,
                    len: 1,
                    line: t.span.line,
                    column: t.span.column + dot,
                };
                Err(Diag::new(span, "unexpected `.`").help(
                    "numbers have no fraction; a range is written `A[start..end]`, with two dots",
                ))
            }
            _ => Err(c.expected(what)),
        },
        None => Err(c.expected(what)),
    }
}

/// A size or offset: `NUM[unit] (+ NUM[unit])*`. It must resolve with the
/// largest units (x86_64) so that it resolves in every geometry.
fn quantity(c: &mut Cursor<'_>, what: &str) -> PResult<Quantity> {
    let (t, n) = number_token(c, what)?;
    let mut span = t.span;
    let mut terms = vec![(n.value, n.unit)];
    while c.eat(&TokenKind::Plus).is_some() {
        let (t, n) = number_token(c, "a number after `+`")?;
        span = span.to(t.span);
        terms.push((n.value, n.unit));
    }
    let q = Quantity { span, terms };
    q.resolve(&UnitSizes::X86_64).map_err(|e| {
        Diag::new(q.span, e.message).help("sizes must fit in 64 bits in every geometry")
    })?;
    Ok(q)
}

/// A plain number: no unit, no sum.
fn count(c: &mut Cursor<'_>, what: &str) -> PResult<Spanned<u64>> {
    let (t, n) = number_token(c, what)?;
    if n.explicit_unit {
        return Err(Diag::new(
            t.span,
            format!(
                "expected {what}, a plain number without a unit, found `{}`",
                t.text
            ),
        ));
    }
    if let Some(p) = c.peek().filter(|p| p.kind == TokenKind::Plus) {
        return Err(Diag::new(
            p.span,
            format!("{what} is a plain number, not a sum"),
        ));
    }
    Ok(Spanned::new(n.value, t.span))
}

fn node_number(c: &mut Cursor<'_>) -> PResult<Spanned<u32>> {
    let n = count(c, "a node number")?;
    let v = u32::try_from(n.value).map_err(|_| Diag::new(n.span, "node number too large"))?;
    Ok(Spanned::new(v, n.span))
}

/// A byte value (0..=255).
fn byte(c: &mut Cursor<'_>) -> PResult<Spanned<u8>> {
    let n = count(c, "a byte value")?;
    let v = u8::try_from(n.value).map_err(|_| {
        Diag::new(
            n.span,
            format!("byte value {} is out of range (0..=255)", n.value),
        )
        .help("a write fills with one byte, e.g. `= 0x11`")
    })?;
    Ok(Spanned::new(v, n.span))
}

/// `= BYTE`.
fn assign_byte(c: &mut Cursor<'_>, op: &str) -> PResult<Spanned<u8>> {
    if c.eat(&TokenKind::Eq).is_none() {
        let at = c.peek().map_or(c.after_last(), |t| t.span);
        return Err(
            Diag::new(at, format!("missing `=` in `{op}`")).help(format!(
                "the byte to write follows `=`, e.g. `{op} A[0..1p] = 0x11`"
            )),
        );
    }
    byte(c)
}

/// `[== BYTE]`.
fn compare_byte(c: &mut Cursor<'_>) -> PResult<Option<Spanned<u8>>> {
    if let Some(t) = c.eat(&TokenKind::Eq) {
        return Err(Diag::new(t.span, "a read compares with `==`, not `=`")
            .help("write `read A[1p] == 0x22`"));
    }
    if c.eat(&TokenKind::EqEq).is_some() {
        return byte(c).map(Some);
    }
    Ok(None)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Place,
    Range,
    Either,
}

/// `A[off]`, `A[start..end]`, `A[start..]`, `A[..end]` or `A[..]`.
fn parse_target(c: &mut Cursor<'_>, want: Want, op: &str, what: &str) -> PResult<Target> {
    let region = name(c, what)?;
    let lb = match c.eat(&TokenKind::LBracket) {
        Some(t) => t,
        None => {
            return Err(c.expected(&format!("`[` after `{region}`")).help(format!(
            "a place is written `{region}[off]`, a range `{region}[start..end]` or `{region}[..]`"
        )))
        }
    };
    let selector = if c.eat(&TokenKind::DotDot).is_some() {
        let end = match c.peek_kind() {
            Some(TokenKind::RBracket) => None,
            _ => Some(quantity(c, "the end of the range or `]`")?),
        };
        Selector::Range { start: None, end }
    } else {
        let q = quantity(c, "an offset or a range")?;
        if c.eat(&TokenKind::DotDot).is_some() {
            let end = match c.peek_kind() {
                Some(TokenKind::RBracket) => None,
                _ => Some(quantity(c, "the end of the range or `]`")?),
            };
            Selector::Range {
                start: Some(q),
                end,
            }
        } else {
            Selector::At(q)
        }
    };
    let Some(rb) = c.eat(&TokenKind::RBracket) else {
        return Err(c.expected("`]`"));
    };
    let selector_span = lb.span.to(rb.span);
    match (want, selector.is_place()) {
        (Want::Range, true) => {
            return Err(Diag::new(
                selector_span,
                format!("`{op}` needs a range such as `{region}[0..1p]` or `{region}[..]`, not a single place"),
            ))
        }
        (Want::Place, false) => {
            return Err(Diag::new(
                selector_span,
                format!("`{op}` needs a single place such as `{region}[1p]`, not a range"),
            ))
        }
        _ => {}
    }
    Ok(Target {
        span: region.span.to(rb.span),
        region,
        selector,
        selector_span,
    })
}

/// `expect P A[off] WHAT` (the cursor is after `expect`).
fn expect(c: &mut Cursor<'_>, start: Span) -> PResult<Expect> {
    const WHAT: &str = "none | zero | base | thp-pmd | thp-pte | hugetlb | swap | migration | mlocked | mapcount N | same P A[off] | other P A[off] | node N";
    let process = process_name(c, "process")?;
    let target = parse_target(c, Want::Place, "expect", "region")?;
    let Some(t) = c.peek() else {
        return Err(c.expected(&format!("what to expect ({WHAT})")));
    };
    let Some(w) = t.word() else {
        return Err(c.expected(&format!("what to expect ({WHAT})")));
    };
    c.bump();
    let what = match w {
        "mapcount" => Expectation::Mapcount(count(c, "a mapcount")?),
        "node" => Expectation::Node(node_number(c)?),
        "same" | "other" => {
            let process = process_name(c, "process")?;
            let target = parse_target(c, Want::Place, &format!("expect ... {w}"), "region")?;
            if w == "same" {
                Expectation::Same { process, target }
            } else {
                Expectation::Other { process, target }
            }
        }
        _ => match PageKind::from_keyword(w) {
            Some(k) => Expectation::Kind(Spanned::new(k, t.span)),
            None => {
                let d = Diag::new(t.span, format!("unknown page kind `{w}`"));
                let options = PageKind::ALL
                    .iter()
                    .map(|k| k.keyword())
                    .chain(["mapcount", "same", "other", "node"]);
                return Err(match suggest(w, options) {
                    Some(s) => d.help(format!("did you mean `{s}`? ({WHAT})")),
                    None => d.help(format!("expected one of: {WHAT}")),
                });
            }
        },
    };
    c.no_outcome("expect")?;
    c.finish()?;
    Ok(Expect {
        span: c.span_from(start),
        process,
        target,
        what,
    })
}
