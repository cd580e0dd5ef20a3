//! The thpsim scenario language (see `SCENARIO-LANGUAGE.md`, the contract).
//!
//! [`parse`] turns a `.thp` file into a typed, statically checked [`Scenario`]:
//!
//! - `lexer` splits lines into tokens (words, numbers with units,
//!   punctuation; `#` comments);
//! - `parser` builds the syntax tree ([`Header`], [`Item`], [`Step`],
//!   [`Op`], ...), every step, name and quantity with its [`Span`];
//! - `check` checks the header (reverts against the kernel, khugepaged
//!   limits) and resolves names flow-sensitively (declared processes, mapped
//!   regions, files, pins, mirrors; `together` blocks; see that module's
//!   docs), and provides [`check_supported`];
//! - `kernel` holds the one table of which kernel has which seed fix
//!   ([`SEED_FIXES`], [`KernelVersion::has_fix`]);
//! - `error` holds [`ScenarioError`].
//!
//! Errors name the line and column, show the offending text through miette,
//! and the first one (by position) is reported, later ones in `related`. No
//! input makes the parser panic.
//!
//! Quantities stay unresolved ([`Quantity`]) because the units `p`, `h` and
//! `u` follow the geometry, which the command line may override; resolve them
//! with [`Quantity::resolve`] and a [`UnitSizes`] (e.g.
//! [`Scenario::unit_sizes`]). At parse time every quantity must fit in 64
//! bits with the x86_64 sizes (the largest), so it does in every geometry.
//! Some static checks depend on the geometry (the lengths of pins and
//! mirrors, khugepaged limits): [`parse`] makes them in the header's
//! geometry, [`Scenario::check_geometry`] for another one. Defaults of absent
//! header lines are [`Header`]'s methods ([`Header::thp`], [`Header::kernel`],
//! [`Header::khugepaged_limits`], ...).
//! Each operation, header line and `expect` names the [`Feature`] it needs;
//! [`check_supported`] rejects what the model cannot run yet.
//!
//! Choices where the contract is silent:
//! - `process P` may appear anywhere, also among the header lines; header
//!   lines must come before the first step, `together`, `expect` or `show`;
//! - `revert NAME` may repeat with different names; every other header key,
//!   and the same `revert NAME`, at most once;
//! - a `revert` of a seed fix the selected kernel does not have is an error at
//!   parse time, whatever the order of the `kernel` and `revert` lines (the
//!   table is [`SEED_FIXES`]); a name that is no seed fix is left to the
//!   runner, so the contract's `revert NAME` example parses;
//! - the `khugepaged` line sets at least one of `max_ptes_none`,
//!   `max_ptes_swap`, `max_ptes_shared`, each at most once, in any order, as
//!   plain numbers (decimal or hex, no unit); a value above HPAGE_PMD_NR-1 is
//!   an error in the file's geometry at parse time and in an overriding
//!   geometry when the runner calls [`Scenario::check_geometry`];
//! - `kernel 3.16` has only `max_ptes_none` (`max_ptes_swap` and
//!   `max_ptes_shared` came later): setting the others is an error, and
//!   3.16's swap and shared limits are 0, as its scan gives up on a swap
//!   entry or a page with another reference ([`KhugepagedLimits::defaults`]);
//! - a `file=F` mapping must be `shared`; mmap modifiers come in any order;
//! - `pin` modifiers `write` and `fast` come in any order, each at most once;
//!   `fast` without `write` is a read-only pin_user_pages_fast(); a `device:`
//!   write through a read-only pin is accepted (the DMA engine is not bound by
//!   the pin's direction);
//! - `device:` and `mirror:` accesses are checked against the length of
//!   their pin or mirror in the geometry (regions as mmap rounds them: to a
//!   base page, to a huge page for hugetlb); a pin or mirror whose range is
//!   not inside its region fails at run time and nothing is checked against
//!   it;
//! - mirror names are their own namespace (a pin and a mirror may share a
//!   name); there is no `unmirror`: a mirror stays registered to the end, also
//!   after its process exits (accesses then fail at run time); `mirror`, like
//!   `kernel` and `device`, is no process name;
//! - a `move-pages` node at or above `nodes N` is an error at parse time;
//!   `all` follows `node=N`;
//! - `expect ... mlocked` checks the page flag, whatever is mapped there;
//! - in a thread, later steps may restate the thread's context (`P: exit`).
//!
//! Extensions to the contract: ranges `A[start..]` and `A[..end]`.
//!
//! ```
//! let s = thpsim_scenario::parse("t.thp", "process P\nP: mmap A 2h\nP: write A[..] = 1").unwrap();
//! assert_eq!(s.steps().count(), 2);
//! let e = thpsim_scenario::parse("t.thp", "process P\nP: mmapp A 2h").unwrap_err();
//! assert_eq!(e.to_string(), "line 2, column 4: unknown operation `mmapp`");
//! ```

mod ast;
mod check;
mod error;
mod kernel;
mod lexer;
mod parser;

pub use ast::*;
pub use check::check_supported;
pub use error::ScenarioError;
pub use kernel::{Release, SeedFix, SEED_FIXES};

/// At most this many further errors are attached to the first one.
const MAX_RELATED: usize = 20;

/// Parses and checks a scenario. `name` (usually the file name) labels the
/// source in error reports. On failure the first error (by position) is
/// returned, with further ones in its `related` list.
pub fn parse(name: &str, src: &str) -> Result<Scenario, ScenarioError> {
    let (lines, mut errors) = lexer::lex(src);
    let parsed = parser::parse_lines(&lines);
    errors.extend(parsed.errors);
    errors.sort_by_key(|d| d.span.offset);
    // A name error after a syntax error may only be a consequence of the
    // statement that failed to parse: report it only if it comes first.
    let units = parsed.header.geometry().unit_sizes();
    if let Err(d) = check::check(&parsed.header, &parsed.items, &units) {
        let comes_first = match errors.first() {
            Some(first) => d.span.offset < first.span.offset,
            None => true,
        };
        if comes_first {
            errors.insert(0, d);
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(Scenario {
            name: name.to_string(),
            source: src.to_string(),
            header: parsed.header,
            items: parsed.items,
        }),
        Some(first) => {
            let mut e = first.into_error();
            e.related = errors.take(MAX_RELATED).map(|d| d.into_error()).collect();
            Err(e.with_source(name, src))
        }
    }
}
