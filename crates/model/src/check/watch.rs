//! Which translations changed since the checkers last looked: the checker
//! side of the page-table entries' change marks (`TableBody::take_changed`),
//! so that the memory oracle re-examines only the pages whose translation
//! may have moved (issue 13: checkers that cost what changed).
//!
//! Models: nothing in the kernel. The model marks every entry it accesses
//! through `TableBody::raw`/`made`, the only ways to change one; a
//! [`TranslationWatch`] takes the marks of each table it reaches and keeps
//! the value each entry had when it last looked (its shadow), so a marked
//! entry counts as changed only if its value did, the accessed and dirty
//! bits aside (they move no translation). Reads through `raw` mark too (the
//! hardware walk's, and `page_info`'s in the checkers themselves): a marked
//! entry whose value stayed costs one compare at the next look and moves
//! nothing. A table it never looked at counts
//! as all changed. An upper-level entry that changed changes its whole span;
//! an unchanged one is followed into its table. The walk reads entries
//! without scheduling points (`peek`) and marks nothing.
//!
//! [`check_memory`] is the quiescent point's memory check that joins them:
//! the frames written since the last check, the translations moved, and the
//! oracle's comparison of what the model shows.
//!
//! Leaves out: the TLBs (the oracle reads what the page tables show), the
//! swap cache (a translation is its entries).

use super::oracle::MemoryOracle;
use super::Violation;
use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::hash::{FastMap as HashMap, FastSet as HashSet};
use crate::mm_types::MmStruct;
use crate::pgtable::{Pmd, TableBody, Upper, PAGE_ACCESSED, PAGE_DIRTY};
use crate::types::{Level, MmId, Pfn};
use std::sync::Arc;

/// A table, as the watch keys it: an mm's PGD (not a frame), or a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TableKey {
    Pgd(MmId),
    Frame(Pfn),
}

/// What an entry's value says of the translations below it.
const MOVES: u64 = !(PAGE_ACCESSED | PAGE_DIRTY);

/// The entries' values at the last look, by table.
#[derive(Clone, Debug, Default)]
pub struct TranslationWatch {
    /// Shared with the watch's copies (a copy of the machine) until a look
    /// changes one.
    shadow: HashMap<TableKey, Arc<Shadow>>,
}

/// A table as the last look saw it.
#[derive(Clone, Debug)]
struct Shadow {
    values: Box<[u64]>,
    /// The entries that may point to a lower table (any but the PTE level's
    /// entries that are not none), in index order: an unchanged entry's
    /// table is the one it pointed to, so a look visits these and the
    /// changed ones, not every entry.
    children: Vec<usize>,
}

impl Shadow {
    fn new(values: Box<[u64]>) -> Shadow {
        let children = (0..values.len()).filter(|&i| values[i] != 0).collect();
        Shadow { values, children }
    }
}

/// The address ranges `[start, end)` of one address space whose
/// translation may have changed, in address order.
pub type Moved = Vec<(u64, u64)>;

/// One look: the changed entries of each table reached, found once (a
/// table shared by several mms, a hugetlb PMD table, is looked at once).
#[derive(Default)]
struct Look {
    changed: HashMap<TableKey, Changed>,
}

#[derive(Clone)]
enum Changed {
    /// Never looked at before: every entry.
    All,
    Some(Vec<usize>),
}

impl Changed {
    fn contains(&self, i: usize) -> bool {
        match self {
            Changed::All => true,
            Changed::Some(v) => v.binary_search(&i).is_ok(),
        }
    }
}

impl TranslationWatch {
    /// Looks at every mm of `mms` and returns, for each (in order), the
    /// ranges whose translation may have changed since the last look.
    pub fn look<E: Engine>(&mut self, cpu: &Cpu<E>, mms: &[&MmStruct<E>]) -> Vec<Moved> {
        let mut look = Look::default();
        mms.iter()
            .map(|mm| {
                let mut out = Vec::new();
                self.walk(
                    cpu,
                    &mut look,
                    TableKey::Pgd(mm.id),
                    &mm.pgd,
                    Level::Pgd,
                    0,
                    &mut out,
                );
                merge(out)
            })
            .collect()
    }

