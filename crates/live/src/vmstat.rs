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
//!   `pages_collapsed`): khugepaged, or another process's MADV_COLLAPSE;
//! - a THP split (`thp_split_page`) during a step that does not split pages
//!   itself (only `kernel: split-huge-page` and `kernel: deferred-split` do
//!   on the live side): the deferred-split shrinker run by reclaim;
//! - a THP split by migration (`thp_migration_split`): compaction that could
//!   not move a THP whole;
//! - a THP fault that fell back to base pages (`thp_fault_fallback`): this
//!   machine had no free huge page to give (the model's memory is its own,
//!   so a fallback there is the scenario's; here it is the host's state).
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
    pub pages_collapsed: u64,
    pub thp_split_page: u64,
    pub thp_migration_split: u64,
    pub thp_fault_fallback: u64,
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
    /// ask for; `splits_expected`: the interval ran a step that splits THPs.
    pub fn interference(&self, later: &Snapshot, splits_expected: bool) -> Vec<String> {
        let mut out = Vec::new();
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let collapsed = d(self.thp_collapse_alloc, later.thp_collapse_alloc)
            .max(d(self.pages_collapsed, later.pages_collapsed));
        if collapsed > 0 {
            out.push(format!(
                "{collapsed} THP collapse(s) (khugepaged or MADV_COLLAPSE: thp_collapse_alloc, \
                 khugepaged/pages_collapsed)"
            ));
        }
        let split = d(self.thp_split_page, later.thp_split_page);
        if split > 0 && !splits_expected {
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
        out
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
        let split = Snapshot {
            thp_split_page: 1,
            ..a
        };
        assert!(a.interference(&split, true).is_empty());
        assert_eq!(a.interference(&split, false).len(), 1);
        let collapsed = Snapshot {
            pages_collapsed: 1,
            ..a
        };
        let r = a.interference(&collapsed, true);
        assert!(r[0].contains("1 THP collapse"), "{r:?}");
        assert!(a.interference(&a, false).is_empty());
    }
}
