//! Background work that could change what a live run observes, detected
//! through the kernel's event counters.
//!
//! A live run quiesces khugepaged (see `session` and
//! `agent::register_with_khugepaged`), but the machine is shared and the
//! counters are the only proof: a [`Snapshot`] is taken before the run and
//! around every step, and any event the scenario did not ask for is reported
//! as interference (its own result, not a difference between the kernels):
//!
//! - a collapse (`thp_collapse_alloc` in /proc/vmstat, khugepaged's
//!   `pages_collapsed`): khugepaged, or another process's MADV_COLLAPSE.
//!   The runner's own collapses (`madvise ... collapse` and `kernel:
//!   khugepaged`, both MADV_COLLAPSE live) allocate a THP each, at most one
//!   per PMD-aligned 2 MiB of the range ([`Allowed::collapses`]): only
//!   allocations beyond that count are reported ("khugepaged ran"), and any
//!   `pages_collapsed` step (khugepaged's own counter, which MADV_COLLAPSE
//!   leaves alone) always is;
//! - a THP split (`thp_split_page`) during a step that does not split pages
//!   itself (only `kernel: split-huge-page` and `kernel: deferred-split` do
//!   on the live side): the deferred-split shrinker run by reclaim;
//! - a THP split by migration (`thp_migration_split`): compaction that could
//!   not move a THP whole;
//! - a THP fault that fell back to base pages (`thp_fault_fallback`): this
//!   machine had no free huge page to give (the model's memory is its own,
//!   so a fallback there is the scenario's; here it is the host's state).
//! - pages swapped out (`pswpout`) during a step that does not reclaim
//!   (only `madvise ... pageout` and `kernel: reclaim` do): reclaim under
//!   memory pressure (kswapd, direct reclaim) took the scenario's pages, or
//!   another process's.
//!
//! [`Snapshot::activity`] lists what a step did in the counters that tell
//! what swap-out, swap-in and collapse did (`pswpout`, `thp_swpout`,
//! `thp_swpout_fallback`, ...), for the report's notes.
//!
//! The counters are global, so an event in another process also counts: a
//! false alarm costs a rerun, a missed event would cost a wrong verdict.

use std::fs;

const VMSTAT: &str = "/proc/vmstat";
const PAGES_COLLAPSED: &str = "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_collapsed";

/// The counters a run watches (absent ones read as 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub thp_collapse_alloc: u64,
    pub thp_collapse_alloc_failed: u64,
    pub pages_collapsed: u64,
    pub thp_split_page: u64,
    pub thp_migration_split: u64,
    pub thp_fault_fallback: u64,
    /// Pages written to swap.
    pub pswpout: u64,
    /// Pages read from swap.
    pub pswpin: u64,
    /// THPs swapped out whole.
    pub thp_swpout: u64,
    /// THPs split because no free cluster of swap could take them whole.
    pub thp_swpout_fallback: u64,
    /// MADV_FREE pages discarded by reclaim.
    pub pglazyfreed: u64,
}

/// What a step may do to the counters without it being interference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// The step splits THPs (`kernel: split-huge-page`, `kernel:
    /// deferred-split`, and reclaim, which splits a THP it cannot swap out
    /// whole or that is partly in the range).
    pub splits: bool,
    /// The THP collapses the step itself may allocate (MADV_COLLAPSE: one
    /// per PMD-aligned 2 MiB of its range).
    pub collapses: u64,
    /// The step swaps pages out (MADV_PAGEOUT).
    pub swap_out: bool,
}

impl Snapshot {
    /// Reads the counters now.
    pub fn now() -> Snapshot {
        let mut s = Snapshot::default();
        if let Ok(text) = fs::read_to_string(VMSTAT) {
            parse_vmstat(&text, &mut s);
        }
        s.pages_collapsed = fs::read_to_string(PAGES_COLLAPSED)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        s
    }

    /// The events between `self` (earlier) and `later` that a run did not
    /// ask for; `allowed`: what the interval's step does itself.
    pub fn interference(&self, later: &Snapshot, allowed: Allowed) -> Vec<String> {
        let mut out = Vec::new();
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let allocated = d(self.thp_collapse_alloc, later.thp_collapse_alloc);
        let extra = allocated.saturating_sub(allowed.collapses);
        let by_khugepaged = d(self.pages_collapsed, later.pages_collapsed);
        let collapsed = extra.max(by_khugepaged);
        if collapsed > 0 {
            let own = if allowed.collapses > 0 {
                format!(
                    " beyond the step's own MADV_COLLAPSE (thp_collapse_alloc +{allocated}, at \
                     most {} of them the step's)",
                    allowed.collapses
                )
            } else {
                String::new()
            };
            out.push(format!(
                "{collapsed} THP collapse(s){own}: khugepaged ran, or another process's \
                 MADV_COLLAPSE (thp_collapse_alloc, khugepaged/pages_collapsed)"
            ));
        }
        let split = d(self.thp_split_page, later.thp_split_page);
        if split > 0 && !allowed.splits {
            out.push(format!(
                "{split} THP split(s) the step did not ask for (thp_split_page: the \
                 deferred-split shrinker under memory pressure)"
            ));
        }
        let fallback = d(self.thp_fault_fallback, later.thp_fault_fallback);
        if fallback > 0 {
            out.push(format!(
                "{fallback} THP fault(s) fell back to base pages (thp_fault_fallback: this \
                 machine had no free huge page)"
            ));
        }
        let msplit = d(self.thp_migration_split, later.thp_migration_split);
        if msplit > 0 {
            out.push(format!(
                "{msplit} THP split(s) by migration (thp_migration_split: compaction)"
            ));
        }
        let out_pages = d(self.pswpout, later.pswpout);
        if out_pages > 0 && !allowed.swap_out {
            out.push(format!(
                "{out_pages} page(s) swapped out by reclaim the step did not ask for (pswpout: \
                 memory pressure, kswapd)"
            ));
        }
        out
    }

