//! Static checks: the header's consistency, which processes, regions, files,
//! pins and mirrors exist at each statement (flow-sensitive), and which
//! features a scenario needs.
//!
//! The header (in the header's geometry, see [`crate::Scenario::check_geometry`]
//! for another one):
//! - a `revert NAME` of a seed fix the selected kernel does not have is an
//!   error (the table is in [`crate::SEED_FIXES`]);
//! - khugepaged limits are at most HPAGE_PMD_NR-1, and `kernel 3.16` has
//!   only `max_ptes_none`.
//!
//! The body:
//! - a process exists once declared (`process P`) or forked (`P: fork C`);
//!   names are never reused, even after `exit`; an exited process runs no
//!   more steps and cannot be named by kernel work, `expect` or `show`;
//! - `mmap` adds a region name to its process; `fork` copies the parent's
//!   region names to the child; a name stays known after `munmap` (touching
//!   it then is a run-time fault, not a file error); mapping a name the
//!   process already has is an error;
//! - `memfd` creates a file (one namespace for the whole scenario) that
//!   `mmap ... file=F` needs;
//! - `pin R = ...` holds the pin `R` until `unpin R`; `device:` steps need it;
//!   their offsets are relative to the pin's start, and a place or range
//!   outside the pin (its length in this geometry) is an error;
//! - a `move-pages` target node is below `nodes N`;
//! - `mirror M = ...` registers the mirror `M` (its own namespace; a mirror
//!   stays registered to the end); `mirror:` steps need it and stay inside it,
//!   as `device:` steps do in their pin;
//! - in a `together` block each thread sees what existed before the block plus
//!   what its own earlier steps made; after the block, everything any thread
//!   made is visible (two threads making the same name is an error), and what
//!   any thread ended (`exit`, `unpin`) is gone.

use std::collections::BTreeMap;

use crate::ast::*;
use crate::error::{suggest, Diag, ScenarioError};
use crate::parser::CONTEXTS;

type CResult<T> = Result<T, Diag>;

/// A region name of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    /// Where `mmap` named it.
    span: Span,
    /// The mapping's length as mmap rounds it (to a page, or to a huge page
    /// for hugetlb), if it resolves.
    len: Option<u64>,
}

/// A shared memory file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct File {
    span: Span,
    hugetlb: bool,
}

/// A pin or a mirror: a name for a range of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    /// Where the name was given.
    span: Span,
    /// The range as written (`A[0..1h]`), for messages.
    range: String,
    /// Its length in bytes, when the range lies inside its region (otherwise
    /// the step fails at run time and nothing is checked against it).
    len: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    /// Where it was declared or forked.
    created: Span,
    by_fork: bool,
    exited: Option<Span>,
    regions: BTreeMap<String, Region>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// The geometry's unit sizes (for the lengths of pins and mirrors).
    units: UnitSizes,
    /// NUMA nodes (`nodes N`).
    nodes: u32,
    procs: BTreeMap<String, Proc>,
    files: BTreeMap<String, File>,
    pins: BTreeMap<String, Held>,
    mirrors: BTreeMap<String, Held>,
}

impl State {
    fn new(units: UnitSizes, nodes: u32) -> Self {
        State {
            units,
            nodes,
            procs: BTreeMap::new(),
            files: BTreeMap::new(),
            pins: BTreeMap::new(),
            mirrors: BTreeMap::new(),
        }
    }

    fn resolve(&self, q: &Quantity) -> CResult<u64> {
        q.resolve(&self.units)
            .map_err(|e| Diag::new(q.span, e.message))
    }

    /// The length of a range of a region of `len` bytes, if the range lies
    /// inside it.
    fn range_len(&self, sel: &Selector, len: Option<u64>) -> CResult<Option<u64>> {
        let Some(len) = len else { return Ok(None) };
        let Selector::Range { start, end } = sel else {
            return Ok(None);
        };
        let s = match start {
            Some(q) => self.resolve(q)?,
            None => 0,
        };
        let e = match end {
            Some(q) => self.resolve(q)?,
            None => len,
        };
        Ok((s < e && e <= len).then(|| e - s))
    }

