//! The seed fixes as switches.
//!
//! Each of the five seed commits (../shared/seeds/) closed a race. The model
//! carries each fix as it is in Linux 5.8 and can revert it, restoring exactly
//! the pre-fix code path and nothing else, so the explorer can reopen the race.

use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

/// A seed fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Fix {
    /// Seed 000: __split_huge_pmd() takes the page lock.
    SplitPmdPageLock,
    /// Seed 001: the rmap walk of split checks a PMD under the page-table lock
    /// (in 5.8 terms, try_to_unmap() with TTU_SYNC).
    RmapPmdUnderPtl,
    /// Seed 002: split_huge_page() takes the anon_vma lock for write.
    SplitAnonVmaWrite,
    /// Seed 003: try_to_unmap() unshares a shared hugetlb PMD.
    MigrateUnshareHugetlbPmd,
    /// Seed 004: the WP fault decides reuse by page_trans_huge_mapcount().
    ThpWpAccurateMapcount,
}

impl Fix {
    pub const ALL: [Fix; 5] = [
        Fix::SplitPmdPageLock,
        Fix::RmapPmdUnderPtl,
        Fix::SplitAnonVmaWrite,
        Fix::MigrateUnshareHugetlbPmd,
        Fix::ThpWpAccurateMapcount,
    ];

    /// The switch's name (`--revert NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Fix::SplitPmdPageLock => "split-pmd-page-lock",
            Fix::RmapPmdUnderPtl => "rmap-pmd-under-ptl",
            Fix::SplitAnonVmaWrite => "split-anon-vma-write",
            Fix::MigrateUnshareHugetlbPmd => "migrate-unshare-hugetlb-pmd",
            Fix::ThpWpAccurateMapcount => "thp-wp-accurate-mapcount",
        }
    }

    pub fn by_name(name: &str) -> Option<Fix> {
        Fix::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The seed file number.
    pub fn seed(self) -> u32 {
        match self {
            Fix::SplitPmdPageLock => 0,
            Fix::RmapPmdUnderPtl => 1,
            Fix::SplitAnonVmaWrite => 2,
            Fix::MigrateUnshareHugetlbPmd => 3,
            Fix::ThpWpAccurateMapcount => 4,
        }
    }

    /// The upstream commit (abbreviated).
    pub fn commit(self) -> &'static str {
        match self {
            Fix::SplitPmdPageLock => "c444eb564fb1",
            Fix::RmapPmdUnderPtl => "seeds/001 (5.8 terms: TTU_SYNC, 732ed55823fc)",
            Fix::SplitAnonVmaWrite => "062f1af2170a",
            Fix::MigrateUnshareHugetlbPmd => "017b1660df89",
            Fix::ThpWpAccurateMapcount => "6d0a07edd17c",
        }
    }

    /// The seed commit's title.
    pub fn title(self) -> &'static str {
        match self {
            Fix::SplitPmdPageLock => {
                "mm: thp: make the THP mapcount atomic against __split_huge_pmd_locked()"
            }
            Fix::RmapPmdUnderPtl => "thp: close race between split and zap huge pages",
            Fix::SplitAnonVmaWrite => "mm: thp: acquire the anon_vma rwsem for write during split",
            Fix::MigrateUnshareHugetlbPmd => {
                "mm: migration: fix migration of huge PMD shared pages"
            }
            Fix::ThpWpAccurateMapcount => {
                "mm: thp: calculate the mapcount correctly for THP pages during WP faults"
            }
        }
    }
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of reverted fixes; every other fix is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FixSet {
    reverted: BTreeSet<Fix>,
}

impl FixSet {
    pub fn revert(&mut self, fix: Fix) {
        self.reverted.insert(fix);
    }
    /// Whether the fix is in (not reverted).
    pub fn applied(&self, fix: Fix) -> bool {
        !self.reverted.contains(&fix)
    }
    pub fn reverted(&self) -> impl Iterator<Item = Fix> + '_ {
        self.reverted.iter().copied()
    }
}
