//! Static checks: which processes, regions, files and pins exist at each
//! statement (flow-sensitive), and which features a scenario needs.
//!
//! The rules:
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
//! - in a `together` block each thread sees what existed before the block plus
//!   what its own earlier steps made; after the block, everything any thread
//!   made is visible (two threads making the same name is an error), and what
//!   any thread ended (`exit`, `unpin`) is gone.

use std::collections::BTreeMap;

use crate::ast::*;
use crate::error::{suggest, Diag, ScenarioError};

type CResult<T> = Result<T, Diag>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    /// Where it was declared or forked.
    created: Span,
    by_fork: bool,
    exited: Option<Span>,
    regions: BTreeMap<String, Span>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    procs: BTreeMap<String, Proc>,
    files: BTreeMap<String, Span>,
    pins: BTreeMap<String, Span>,
}

impl State {
    fn live(&self, p: &Name) -> CResult<&Proc> {
        match self.procs.get(p.as_str()) {
            None => {
                let d = Diag::new(p.span, format!("undeclared process `{p}`"));
                Err(match suggest(p.as_str(), ["kernel", "device"]) {
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

    fn region(&self, p: &Name, r: &Name) -> CResult<()> {
        let pr = self.live(p)?;
        if pr.regions.contains_key(r.as_str()) {
            return Ok(());
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

    fn pin(&self, r: &Name) -> CResult<()> {
        if self.pins.contains_key(r.as_str()) {
            return Ok(());
        }
        Err(
            Diag::new(r.span, format!("unknown pin `{r}`")).help(format!(
                "a pin is taken by `P: pin {r} = A[..]` and held until `unpin {r}`"
            )),
        )
    }

    fn add_process(
        &mut self,
        n: &Name,
        by_fork: bool,
        regions: BTreeMap<String, Span>,
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
            | Op::Reclaim { process, target } => return self.region(process, &target.region),
            Op::DeferredSplit => return Ok(()),
            Op::DeviceWrite { target, .. } | Op::DeviceRead { target, .. } => {
                return self.pin(&target.region)
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
                region, backing, ..
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
                        format!("process `{p}` already has a region `{region}` (line {})", at.line),
                    )
                    .help("a region name is mapped once per process (it stays known after munmap); choose another name"));
                }
                if let Some(pr) = self.procs.get_mut(p.as_str()) {
                    pr.regions.insert(region.text.clone(), region.span);
                }
                Ok(())
            }
            Op::Memfd { file, .. } => {
                if let Some(at) = self.files.get(file.as_str()) {
                    return Err(Diag::new(
                        file.span,
                        format!("file `{file}` already exists (line {})", at.line),
                    ));
                }
                self.files.insert(file.text.clone(), file.span);
                Ok(())
            }
            Op::Pin { pin, target, .. } => {
                self.region(p, &target.region)?;
                if let Some(at) = self.pins.get(pin.as_str()) {
                    return Err(Diag::new(
                        pin.span,
                        format!("pin `{pin}` is already held (line {})", at.line),
                    )
                    .help("unpin it first, or choose another name"));
                }
                self.pins.insert(pin.text.clone(), pin.span);
                Ok(())
            }
            Op::Unpin { pin } => {
                self.pin(pin)?;
                self.pins.remove(pin.as_str());
                Ok(())
            }
            op => match op.target() {
                Some(t) => self.region(p, &t.region),
                None => Ok(()),
            },
        }
    }

    fn expect(&self, e: &Expect) -> CResult<()> {
        self.region(&e.process, &e.target.region)?;
        match &e.what {
            Expectation::Same { process, target } | Expectation::Other { process, target } => {
                self.region(process, &target.region)
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
                for (r, span) in &p.regions {
                    if old.regions.contains_key(r) {
                        continue;
                    }
                    if m.regions.contains_key(r) {
                        return Err(Diag::new(
                            *span,
                            format!("region `{r}` of `{name}` is also mapped {ALSO}"),
                        ));
                    }
                    m.regions.insert(r.clone(), *span);
                }
                if old.exited.is_none() && m.exited.is_none() {
                    m.exited = p.exited;
                }
            }
            (Some(_), None) => {}
        }
    }
    for (f, span) in &st.files {
        if pre.files.contains_key(f) {
            continue;
        }
        if merged.files.contains_key(f) {
            return Err(Diag::new(
                *span,
                format!("file `{f}` is also created {ALSO}"),
            ));
        }
        merged.files.insert(f.clone(), *span);
    }
    // Pins this thread released (possibly taking the name again afterwards).
    for (r, span) in &pre.pins {
        if st.pins.get(r) != Some(span) && merged.pins.get(r) == Some(span) {
            merged.pins.remove(r);
        }
    }
    for (r, span) in &st.pins {
        if pre.pins.get(r) == Some(span) {
            continue;
        }
        if merged
            .pins
            .get(r)
            .is_some_and(|m| pre.pins.get(r) != Some(m))
        {
            return Err(Diag::new(*span, format!("pin `{r}` is also taken {ALSO}")));
        }
        merged.pins.insert(r.clone(), *span);
    }
    Ok(())
}

/// Checks names (processes, regions, files, pins) flow-sensitively; returns
/// the first error.
pub(crate) fn check(items: &[Item]) -> CResult<()> {
    let mut st = State::default();
    for item in items {
        match item {
            Item::Process(p) => st.add_process(&p.value, false, BTreeMap::new())?,
            Item::Step(s) => st.step(s)?,
            Item::Together(t) => st.together(t)?,
            Item::Expect(e) => st.expect(e)?,
            Item::Show(s) => st.region(&s.process, &s.target.region)?,
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