    /// A `device:` or `mirror:` access inside its pin or mirror.
    fn inside(&self, what: &str, h: &Held, t: &Target) -> CResult<()> {
        let Some(len) = h.len else { return Ok(()) };
        let (s, e) = match &t.selector {
            Selector::At(q) => {
                let off = self.resolve(q)?;
                (off, off.saturating_add(1))
            }
            Selector::Range { start, end } => {
                let s = match start {
                    Some(q) => self.resolve(q)?,
                    None => 0,
                };
                let e = match end {
                    Some(q) => self.resolve(q)?,
                    None => len,
                };
                (s, e)
            }
        };
        if s >= e {
            return Err(Diag::new(
                t.selector_span,
                format!(
                    "empty range {}: the end must be after the start",
                    t.selector
                ),
            ));
        }
        if e > len {
            let r = &t.region;
            return Err(Diag::new(
                t.selector_span,
                format!(
                    "`{t}` is outside {what} `{r}`, which covers {len} bytes (`{}`, line {})",
                    h.range, h.span.line
                ),
            )
            .help(format!(
                "offsets in `{r}[...]` are relative to the start of the {what}"
            )));
        }
        Ok(())
    }

    fn live(&self, p: &Name) -> CResult<&Proc> {
        match self.procs.get(p.as_str()) {
            None => {
                let d = Diag::new(p.span, format!("undeclared process `{p}`"));
                Err(match suggest(p.as_str(), CONTEXTS.iter().copied()) {
                    Some(s) => d.help(format!("did you mean the `{s}` context?")),
                    None => d.help(format!(
                        "declare it with `process {p}` before its first step, or create it with `fork`"
                    )),
                })
            }
            Some(pr) => match pr.exited {
                Some(at) => Err(Diag::new(
                    p.span,
                    format!("process `{p}` has exited (line {})", at.line),
                )),
                None => Ok(pr),
            },
        }
    }

