//! Decoding what /proc reports about a page: /proc/PID/pagemap entries,
//! /proc/kpageflags bits, and the page kinds of the scenario language.
//!
//! Pure functions, testable anywhere; the live runner feeds them what it reads.

/// A /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    /// Bit 63: page present.
    pub const PRESENT: u64 = 1 << 63;
    /// Bit 62: page swapped (a swap or other non-present entry: migration, marker).
    pub const SWAPPED: u64 = 1 << 62;
    /// Bit 61: file-page or shared-anon.
    pub const FILE_SHARED: u64 = 1 << 61;
    /// Bit 56: page exclusively mapped.
    pub const EXCLUSIVE: u64 = 1 << 56;
    /// Bits 0-54: the PFN when present (zero without CAP_SYS_ADMIN).
    pub const PFN_MASK: u64 = (1 << 55) - 1;

    pub fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }
    pub fn swapped(self) -> bool {
        self.0 & Self::SWAPPED != 0
    }
    pub fn exclusive(self) -> bool {
        self.0 & Self::EXCLUSIVE != 0
    }
    /// The frame when present. `Some(0)` means the kernel hides PFNs
    /// (no CAP_SYS_ADMIN) unless the page really is frame 0.
    pub fn pfn(self) -> Option<u64> {
        self.present().then_some(self.0 & Self::PFN_MASK)
    }
    /// For a swapped entry: the swap type (bits 0-4).
    pub fn swap_type(self) -> Option<u64> {
        (self.swapped() && !self.present()).then_some(self.0 & 0x1f)
    }
}

/// /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h).
pub mod kpf {
    pub const LRU: u32 = 5;
    pub const SLAB: u32 = 7;
    pub const BUDDY: u32 = 10;
    pub const MMAP: u32 = 11;
    pub const ANON: u32 = 12;
    pub const SWAPCACHE: u32 = 13;
    pub const SWAPBACKED: u32 = 14;
    pub const COMPOUND_HEAD: u32 = 15;
    pub const COMPOUND_TAIL: u32 = 16;
    pub const HUGE: u32 = 17;
    pub const NOPAGE: u32 = 20;
    pub const THP: u32 = 22;
    pub const ZERO_PAGE: u32 = 24;
    /// PG_mlocked (of the folio on Linux >= 6.x).
    pub const MLOCKED: u32 = 33;
}

/// A /proc/kpageflags word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KFlags(pub u64);

impl KFlags {
    pub fn has(self, bit: u32) -> bool {
        self.0 & (1u64 << bit) != 0
    }
    /// Part of a compound page (head or tail).
    pub fn compound(self) -> bool {
        self.has(kpf::COMPOUND_HEAD) || self.has(kpf::COMPOUND_TAIL)
    }
    /// The (4 KiB or huge) shared zero page.
    pub fn zero(self) -> bool {
        self.has(kpf::ZERO_PAGE)
    }
    /// A hugetlb page.
    pub fn hugetlb(self) -> bool {
        self.has(kpf::HUGE)
    }
    /// A transparent huge page (any order on kernels with mTHP).
    pub fn thp(self) -> bool {
        self.has(kpf::THP)
    }
}

/// The kinds of the scenario language (`expect P A[off] KIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    None,
    Zero,
    Base,
    ThpPmd,
    ThpPte,
    Hugetlb,
    Swap,
    Migration,
}

impl Kind {
    pub fn keyword(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Zero => "zero",
            Kind::Base => "base",
            Kind::ThpPmd => "thp-pmd",
            Kind::ThpPte => "thp-pte",
            Kind::Hugetlb => "hugetlb",
            Kind::Swap => "swap",
            Kind::Migration => "migration",
        }
    }
}

/// What the type field (bits 0-4) of a non-present pagemap entry with
/// PM_SWAP (bit 62) means on this kernel.
///
/// The kernel encodes swap entries and its other non-present entries alike
/// (include/linux/swap.h): the 5-bit type is a swap device's index (its
/// `swap_info[]` slot, below `MAX_SWAPFILES`) or one of the special types
/// that use the top type numbers, in this order from `MAX_SWAPFILES` up:
/// hwpoison (1 with CONFIG_MEMORY_FAILURE), migration (3 with
/// CONFIG_MIGRATION: read, read-exclusive, write), device-private (4 with
/// CONFIG_DEVICE_PRIVATE, 3 from 6.15 on, which folded the two exclusive
/// types into one), PTE marker (1, the last type, 31: uffd-wp, swap-in error
/// and guard markers). `MAX_SWAPFILES` is 32 minus those. pagemap itself
/// cannot tell a migration entry from a swap entry (both set PM_SWAP); the
/// type can.
///
/// Exact for Linux >= 6.2 (PTE markers always built in, no separate
/// swap-in-error type) when the kernel's configuration is known; without it,
/// every optional type is assumed present, which puts `MAX_SWAPFILES` at its
/// lowest (23): a real swap device has a type that low unless the machine
/// has more than 23 swap areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapTypes {
    /// `MAX_SWAPFILES`: types below it are swap devices.
    pub max_swapfiles: u64,
    /// Migration entry types: `[start, end)`.
    pub migration: (u64, u64),
    /// The PTE marker type.
    pub pte_marker: u64,
}