    /// The changed entries of a table: taken from its marks and compared with
    /// the shadow, once per look.
    fn changed<E: Engine>(&mut self, look: &mut Look, key: TableKey, t: &TableBody<E>) -> Changed {
        if let Some(c) = look.changed.get(&key) {
            return c.clone();
        }
        let marked = t.take_changed();
        let c = match self.shadow.get_mut(&key) {
            Some(sh) if sh.values.len() == t.len() && marked.is_empty() => {
                Changed::Some(Vec::new())
            }
            Some(sh) if sh.values.len() == t.len() => {
                let sh = Arc::make_mut(sh);
                let mut v = Vec::new();
                for i in marked {
                    let now = t.peek(i);
                    let was = sh.values[i];
                    if (now ^ was) & MOVES != 0 {
                        v.push(i);
                    }
                    if (now == 0) != (was == 0) {
                        match sh.children.binary_search(&i) {
                            Ok(at) => {
                                sh.children.remove(at);
                            }
                            Err(at) => sh.children.insert(at, i),
                        }
                    }
                    sh.values[i] = now;
                }
                Changed::Some(v)
            }
            _ => {
                let values: Box<[u64]> = (0..t.len()).map(|i| t.peek(i)).collect();
                self.shadow.insert(key, Arc::new(Shadow::new(values)));
                Changed::All
            }
        };
        look.changed.insert(key, c.clone());
        c
    }

    #[allow(clippy::too_many_arguments)]
    fn walk<E: Engine>(
        &mut self,
        cpu: &Cpu<E>,
        look: &mut Look,
        key: TableKey,
        t: &TableBody<E>,
        level: Level,
        base: u64,
        out: &mut Vec<(u64, u64)>,
    ) {
        let g = cpu.k.geo;
        let span = match level {
            Level::Pgd => 1u64 << g.pgdir_shift(),
            Level::Pud => g.pud_size(),
            Level::Pmd => g.pmd_size(),
            Level::Pte => g.page_size(),
        };
        let changed = self.changed(look, key, t);
        if level == Level::Pte {
            if let Changed::Some(v) = &changed {
                out.extend(
                    v.iter()
                        .map(|&i| (base + i as u64 * span, base + (i as u64 + 1) * span)),
                );
            } else {
                out.push((base, base + t.len() as u64 * span));
            }
            return;
        }
        // The entries to visit: every one on a first look, else those that
        // point to a table (as the shadow has them now) and those changed.
        let visit: Vec<usize> = match &changed {
            Changed::All => (0..t.len()).collect(),
            Changed::Some(v) => {
                let children = self.shadow.get(&key).map_or(&[][..], |s| &s.children[..]);
                let mut all: Vec<usize> = children.iter().chain(v).copied().collect();
                all.sort_unstable();
                all.dedup();
                all
            }
        };
        for i in visit {
            let v = t.peek(i);
            let at = base + i as u64 * span;
            let moved = changed.contains(i);
            if moved {
                out.push((at, at + span));
            }
            let (child, next) = match level {
                Level::Pgd | Level::Pud => match Upper::decode(v) {
                    Upper::Table(p) => (
                        p,
                        if level == Level::Pgd {
                            Level::Pud
                        } else {
                            Level::Pmd
                        },
                    ),
                    Upper::None => continue,
                },
                _ => match Pmd::decode(v) {
                    Pmd::Table(p) => (p, Level::Pte),
                    _ => continue,
                },
            };
            // A moved entry's span is already out; its table is still looked
            // at, so that its shadow and marks are up to date.
            let before = out.len();
            self.walk(
                cpu,
                look,
                TableKey::Frame(child),
                cpu.table(child),
                next,
                at,
                out,
            );
            if moved {
                out.truncate(before);
            }
        }
    }
}