    fn region(&self, p: &Name, r: &Name) -> CResult<&Region> {
        let pr = self.live(p)?;
        if let Some(region) = pr.regions.get(r.as_str()) {
            return Ok(region);
        }
        let d = Diag::new(
            r.span,
            format!("region `{r}` was never mapped by process `{p}`"),
        );
        Err(
            match suggest(r.as_str(), pr.regions.keys().map(String::as_str)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("map it first: `{p}: mmap {r} SIZE`")),
            },
        )
    }

    fn pin(&self, r: &Name) -> CResult<&Held> {
        if let Some(h) = self.pins.get(r.as_str()) {
            return Ok(h);
        }
        Err(
            Diag::new(r.span, format!("unknown pin `{r}`")).help(format!(
                "a pin is taken by `P: pin {r} = A[..]` and held until `unpin {r}`"
            )),
        )
    }

    fn mirror(&self, m: &Name) -> CResult<&Held> {
        if let Some(h) = self.mirrors.get(m.as_str()) {
            return Ok(h);
        }
        let d = Diag::new(m.span, format!("unknown mirror `{m}`"));
        Err(
            match suggest(m.as_str(), self.mirrors.keys().map(String::as_str)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!(
                    "a mirror is registered by `P: mirror {m} = A[..]` before its first use"
                )),
            },
        )
    }

    /// What a pin or mirror over `t` (a range of `p`'s region) holds.
    fn held(&self, p: &Name, name: &Name, t: &Target) -> CResult<Held> {
        let region = self.region(p, &t.region)?;
        Ok(Held {
            span: name.span,
            range: t.to_string(),
            len: self.range_len(&t.selector, region.len)?,
        })
    }

    /// The length of a new mapping of `size`, as mmap rounds it.
    fn mapping_len(&self, size: &Quantity, backing: &Backing) -> CResult<Option<u64>> {
        let huge = match backing {
            Backing::Anon => false,
            Backing::Hugetlb => true,
            Backing::File(f) => self.files.get(f.as_str()).is_some_and(|f| f.hugetlb),
        };
        let unit = if huge {
            self.units.pmd_bytes
        } else {
            self.units.page_bytes
        };
        let len = self.resolve(size)?;
        Ok(len.checked_add(unit - 1).map(|l| l / unit * unit))
    }

    fn add_process(
        &mut self,
        n: &Name,
        by_fork: bool,
        regions: BTreeMap<String, Region>,
    ) -> CResult<()> {
        if let Some(old) = self.procs.get(n.as_str()) {
            let how = if old.by_fork {
                "created by `fork`"
            } else {
                "declared"
            };
            let msg = if by_fork || old.by_fork {
                format!(
                    "process `{n}` already exists ({how} on line {})",
                    old.created.line
                )
            } else {
                format!(
                    "process `{n}` is declared twice (first on line {})",
                    old.created.line
                )
            };
            return Err(
                Diag::new(n.span, msg).help("process names are never reused; choose another name")
            );
        }
        self.procs.insert(
            n.text.clone(),
            Proc {
                created: n.span,
                by_fork,
                exited: None,
                regions,
            },
        );
        Ok(())
    }

    fn step(&mut self, s: &Step) -> CResult<()> {
        match &s.op {
            Op::SplitHugePage { process, target }
            | Op::Khugepaged { process, target }
            | Op::Reclaim { process, target } => {
                return self.region(process, &target.region).map(|_| ())
            }
            Op::DeferredSplit => return Ok(()),
            Op::DeviceWrite { target, .. } | Op::DeviceRead { target, .. } => {
                let pin = self.pin(&target.region)?;
                return self.inside("pin", pin, target);
            }
            Op::MirrorWrite { target, .. } | Op::MirrorRead { target, .. } => {
                let mirror = self.mirror(&target.region)?;
                return self.inside("mirror", mirror, target);
            }
            _ => {}
        }
        // Process operations (the parser only allows them in a process context).
        let Context::Process(p) = &s.context else {
            return Ok(());
        };
        // In a thread, later steps share the `thread P:` name; blame the step.
        let ctx_span = if p.span.offset >= s.span.offset {
            p.span
        } else {
            s.op_span
        };
        let regions = self
            .live(p)
            .map_err(|d| Diag {
                span: ctx_span,
                ..d
            })?
            .regions
            .clone();
        match &s.op {
            Op::Fork { child } => self.add_process(child, true, regions),
            Op::Exit => {
                if let Some(pr) = self.procs.get_mut(p.as_str()) {
                    pr.exited = Some(s.op_span);
                }
                Ok(())
            }
            Op::Mmap {
                region,
                backing,
                size,
                ..
            } => {
                if let Backing::File(f) = &backing.value {
                    if !self.files.contains_key(f.as_str()) {
                        return Err(Diag::new(f.span, format!("unknown file `{f}`"))
                            .help(format!("create it first: `{p}: memfd {f} SIZE`")));
                    }
                }
                if let Some(at) = regions.get(region.as_str()) {
                    return Err(Diag::new(
                        region.span,
                        format!("process `{p}` already has a region `{region}` (line {})", at.span.line),
                    )
                    .help("a region name is mapped once per process (it stays known after munmap); choose another name"));
                }
                let len = self.mapping_len(size, &backing.value)?;
                if let Some(pr) = self.procs.get_mut(p.as_str()) {
                    let r = Region {
                        span: region.span,
                        len,
                    };
                    pr.regions.insert(region.text.clone(), r);
                }
                Ok(())
            }
            Op::Memfd { file, hugetlb, .. } => {
                if let Some(at) = self.files.get(file.as_str()) {
                    return Err(Diag::new(
                        file.span,
                        format!("file `{file}` already exists (line {})", at.span.line),
                    ));
                }
                let f = File {
                    span: file.span,
                    hugetlb: *hugetlb,
                };
                self.files.insert(file.text.clone(), f);
                Ok(())
            }
            Op::Pin { pin, target, .. } => {
                let held = self.held(p, pin, target)?;
                if let Some(at) = self.pins.get(pin.as_str()) {
                    return Err(Diag::new(
                        pin.span,
                        format!("pin `{pin}` is already held (line {})", at.span.line),
                    )
                    .help("unpin it first, or choose another name"));
                }
                self.pins.insert(pin.text.clone(), held);
                Ok(())
            }
            Op::Mirror { mirror, target } => {
                let held = self.held(p, mirror, target)?;
                if let Some(at) = self.mirrors.get(mirror.as_str()) {
                    return Err(Diag::new(
                        mirror.span,
                        format!("mirror `{mirror}` already exists (line {})", at.span.line),
                    )
                    .help(
                        "a mirror stays registered to the end of the scenario; choose another name",
                    ));
                }
                self.mirrors.insert(mirror.text.clone(), held);
                Ok(())
            }
            Op::Unpin { pin } => {
                self.pin(pin)?;
                self.pins.remove(pin.as_str());
                Ok(())
            }
            Op::MovePages { target, node, .. } => {
                self.region(p, &target.region)?;
                if node.value >= self.nodes {
                    let n = self.nodes;
                    return Err(Diag::new(
                        node.span,
                        format!(
                            "node {} does not exist: the machine has {n} node{}",
                            node.value,
                            if n == 1 { "" } else { "s" }
                        ),
                    )
                    .help(format!(
                        "nodes are numbered from 0 to {}; a header line `nodes {}` adds more",
                        n.saturating_sub(1),
                        u64::from(node.value) + 1
                    )));
                }
                Ok(())
            }
            op => match op.target() {
                Some(t) => self.region(p, &t.region).map(|_| ()),
                None => Ok(()),
            },
        }
    }

    fn expect(&self, e: &Expect) -> CResult<()> {
        self.region(&e.process, &e.target.region)?;
        match &e.what {
            Expectation::Same { process, target } | Expectation::Other { process, target } => {
                self.region(process, &target.region).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    fn together(&mut self, t: &Together) -> CResult<()> {
        let pre = self.clone();
        let mut merged = self.clone();
        for thread in &t.threads {
            let mut st = pre.clone();
            for s in &thread.steps {
                st.step(s)?;
            }
            merge(&pre, &st, &mut merged)?;
        }
        *self = merged;
        Ok(())
    }
}

/// Adds to `merged` what `st` (one thread's view) made or ended since `pre`.
fn merge(pre: &State, st: &State, merged: &mut State) -> CResult<()> {
    const ALSO: &str = "by another thread of this `together` block";
    for (name, p) in &st.procs {
        match (pre.procs.get(name), merged.procs.get_mut(name)) {
            (None, Some(_)) => {
                return Err(Diag::new(
                    p.created,
                    format!("process `{name}` is also created {ALSO}"),
                ))
            }
            (None, None) => {
                merged.procs.insert(name.clone(), p.clone());
            }
            (Some(old), Some(m)) => {
                for (r, region) in &p.regions {
                    if old.regions.contains_key(r) {
                        continue;
                    }
                    if m.regions.contains_key(r) {
                        return Err(Diag::new(
                            region.span,
                            format!("region `{r}` of `{name}` is also mapped {ALSO}"),
                        ));
                    }
                    m.regions.insert(r.clone(), region.clone());
                }
                if old.exited.is_none() && m.exited.is_none() {
                    m.exited = p.exited;
                }
            }
            (Some(_), None) => {}
        }
    }
    for (f, file) in &st.files {
        if pre.files.contains_key(f) {
            continue;
        }
        if merged.files.contains_key(f) {
            return Err(Diag::new(
                file.span,
                format!("file `{f}` is also created {ALSO}"),
            ));
        }
        merged.files.insert(f.clone(), file.clone());
    }
    for (m, mirror) in &st.mirrors {
        if pre.mirrors.contains_key(m) {
            continue;
        }
        if merged.mirrors.contains_key(m) {
            return Err(Diag::new(
                mirror.span,
                format!("mirror `{m}` is also registered {ALSO}"),
            ));
        }
        merged.mirrors.insert(m.clone(), mirror.clone());
    }
    // Pins this thread released (possibly taking the name again afterwards).
    for (r, held) in &pre.pins {
        let same = |h: Option<&Held>| h.is_some_and(|h| h.span == held.span);
        if !same(st.pins.get(r)) && same(merged.pins.get(r)) {
            merged.pins.remove(r);
        }
    }
    for (r, held) in &st.pins {
        let pre_span = pre.pins.get(r).map(|h| h.span);
        if pre_span == Some(held.span) {
            continue;
        }
        if merged.pins.get(r).is_some_and(|m| pre_span != Some(m.span)) {
            return Err(Diag::new(
                held.span,
                format!("pin `{r}` is also taken {ALSO}"),
            ));
        }
        merged.pins.insert(r.clone(), held.clone());
    }
    Ok(())
}

/// The header's own consistency in a geometry: reverts of fixes the kernel
/// has, khugepaged settings the kernel has, limits within HPAGE_PMD_NR-1.
fn header(h: &Header, units: &UnitSizes) -> CResult<()> {
    let kernel = h.kernel();
    let kernel_line = h.kernel.as_ref().map(|k| k.span.line);
    let mut errors: Vec<Diag> = Vec::new();
    for r in &h.reverts {
        let Some(fix) = crate::SeedFix::by_name(&r.value) else {
            continue;
        };
        if kernel.has_fix(fix.name) == Some(false) {
            let has: Vec<&str> = kernel.fixes().map(|f| f.name).collect();
            errors.push(
                Diag::new(
                    r.span,
                    format!(
                        "kernel {kernel} does not have the fix `{}` (it landed in {}): there is nothing to revert",
                        fix.name, fix.landed
                    ),
                )
                .help(format!(
                    "`kernel {kernel}` (line {}) has these seed fixes: {}",
                    kernel_line.unwrap_or(r.span.line),
                    has.join(", ")
                )),
            );
        }
    }
    if let Some(k) = &h.khugepaged {
        for (key, value) in k.settings() {
            let Some(v) = value else { continue };
            if !kernel.has_khugepaged_setting(key) {
                errors.push(
                    Diag::new(v.span, format!("kernel {kernel} has no `{key}` setting"))
                        .help(format!(
                            "`{key}` came after {kernel}; `kernel {kernel}` (line {}) has only max_ptes_none",
                            kernel_line.unwrap_or(v.span.line)
                        )),
                );
            }
        }
    }
    if let Err(e) = h.khugepaged_limits(units) {
        let mut d = Diag::new(e.span(), e.message);
        d.help = e.help;
        errors.push(d);
    }
    match errors.into_iter().min_by_key(|d| d.span.offset) {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

/// Checks the header and the names (processes, regions, files, pins,
/// mirrors) flow-sensitively, with the lengths of pins and mirrors in the
/// geometry of `units`; returns the first error by position.
pub(crate) fn check(h: &Header, items: &[Item], units: &UnitSizes) -> CResult<()> {
    let body = body(h, items, units);
    match (header(h, units), body) {
        (Err(a), Err(b)) => Err(if b.span.offset < a.span.offset { b } else { a }),
        (Err(d), Ok(())) | (Ok(()), Err(d)) => Err(d),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn body(h: &Header, items: &[Item], units: &UnitSizes) -> CResult<()> {
    let mut st = State::new(*units, h.nodes());
    for item in items {
        match item {
            Item::Process(p) => st.add_process(&p.value, false, BTreeMap::new())?,
            Item::Step(s) => st.step(s)?,
            Item::Together(t) => st.together(t)?,
            Item::Expect(e) => st.expect(e)?,
            Item::Show(s) => st.region(&s.process, &s.target.region).map(|_| ())?,
        }
    }
    Ok(())
}

/// Fails on the first use (in source order) of a feature for which
/// `supported` returns false, e.g. `line 4, column 4: `pin` is not supported yet`.
/// The culprit is the header value or the step's operation keyword (or the
/// argument that needs the feature, such as `collapse` or `hugetlb`).
pub fn check_supported(
    s: &Scenario,
    supported: impl Fn(Feature) -> bool,
) -> Result<(), ScenarioError> {
    for (f, span) in s.features() {
        if !supported(f) {
            return Err(s
                .error_at(span, format!("`{f}` is not supported yet"))
                .with_help("this feature belongs to a later stage of the model"));
        }
    }
    Ok(())
}