impl SwapTypes {
    /// The number of type bits (`MAX_SWAPFILES_SHIFT`).
    pub const SHIFT: u32 = 5;

    /// The layout for a kernel with these options.
    pub fn with(memory_failure: bool, migration: bool, device_private: u64) -> SwapTypes {
        let total = 1u64 << Self::SHIFT;
        let hw = u64::from(memory_failure);
        let mig = if migration { 3 } else { 0 };
        let max = total - hw - mig - device_private - 1;
        SwapTypes {
            max_swapfiles: max,
            migration: (max + hw, max + hw + mig),
            pte_marker: total - 1,
        }
    }

    /// The layout for kernel `release` (`uname -r`) built with `config` (the
    /// text of its .config), or the most conservative one when the
    /// configuration is unknown (see the type's docs).
    pub fn for_kernel(release: &str, config: Option<&str>) -> SwapTypes {
        let Some(config) = config else {
            return SwapTypes::with(true, true, 4);
        };
        let on = |name: &str| {
            config
                .lines()
                .any(|l| l.strip_prefix(name).is_some_and(|r| r == "=y"))
        };
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u32>().ok());
        let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        let device = match (on("CONFIG_DEVICE_PRIVATE"), version >= (6, 15)) {
            (false, _) => 0,
            (true, true) => 3,
            (true, false) => 4,
        };
        SwapTypes::with(on("CONFIG_MEMORY_FAILURE"), on("CONFIG_MIGRATION"), device)
    }

    /// The page kind of a non-present entry of type `t`: a swap device's
    /// (`swap`), a migration entry (`migration`; hwpoison and device-private
    /// entries, which the scenario language has no kind for, are reported
    /// as `migration` too: non-present, not swapped, coming back), a PTE
    /// marker (`none`: nothing is mapped there).
    pub fn kind(&self, t: u64) -> Kind {
        if t < self.max_swapfiles {
            Kind::Swap
        } else if t == self.pte_marker {
            Kind::None
        } else {
            Kind::Migration
        }
    }
}

/// The kind of a base page from its pagemap entry, the kpageflags of its frame
/// (ignored when not present), whether PAGEMAP_SCAN (or the smaps fallback)
/// says a huge PMD maps it, and this kernel's swap entry types (a swapped
/// entry is a swap entry, a migration entry or a marker: [`SwapTypes`]).
pub fn classify(e: PagemapEntry, flags: KFlags, pmd_mapped: bool, types: &SwapTypes) -> Kind {
    if !e.present() {
        return match e.swap_type() {
            Some(t) => types.kind(t),
            None => Kind::None,
        };
    }
    if flags.zero() {
        Kind::Zero
    } else if flags.hugetlb() {
        Kind::Hugetlb
    } else if flags.thp() || flags.compound() {
        if pmd_mapped {
            Kind::ThpPmd
        } else {
            Kind::ThpPte
        }
    } else {
        Kind::Base
    }
}

/// The compound head of `pfn`, given the kpageflags of the frames
/// `window_base..=pfn` (`window[i]` is frame `window_base + i`): `pfn` itself
/// when it is a head, else the nearest head below it. `None` when the frame is
/// not compound or no head is in the window (callers pass the PMD-aligned
/// window, 512 frames on x86_64, which holds the head of any THP).
pub fn compound_head(pfn: u64, window_base: u64, window: &[KFlags]) -> Option<u64> {
    let idx = pfn.checked_sub(window_base)? as usize;
    let own = *window.get(idx)?;
    if own.has(kpf::COMPOUND_HEAD) {
        return Some(pfn);
    }
    if !own.has(kpf::COMPOUND_TAIL) {
        return None;
    }
    (0..idx)
        .rev()
        .find(|&i| window[i].has(kpf::COMPOUND_HEAD))
        .map(|i| window_base + i as u64)
}

