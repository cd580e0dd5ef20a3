//! Which kernel has which seed fix: the one table of it.
//!
//! A `revert NAME` line reopens a fixed race, so the selected kernel
//! (`kernel 5.8 | 3.16`) must have the fix; reverting one it lacks is invalid
//! input (SCENARIO-LANGUAGE.md). A kernel has a fix when the fix landed in
//! that release or an earlier one. The release each seed fix landed in comes
//! from the seed files (../shared/seeds/) and the upstream history:
//!
//! | seed | name | upstream | landed in | in 3.16 | in 5.8 |
//! |---|---|---|---|---|---|
//! | 000 | split-pmd-page-lock | c444eb564fb1 (2020; fixes 6d0a07edd17c; CVE-2020-29368) | 5.8 | no | yes |
//! | 001 | rmap-pmd-under-ptl | "thp: close race between split and zap huge pages" (2014; stable 3.13+) | 3.15 | yes | yes |
//! | 002 | split-anon-vma-write | 062f1af2170a (2013; reported against 3.8-rc1) | 3.8 | yes | yes |
//! | 003 | migrate-unshare-hugetlb-pmd | 017b1660df89 (2018) | 4.19 | no | yes |
//! | 004 | thp-wp-accurate-mapcount | 6d0a07edd17c (2016; a 4.5-stable backport) | 4.6 | no | yes |
//!
//! The model's `thpsim_model::fixes::Fix` names the same five switches (a
//! test of the `thpsim` crate checks that the two lists agree); names this
//! table does not know are left to the runner, which reports them as
//! unknown fixes.

use std::fmt;

use serde::Serialize;

use crate::ast::KernelVersion;

/// A Linux release, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Release {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl Release {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Release { major, minor }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A seed fix as the scenario language knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SeedFix {
    /// The `revert` name.
    pub name: &'static str,
    /// The seed file number (../shared/seeds/00N_*.txt).
    pub seed: u32,
    /// The first release with the fix.
    pub landed: Release,
}

/// The five seed fixes, by seed number.
pub const SEED_FIXES: [SeedFix; 5] = [
    SeedFix {
        name: "split-pmd-page-lock",
        seed: 0,
        landed: Release::new(5, 8),
    },
    SeedFix {
        name: "rmap-pmd-under-ptl",
        seed: 1,
        landed: Release::new(3, 15),
    },
    SeedFix {
        name: "split-anon-vma-write",
        seed: 2,
        landed: Release::new(3, 8),
    },
    SeedFix {
        name: "migrate-unshare-hugetlb-pmd",
        seed: 3,
        landed: Release::new(4, 19),
    },
    SeedFix {
        name: "thp-wp-accurate-mapcount",
        seed: 4,
        landed: Release::new(4, 6),
    },
];

impl SeedFix {
    /// The seed fix of that `revert` name.
    pub fn by_name(name: &str) -> Option<&'static SeedFix> {
        SEED_FIXES.iter().find(|f| f.name == name)
    }
}

impl KernelVersion {
    /// The release this design is.
    pub fn release(self) -> Release {
        match self {
            KernelVersion::V5_8 => Release::new(5, 8),
            KernelVersion::V3_16 => Release::new(3, 16),
        }
    }

    /// Whether this kernel has the seed fix of that name (so that reverting
    /// it means something); `None` for a name that is not a seed fix.
    pub fn has_fix(self, name: &str) -> Option<bool> {
        SeedFix::by_name(name).map(|f| f.landed <= self.release())
    }

    /// The seed fixes this kernel has.
    pub fn fixes(self) -> impl Iterator<Item = &'static SeedFix> {
        SEED_FIXES
            .iter()
            .filter(move |f| f.landed <= self.release())
    }

    /// Whether the `khugepaged` header line may set this key in this kernel:
    /// 3.16 has only `max_ptes_none` (`max_ptes_swap` and `max_ptes_shared`
    /// came later, the latter in 5.8).
    pub fn has_khugepaged_setting(self, key: &str) -> bool {
        match self {
            KernelVersion::V5_8 => true,
            KernelVersion::V3_16 => key == "max_ptes_none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_kernel_has_which_fix() {
        let in_316: Vec<&str> = KernelVersion::V3_16.fixes().map(|f| f.name).collect();
        assert_eq!(in_316, ["rmap-pmd-under-ptl", "split-anon-vma-write"]);
        assert_eq!(KernelVersion::V5_8.fixes().count(), 5);
        assert_eq!(
            KernelVersion::V3_16.has_fix("split-pmd-page-lock"),
            Some(false)
        );
        assert_eq!(
            KernelVersion::V3_16.has_fix("thp-wp-accurate-mapcount"),
            Some(false)
        );
        assert_eq!(
            KernelVersion::V3_16.has_fix("migrate-unshare-hugetlb-pmd"),
            Some(false)
        );
        assert_eq!(KernelVersion::V5_8.has_fix("no-such-fix"), None);
        for (i, f) in SEED_FIXES.iter().enumerate() {
            assert_eq!(f.seed as usize, i);
        }
        assert_eq!(Release::new(3, 16).to_string(), "3.16");
        assert!(Release::new(3, 8) < Release::new(3, 16));
    }
}