    /// What changed between `self` (earlier) and `later` in the counters of
    /// swap and collapse (`name +N` for each one that moved), for notes.
    pub fn activity(&self, later: &Snapshot) -> Vec<String> {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        [
            ("pswpout", self.pswpout, later.pswpout),
            ("thp_swpout", self.thp_swpout, later.thp_swpout),
            (
                "thp_swpout_fallback",
                self.thp_swpout_fallback,
                later.thp_swpout_fallback,
            ),
            ("thp_split_page", self.thp_split_page, later.thp_split_page),
            ("pglazyfreed", self.pglazyfreed, later.pglazyfreed),
            ("pswpin", self.pswpin, later.pswpin),
            (
                "thp_collapse_alloc",
                self.thp_collapse_alloc,
                later.thp_collapse_alloc,
            ),
            (
                "thp_collapse_alloc_failed",
                self.thp_collapse_alloc_failed,
                later.thp_collapse_alloc_failed,
            ),
        ]
        .into_iter()
        .filter(|&(_, a, b)| d(a, b) > 0)
        .map(|(name, a, b)| format!("{name} +{}", d(a, b)))
        .collect()
    }
}

fn parse_vmstat(text: &str, s: &mut Snapshot) {
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<u64>() else {
            continue;
        };
        match k {
            "thp_collapse_alloc" => s.thp_collapse_alloc = v,
            "thp_collapse_alloc_failed" => s.thp_collapse_alloc_failed = v,
            "pswpout" => s.pswpout = v,
            "pswpin" => s.pswpin = v,
            "thp_swpout" => s.thp_swpout = v,
            "thp_swpout_fallback" => s.thp_swpout_fallback = v,
            "pglazyfreed" => s.pglazyfreed = v,
            "thp_split_page" => s.thp_split_page = v,
            "thp_migration_split" => s.thp_migration_split = v,
            "thp_fault_fallback" => s.thp_fault_fallback = v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_counters_it_watches() {
        let mut s = Snapshot::default();
        parse_vmstat(
            "nr_free_pages 5\nthp_collapse_alloc 3\nthp_split_page 16\nthp_migration_split 2\n",
            &mut s,
        );
        assert_eq!(
            (
                s.thp_collapse_alloc,
                s.thp_split_page,
                s.thp_migration_split
            ),
            (3, 16, 2)
        );
    }

    #[test]
    fn reports_only_what_was_not_asked_for() {
        let a = Snapshot::default();
        let none = Allowed::default();
        let splits = Allowed {
            splits: true,
            ..none
        };
        let split = Snapshot {
            thp_split_page: 1,
            ..a
        };
        assert!(a.interference(&split, splits).is_empty());
        assert_eq!(a.interference(&split, none).len(), 1);
        let collapsed = Snapshot {
            pages_collapsed: 1,
            ..a
        };
        let r = a.interference(&collapsed, splits);
        assert!(r[0].contains("1 THP collapse"), "{r:?}");
        assert!(a.interference(&a, none).is_empty());
        let swapped = Snapshot { pswpout: 512, ..a };
        assert!(a
            .interference(
                &swapped,
                Allowed {
                    swap_out: true,
                    ..none
                }
            )
            .is_empty());
        let r = a.interference(&swapped, none);
        assert!(r[0].contains("512 page(s) swapped out"), "{r:?}");
    }

    /// The runner's own MADV_COLLAPSE allocates THPs: only more than it
    /// may allocate is khugepaged's (or someone else's).
    #[test]
    fn own_collapses_are_not_interference() {
        let a = Snapshot::default();
        let two = Allowed {
            collapses: 2,
            ..Allowed::default()
        };
        let ours = Snapshot {
            thp_collapse_alloc: 2,
            ..a
        };
        assert!(a.interference(&ours, two).is_empty());
        let more = Snapshot {
            thp_collapse_alloc: 3,
            ..a
        };
        let r = a.interference(&more, two);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("1 THP collapse(s) beyond") && r[0].contains("khugepaged ran"),
            "{r:?}"
        );
        // khugepaged's own counter is never the runner's.
        let scanned = Snapshot {
            thp_collapse_alloc: 1,
            pages_collapsed: 1,
            ..a
        };
        assert_eq!(a.interference(&scanned, two).len(), 1);
    }

    #[test]
    fn activity_lists_what_moved() {
        let a = Snapshot {
            pswpout: 10,
            ..Snapshot::default()
        };
        let b = Snapshot {
            pswpout: 522,
            thp_swpout: 1,
            ..a
        };
        assert_eq!(a.activity(&b), vec!["pswpout +512", "thp_swpout +1"]);
        assert!(a.activity(&a).is_empty());
    }
}