/// The memory oracle's check at a quiescent point of a machine, as the
/// runner does it (and the tests): starts a data epoch, takes the frames
/// written since the last check (`Kernel::take_touched`) and the
/// translations moved (`watch`), and runs
/// [`MemoryOracle::check_changed`] with what the model shows: a page's frame
/// from `page_info`, its bytes from `peek_page`. `procs`: the live
/// processes, by the oracle's names. `full`: compare every mapped page.
/// Without `track`, every mapped page is examined and neither the watch nor
/// the oracle's index by frame is kept (see `MemoryOracle::check_changed`).
pub fn check_memory<E: Engine>(
    cpu: &Cpu<E>,
    oracle: &mut MemoryOracle,
    watch: &mut TranslationWatch,
    procs: &[(&str, &Arc<MmStruct<E>>)],
    full: bool,
    track: bool,
) -> Vec<Violation> {
    cpu.k.begin_data_check();
    let touched: HashSet<u64> = cpu.k.take_touched().into_iter().map(|p| p.0).collect();
    let mms: Vec<&MmStruct<E>> = procs.iter().map(|(_, mm)| &***mm).collect();
    let moved: HashMap<&str, Moved> = if track {
        procs
            .iter()
            .map(|(n, _)| *n)
            .zip(watch.look(cpu, &mms))
            .collect()
    } else {
        // The next tracked look starts afresh (it takes the marks left).
        *watch = TranslationWatch::default();
        HashMap::default()
    };
    let mm_of = |name: &str| procs.iter().find(|(n, _)| *n == name).map(|(_, mm)| *mm);
    oracle.check_changed(
        full,
        track,
        |name| moved.get(name).cloned(),
        &touched,
        |name, page| {
            mm_of(name)
                .and_then(|mm| cpu.page_info(mm, crate::types::VirtAddr(page)).pfn)
                .map(|f| f.0)
        },
        |name, page| {
            mm_of(name).map_or_else(Vec::new, |mm| {
                cpu.peek_page(mm, crate::types::VirtAddr(page))
            })
        },
    )
}

/// Sorts and joins touching ranges.
fn merge(mut v: Vec<(u64, u64)>) -> Moved {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StdEngine;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Kernel};

    fn machine() -> (Cpu<StdEngine>, std::sync::Arc<MmStruct<StdEngine>>) {
        let cpu = Cpu::new(
            Kernel::<StdEngine>::new(Config::new(Geometry::TINY)),
            CpuId(0),
        );
        let mm = cpu.mm_alloc();
        (cpu, mm)
    }

    fn covers(m: &Moved, a: u64) -> bool {
        m.iter().any(|&(s, e)| s <= a && a < e)
    }

    /// The first look sees everything; then only what changed: a write
    /// fault's entries, not an access through an entry that stays.
    #[test]
    fn only_changed_translations_are_reported() {
        let (cpu, mm) = machine();
        let mut w = TranslationWatch::default();
        let g = cpu.k.geo;
        let a = cpu
            .do_mmap(&mm, 4 * g.pmd_size(), Prot::ReadWrite, g.pmd_size())
            .expect("mmap");
        let first = w.look(&cpu, &[&mm]);
        assert_eq!(
            first[0],
            vec![(0, (g.ptrs(Level::Pgd) as u64) << g.pgdir_shift())]
        );
        assert!(w.look(&cpu, &[&mm])[0].is_empty(), "nothing changed");
        // The first fault makes the upper tables: their spans move.
        cpu.user_access(&mm, a, Access::Write(1)).expect("write");
        let m = w.look(&cpu, &[&mm]).remove(0);
        assert!(covers(&m, a.0), "{m:?}");
        // A fault under tables that exist moves its own PMD only.
        let b = a.add_bytes(2 * g.pmd_size());
        cpu.user_access(&mm, b, Access::Write(2)).expect("write");
        let m = w.look(&cpu, &[&mm]).remove(0);
        assert_eq!(m, vec![(b.0, b.0 + g.pmd_size())]);
        // A read of the same page moves nothing.
        cpu.user_access(&mm, a, Access::Read).expect("read");
        assert!(w.look(&cpu, &[&mm])[0].is_empty());
        // munmap moves what it unmapped.
        cpu.do_munmap(&mm, a, g.pmd_size()).expect("munmap");
        let m = w.look(&cpu, &[&mm]).remove(0);
        assert!(covers(&m, a.0), "{m:?}");
    }

    /// A table shared by two looks at once is judged once, for both.
    #[test]
    fn a_forked_mm_is_new_and_its_parent_moves_where_fork_changed_it() {
        let (cpu, mm) = machine();
        let g = cpu.k.geo;
        let mut w = TranslationWatch::default();
        let a = cpu
            .do_mmap(&mm, g.pmd_size(), Prot::ReadWrite, g.pmd_size())
            .expect("mmap");
        cpu.user_access(&mm, a, Access::Write(1)).expect("write");
        w.look(&cpu, &[&mm]);
        let child = cpu.dup_mm(&mm).expect("fork");
        let m = w.look(&cpu, &[&mm, &child]);
        assert!(covers(&m[0], a.0), "fork write-protected the parent: {m:?}");
        assert!(covers(&m[1], a.0), "the child is new: {m:?}");
        assert!(w.look(&cpu, &[&mm, &child]).iter().all(|m| m.is_empty()));
    }
}