/// The value selected in a sysfs enum file such as
/// `always [madvise] never`, or the trimmed content of a plain file.
pub fn sysfs_value(content: &str) -> String {
    let t = content.trim();
    if let (Some(a), Some(b)) = (t.find('['), t.find(']')) {
        if a < b {
            return t[a + 1..b].to_string();
        }
    }
    t.to_string()
}

/// Parses `AnonHugePages` per VMA from /proc/PID/smaps: `(start, end, bytes)`.
pub fn smaps_anon_huge(smaps: &str) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                out.push((s, e, 0));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("AnonHugePages:") {
            let kb: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if let Some(last) = out.last_mut() {
                last.2 = kb * 1024;
            }
        }
    }
    out
}

/// Whether the VMA of /proc/PID/smaps that holds `addr` is VM_LOCKED
/// (`lo` among its VmFlags); false when no VMA holds it.
pub fn smaps_vm_locked(smaps: &str, addr: u64) -> bool {
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                inside = s <= addr && addr < e;
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix("VmFlags:") {
                return rest.split_whitespace().any(|f| f == "lo");
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_locked_comes_from_the_vma_holding_the_address() {
        let smaps = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
VmFlags: rd wr mr mw me lo ac sd
7f0000200000-7f0000400000 rw-p 00000000 00:00 0
Size:               2048 kB
VmFlags: rd wr mr mw me ac sd
";
        assert!(smaps_vm_locked(smaps, 0x7f0000000000));
        assert!(smaps_vm_locked(smaps, 0x7f00001fffff));
        assert!(!smaps_vm_locked(smaps, 0x7f0000200000));
        assert!(!smaps_vm_locked(smaps, 0x7f0000400000));
        assert!(!smaps_vm_locked("", 0));
    }

    // Values observed on Linux 6.18 (x86_64).
    const THP_HEAD_ANON: u64 = 0x4_0040_d828;
    const THP_TAIL_ANON: u64 = 0x4_0041_5828;
    const HUGE_ZERO_HEAD: u64 = 0x140_8000;
    const HUGE_ZERO_TAIL: u64 = 0x141_0000;
    const ZERO_4K: u64 = 0x1_0100_0000;
    const BASE_ANON: u64 = 0x4_0000_5838;

    #[test]
    fn pagemap_bits() {
        let e = PagemapEntry(0x8100_0000_0019_5e01);
        assert!(e.present());
        assert!(!e.swapped());
        assert!(e.exclusive());
        assert_eq!(e.pfn(), Some(0x19_5e01));
        let z = PagemapEntry(0xa000_0000_0026_5000);
        assert!(z.present() && !z.exclusive());
        assert_eq!(z.pfn(), Some(0x26_5000));
        let none = PagemapEntry(0);
        assert_eq!(none.pfn(), None);
        assert_eq!(none.swap_type(), None);
        let sw = PagemapEntry(PagemapEntry::SWAPPED | (7 << 5) | 3);
        assert_eq!(sw.swap_type(), Some(3));
        assert_eq!(sw.pfn(), None);
    }

    #[test]
    fn kinds() {
        let t = SwapTypes::with(false, true, 0);
        let t = &t;
        let p = PagemapEntry(PagemapEntry::PRESENT | 5);
        assert_eq!(classify(p, KFlags(THP_HEAD_ANON), true, t), Kind::ThpPmd);
        assert_eq!(classify(p, KFlags(THP_TAIL_ANON), false, t), Kind::ThpPte);
        assert_eq!(classify(p, KFlags(HUGE_ZERO_HEAD), true, t), Kind::Zero);
        assert_eq!(classify(p, KFlags(HUGE_ZERO_TAIL), true, t), Kind::Zero);
        assert_eq!(classify(p, KFlags(ZERO_4K), false, t), Kind::Zero);
        assert_eq!(classify(p, KFlags(BASE_ANON), false, t), Kind::Base);
        assert_eq!(
            classify(p, KFlags(1 << kpf::HUGE | 1 << kpf::COMPOUND_HEAD), true, t),
            Kind::Hugetlb
        );
        assert_eq!(classify(PagemapEntry(0), KFlags(0), false, t), Kind::None);
        // Swap type 1, offset 0x1234.
        let sw = PagemapEntry(PagemapEntry::SWAPPED | 0x1234 << 5 | 1);
        assert_eq!(classify(sw, KFlags(0), false, t), Kind::Swap);
        // A migration entry: type MAX_SWAPFILES + 2 (write), offset a PFN.
        let mig = PagemapEntry(PagemapEntry::SWAPPED | 0x19_5e01 << 5 | 30);
        assert_eq!(classify(mig, KFlags(0), false, t), Kind::Migration);
        let marker = PagemapEntry(PagemapEntry::SWAPPED | 31);
        assert_eq!(classify(marker, KFlags(0), false, t), Kind::None);
        assert_eq!(Kind::ThpPmd.keyword(), "thp-pmd");
    }

    /// include/linux/swap.h for the configurations that matter.
    #[test]
    fn swap_type_layouts() {
        // This machine (6.18: MIGRATION, no MEMORY_FAILURE, no DEVICE_PRIVATE):
        // MAX_SWAPFILES 28, migration 28..31, marker 31.
        let config = "CONFIG_SWAP=y\nCONFIG_MIGRATION=y\n# CONFIG_DEVICE_PRIVATE is not set\n";
        let t = SwapTypes::for_kernel("6.18.44-fc-v973", Some(config));
        assert_eq!(t, SwapTypes::with(false, true, 0));
        assert_eq!(
            (t.max_swapfiles, t.migration, t.pte_marker),
            (28, (28, 31), 31)
        );
        assert_eq!(t.kind(0), Kind::Swap);
        assert_eq!(t.kind(27), Kind::Swap);
        for ty in 28..31 {
            assert_eq!(t.kind(ty), Kind::Migration);
        }
        assert_eq!(t.kind(31), Kind::None);
        // A distribution kernel: MEMORY_FAILURE, MIGRATION, DEVICE_PRIVATE.
        let full = "CONFIG_MEMORY_FAILURE=y\nCONFIG_MIGRATION=y\nCONFIG_DEVICE_PRIVATE=y\n";
        let t = SwapTypes::for_kernel("6.8.0-45-generic", Some(full));
        assert_eq!((t.max_swapfiles, t.migration), (23, (24, 27)));
        let t = SwapTypes::for_kernel("6.18.0", Some(full));
        assert_eq!((t.max_swapfiles, t.migration), (24, (25, 28)));
        // Unknown configuration: the lowest MAX_SWAPFILES.
        let t = SwapTypes::for_kernel("6.18.0", None);
        assert_eq!(t.max_swapfiles, 23);
        assert_eq!(t.kind(0), Kind::Swap);
        assert_eq!(t.kind(30), Kind::Migration);
        // `CONFIG_MIGRATION=yes` or a longer name is not the option.
        let t = SwapTypes::for_kernel("6.18.0", Some("CONFIG_MIGRATION_FOO=y\n"));
        assert_eq!(t.max_swapfiles, 31);
    }

    #[test]
    fn heads() {
        let mut w = vec![KFlags(BASE_ANON); 512];
        w[0] = KFlags(THP_HEAD_ANON);
        for f in w.iter_mut().skip(1) {
            *f = KFlags(THP_TAIL_ANON);
        }
        let base = 0x19_5e00;
        assert_eq!(compound_head(base + 17, base, &w[..18]), Some(base));
        assert_eq!(compound_head(base, base, &w[..1]), Some(base));
        // A 16-frame mTHP at +32: its tails find it, not the PMD-aligned frame.
        w[32] = KFlags(THP_HEAD_ANON);
        assert_eq!(compound_head(base + 40, base, &w[..41]), Some(base + 32));
        let plain = vec![KFlags(BASE_ANON); 4];
        assert_eq!(compound_head(base + 3, base, &plain), None);
        assert_eq!(compound_head(base + 9, base, &plain), None);
        assert_eq!(compound_head(base - 1, base, &plain), None);
    }

    #[test]
    fn sysfs_values() {
        assert_eq!(sysfs_value("always [madvise] never\n"), "madvise");
        assert_eq!(sysfs_value("10000\n"), "10000");
        assert_eq!(
            sysfs_value("always defer defer+madvise [madvise] never"),
            "madvise"
        );
    }

    #[test]
    fn smaps_parse() {
        let s = "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n\
                 Size:               4096 kB\n\
                 AnonHugePages:      2048 kB\n\
                 7f0000600000-7f0000601000 rw-p 00000000 00:00 0 \n\
                 AnonHugePages:         0 kB\n";
        assert_eq!(
            smaps_anon_huge(s),
            vec![
                (0x7f00_0000_0000, 0x7f00_0040_0000, 2 << 20),
                (0x7f00_0060_0000, 0x7f00_0060_1000, 0)
            ]
        );
    }
}
