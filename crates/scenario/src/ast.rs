//! The typed syntax tree of a scenario.
//!
//! Every step, every name and every quantity carries a [`Span`] so that the
//! runner can point back at the source when a step fails. Quantities stay
//! unresolved (see [`Quantity::resolve`]) because the units `p`, `h` and `u`
//! depend on the geometry, which the command line may override.

use std::fmt;

use serde::Serialize;

use crate::error::ScenarioError;

/// A region of the source text: byte offset and byte length (for miette), and
/// the 1-based line and column (in characters) of its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Span {
    /// Byte offset just past the end.
    pub fn end(&self) -> usize {
        self.offset.saturating_add(self.len)
    }

    /// The span from the start of `self` to the end of `other` (which must be on
    /// the same line and not before `self`; otherwise `self` is returned).
    pub fn to(self, other: Span) -> Span {
        let end = other.end().max(self.end());
        Span {
            len: end.saturating_sub(self.offset),
            ..self
        }
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.offset, s.len).into()
    }
}

/// A value with the span of the source text it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Pairs a value with its span.
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

/// A name (process, region, pin or file): `[A-Za-z_][A-Za-z0-9_]*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Name {
    /// The name as written.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

impl Name {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Declares an enum of keywords: `keyword()`, `from_keyword()`, `ALL`,
/// `keywords()` (for help texts), `Display` as the keyword, and serde
/// serialisation as the keyword.
macro_rules! keyword_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident {
            $( $(#[$vm:meta])* $var:ident = $kw:literal ),+ $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $( $(#[$vm])* #[serde(rename = $kw)] $var ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The keyword as written in a scenario.
            pub fn keyword(self) -> &'static str {
                match self { $($name::$var => $kw),+ }
            }

            /// Parses the keyword as written in a scenario.
            pub fn from_keyword(s: &str) -> Option<Self> {
                match s { $($kw => Some($name::$var),)+ _ => None }
            }

            /// All keywords, separated by ` | ` (for help texts).
            pub fn keywords() -> String {
                let all: &[&str] = &[$($kw),+];
                all.join(" | ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.keyword())
            }
        }
    };
}

keyword_enum! {
    /// The page-table geometry (`geometry` header line).
    pub enum Geometry {
        /// 4 KiB pages, 512 entries a table, PMD 2 MiB, PUD 1 GiB.
        X86_64 = "x86_64",
        /// Small tables for exploration: 64-byte pages, 4 entries a table.
        Tiny = "tiny",
    }
}

impl Geometry {
    /// The sizes of the units `p`, `h` and `u` in this geometry.
    pub fn unit_sizes(self) -> UnitSizes {
        match self {
            Geometry::X86_64 => UnitSizes::X86_64,
            Geometry::Tiny => UnitSizes::TINY,
        }
    }
}

keyword_enum! {
    /// The THP policy (`thp` header line), as in
    /// /sys/kernel/mm/transparent_hugepage/enabled.
    pub enum ThpPolicy {
        /// THP on every eligible fault.
        Always = "always",
        /// THP only in `madvise(MADV_HUGEPAGE)` regions.
        Madvise = "madvise",
        /// No THP on faults.
        Never = "never",
    }
}

keyword_enum! {
    /// The expected result of a step (`=> OUTCOME`; `ok` when omitted).
    pub enum Outcome {
        /// The step succeeds.
        Ok = "ok",
        /// The access raises SIGSEGV.
        Segv = "segv",
        /// The access raises SIGBUS.
        Sigbus = "sigbus",
        /// The call fails with ENOMEM.
        Enomem = "enomem",
        /// The call fails with EINVAL.
        Einval = "einval",
        /// The call fails with EBUSY.
        Ebusy = "ebusy",
        /// The call fails with EFAULT (e.g. a pin over addresses with nothing
        /// mapped).
        Efault = "efault",
    }
}

keyword_enum! {
    /// `mprotect` protections.
    pub enum Protection {
        /// PROT_READ.
        R = "r",
        /// PROT_READ | PROT_WRITE.
        Rw = "rw",
        /// PROT_NONE.
        None = "none",
    }
}

keyword_enum! {
    /// `madvise` advice.
    pub enum Advice {
        /// MADV_HUGEPAGE.
        Hugepage = "hugepage",
        /// MADV_NOHUGEPAGE.
        Nohugepage = "nohugepage",
        /// MADV_DONTNEED.
        Dontneed = "dontneed",
        /// MADV_PAGEOUT.
        Pageout = "pageout",
        /// MADV_COLLAPSE (synchronous collapse).
        Collapse = "collapse",
        /// MADV_FREE.
        Free = "free",
    }
}

keyword_enum! {
    /// What `expect P A[off] KIND` says is mapped at a place.
    pub enum PageKind {
        /// Nothing mapped.
        None = "none",
        /// The shared zero page (4 KiB or huge).
        Zero = "zero",
        /// An ordinary page.
        Base = "base",
        /// A subpage of a THP mapped by a huge PMD.
        ThpPmd = "thp-pmd",
        /// A subpage of a THP mapped by a PTE.
        ThpPte = "thp-pte",
        /// A hugetlb page.
        Hugetlb = "hugetlb",
        /// A swap entry.
        Swap = "swap",
        /// A migration entry.
        Migration = "migration",
        /// A page of a VM_LOCKED mapping that is PageMlocked. Unlike the kinds
        /// above this is a property, not what is mapped: a `thp-pmd` subpage
        /// of an mlocked range is also `mlocked`.
        Mlocked = "mlocked",
    }
}

impl PageKind {
    /// The later-issue feature that checking this kind needs
    /// ([`Feature::Core`] if none): `mlocked` needs [`Feature::Mlock`].
    pub fn feature(self) -> Feature {
        match self {
            PageKind::Mlocked => Feature::Mlock,
            PageKind::None
            | PageKind::Zero
            | PageKind::Base
            | PageKind::ThpPmd
            | PageKind::ThpPte
            | PageKind::Hugetlb
            | PageKind::Swap
            | PageKind::Migration => Feature::Core,
        }
    }
}

keyword_enum! {
    /// The kernel design the model follows (`kernel` header line). Which seed
    /// fixes each one has is [`KernelVersion::has_fix`].
    pub enum KernelVersion {
        /// Linux 5.8 (the default): THPs mapped by PMDs and PTEs, split under
        /// the PMD lock.
        V5_8 = "5.8",
        /// Linux 3.16, the pre-4.5 THP design: a THP is mapped only by huge
        /// PMDs and `split_huge_page` splits every PMD mapping itself under
        /// the anon_vma lock.
        V3_16 = "3.16",
    }
}

keyword_enum! {
    /// The features that later issues add to the model; [`Feature::Core`] is
    /// everything else. See [`crate::check_supported`].
    pub enum Feature {
        /// Everything not listed below.
        Core = "core",
        /// `pin` / `unpin` (GUP).
        Pin = "pin",
        /// `pin ... fast`: pin_user_pages_fast() (the lockless walk first).
        PinFast = "pin ... fast",
        /// `pin` without `write`: a read-only long-term pin.
        PinReadOnly = "read-only pin",
        /// `mirror` and `mirror:` steps: secondary MMUs kept coherent by mmu
        /// notifiers.
        Mirror = "mirror",
        /// `device:` steps (DMA through pins).
        Device = "device",
        /// `move-pages` (migration).
        MovePages = "move-pages",
        /// `move-pages ... all` (MPOL_MF_MOVE_ALL).
        MovePagesAll = "move-pages ... all",
        /// hugetlb mappings and files, a hugetlb pool.
        Hugetlb = "hugetlb",
        /// `memfd` and `mmap ... file=F`.
        Memfd = "memfd",
        /// A swap device (`swap` header line).
        Swap = "swap",
        /// `kernel: reclaim`.
        Reclaim = "reclaim",
        /// `kernel: khugepaged`.
        Khugepaged = "khugepaged",
        /// `mlock` / `munlock`.
        Mlock = "mlock",
        /// `madvise ... collapse`.
        Collapse = "madvise collapse",
        /// `madvise ... pageout`.
        Pageout = "madvise pageout",
        /// `madvise ... free` (MADV_FREE).
        Free = "madvise free",
        /// More than one NUMA node (`nodes N` with N > 1).
        Nodes = "nodes > 1",
        /// `kernel 3.16`: the pre-4.5 THP design.
        Kernel316 = "kernel 3.16",
        /// The `khugepaged max_ptes_...` header line. Only khugepaged scans
        /// read these limits (faults never do, and MADV_COLLAPSE, which 5.8
        /// does not have, ignores them), so a runner without `kernel: khugepaged`
        /// may accept the line as it is without effect there; a runner with
        /// khugepaged must apply [`crate::Scenario::khugepaged_limits`]. A
        /// runner on a real kernel must write them to sysfs (whose khugepaged
        /// runs in the background) or reject the line.
        KhugepagedLimits = "khugepaged limits",
    }
}

/// A unit suffix of a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Unit {
    /// `b` (or no suffix): bytes.
    Bytes,
    /// `k`: KiB.
    Kib,
    /// `m`: MiB.
    Mib,
    /// `g`: GiB.
    Gib,
    /// `p`: base pages of the geometry.
    Page,
    /// `h`: PMD-size huge pages of the geometry.
    Pmd,
    /// `u`: PUD-size pages of the geometry.
    Pud,
}

impl Unit {
    /// Parses a unit suffix letter.
    pub fn from_suffix(c: char) -> Option<Unit> {
        Some(match c {
            'b' => Unit::Bytes,
            'k' => Unit::Kib,
            'm' => Unit::Mib,
            'g' => Unit::Gib,
            'p' => Unit::Page,
            'h' => Unit::Pmd,
            'u' => Unit::Pud,
            _ => return None,
        })
    }

    /// The suffix letter; empty for bytes (the default).
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Bytes => "",
            Unit::Kib => "k",
            Unit::Mib => "m",
            Unit::Gib => "g",
            Unit::Page => "p",
            Unit::Pmd => "h",
            Unit::Pud => "u",
        }
    }

    /// The size of one unit in bytes.
    pub fn bytes(self, u: &UnitSizes) -> u64 {
        match self {
            Unit::Bytes => 1,
            Unit::Kib => 1 << 10,
            Unit::Mib => 1 << 20,
            Unit::Gib => 1 << 30,
            Unit::Page => u.page_bytes,
            Unit::Pmd => u.pmd_bytes,
            Unit::Pud => u.pud_bytes,
        }
    }
}

/// The sizes of the geometry-dependent units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct UnitSizes {
    /// `p`: a base page.
    pub page_bytes: u64,
    /// `h`: what a PMD maps.
    pub pmd_bytes: u64,
    /// `u`: what a PUD maps.
    pub pud_bytes: u64,
}

impl UnitSizes {
    /// x86_64: 4 KiB, 2 MiB, 1 GiB.
    pub const X86_64: UnitSizes = UnitSizes {
        page_bytes: 4096,
        pmd_bytes: 2 << 20,
        pud_bytes: 1 << 30,
    };
    /// tiny: 64-byte pages, 4 entries a table.
    pub const TINY: UnitSizes = UnitSizes {
        page_bytes: 64,
        pmd_bytes: 256,
        pud_bytes: 1024,
    };

    /// HPAGE_PMD_NR: base pages in a PMD-size huge page (512 on x86_64, 4 on
    /// tiny).
    pub fn hpage_pmd_nr(&self) -> u64 {
        self.pmd_bytes / self.page_bytes.max(1)
    }
}

/// A size or offset as written: a sum of terms such as `1h+3p+17`, not yet
/// resolved to bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quantity {
    /// Where it was written.
    pub span: Span,
    /// The terms of the sum, each a number and its unit.
    pub terms: Vec<(u64, Unit)>,
}

impl Quantity {
    /// The value in bytes for the given unit sizes; overflowing 64 bits is an
    /// error naming the quantity's line and column. The error carries no
    /// source text: use [`Scenario::resolve`] to get one that does.
    pub fn resolve(&self, u: &UnitSizes) -> Result<u64, ScenarioError> {
        let mut total: u64 = 0;
        for &(n, unit) in &self.terms {
            let term = n.checked_mul(unit.bytes(u));
            match term.and_then(|t| total.checked_add(t)) {
                Some(t) => total = t,
                None => {
                    return Err(ScenarioError::new(
                        self.span,
                        format!("`{self}` does not fit in 64 bits"),
                    ))
                }
            }
        }
        Ok(total)
    }

    /// True when some term uses a geometry-dependent unit (`p`, `h`, `u`).
    pub fn depends_on_geometry(&self) -> bool {
        self.terms
            .iter()
            .any(|(_, u)| matches!(u, Unit::Page | Unit::Pmd | Unit::Pud))
    }
}

impl fmt::Display for Quantity {
    /// Prints a source form (decimal, with unit suffixes), e.g. `1h+3p+17`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (n, u)) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{n}{}", u.suffix())?;
        }
        Ok(())
    }
}

/// What is inside the brackets of `A[...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Selector {
    /// `A[off]`: one place (a byte, or the page containing it).
    At(Quantity),
    /// `A[start..end]` (half-open), `A[start..]`, `A[..end]` or `A[..]`; a
    /// missing start is the start of the region, a missing end its end.
    Range {
        /// The first byte, or the start of the region.
        start: Option<Quantity>,
        /// One past the last byte, or the end of the region.
        end: Option<Quantity>,
    },
}

impl Selector {
    /// True for `A[off]`.
    pub fn is_place(&self) -> bool {
        matches!(self, Selector::At(_))
    }
}

impl fmt::Display for Selector {
    /// Prints the bracketed source form, e.g. `[1p..2h]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::At(q) => write!(f, "[{q}]"),
            Selector::Range { start, end } => {
                f.write_str("[")?;
                if let Some(s) = start {
                    write!(f, "{s}")?;
                }
                f.write_str("..")?;
                if let Some(e) = end {
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A place or range in a region (`A[1p]`, `A[0..2h]`), or, for `device:`
/// steps, in the pages a pin holds (`R[1p]`), or, for `mirror:` steps, in the
/// range a mirror covers (`M[1p]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// From the name to the closing bracket.
    pub span: Span,
    /// The region (or, for `device:` steps, the pin; for `mirror:` steps,
    /// the mirror).
    pub region: Name,
    /// The brackets.
    pub selector: Selector,
    /// The span of the brackets.
    pub selector_span: Span,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.region, self.selector)
    }
}

/// The header: machine configuration. Every line is optional; all must come
/// before the first step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Header {
    /// `geometry x86_64|tiny` (the command line may override it).
    pub geometry: Option<Spanned<Geometry>>,
    /// `thp always|madvise|never`.
    pub thp: Option<Spanned<ThpPolicy>>,
    /// `zero-page on|off`: the huge zero page on read faults.
    pub zero_page: Option<Spanned<bool>>,
    /// `nodes N`: NUMA nodes (default 1).
    pub nodes: Option<Spanned<u32>>,
    /// `hugetlb-pool N`: free PMD-size hugetlb pages per node (default 0).
    pub hugetlb_pool: Option<Spanned<u64>>,
    /// `swap SIZE`: swap device size (default: no swap).
    pub swap: Option<Quantity>,
    /// `memory SIZE` (extension to the contract): the simulated machine's RAM
    /// size. Default: chosen by the runner.
    pub memory: Option<Quantity>,
    /// `revert NAME` lines: fixed races to reopen (`thpsim fixes` lists them).
    pub reverts: Vec<Spanned<String>>,
    /// `kernel 5.8|3.16`: the kernel design the model follows.
    pub kernel: Option<Spanned<KernelVersion>>,
    /// `khugepaged max_ptes_none=N ...`: khugepaged's limits as written.
    pub khugepaged: Option<KhugepagedSettings>,
}

/// The `khugepaged` header line: the limits it sets, each at most once, none
/// resolved (the defaults follow the geometry, see
/// [`Header::khugepaged_limits`]). Each value's span covers `key=N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KhugepagedSettings {
    /// The whole line, from `khugepaged`.
    pub span: Span,
    /// `max_ptes_none=N`: how many empty (or zero-page) PTEs a collapse may fill.
    pub max_ptes_none: Option<Spanned<u64>>,
    /// `max_ptes_swap=N`: how many swapped-out PTEs a collapse may swap in.
    pub max_ptes_swap: Option<Spanned<u64>>,
    /// `max_ptes_shared=N`: how many pages mapped by other processes a
    /// collapse may copy.
    pub max_ptes_shared: Option<Spanned<u64>>,
}

impl KhugepagedSettings {
    /// The keys of the line, in the order of [`KhugepagedSettings::settings`].
    pub const KEYS: [&'static str; 3] = ["max_ptes_none", "max_ptes_swap", "max_ptes_shared"];

    /// Each key with its value, if set.
    pub fn settings(&self) -> [(&'static str, Option<&Spanned<u64>>); 3] {
        [
            (Self::KEYS[0], self.max_ptes_none.as_ref()),
            (Self::KEYS[1], self.max_ptes_swap.as_ref()),
            (Self::KEYS[2], self.max_ptes_shared.as_ref()),
        ]
    }
}

/// khugepaged's limits, resolved for one geometry and kernel
/// (/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct KhugepagedLimits {
    /// max_ptes_none.
    pub max_ptes_none: u64,
    /// max_ptes_swap.
    pub max_ptes_swap: u64,
    /// max_ptes_shared.
    pub max_ptes_shared: u64,
}

impl KhugepagedLimits {
    /// The limits as the kernel derives them from HPAGE_PMD_NR when nothing
    /// is set. 5.8 (khugepaged_init()): NR-1, NR/8, NR/2 (511, 64, 256 on
    /// x86_64; 3, 0, 2 on tiny). 3.16 has only max_ptes_none (NR-1); its scan
    /// gives up on any swap entry and on any page with another reference, so
    /// its swap and shared limits are 0.
    pub fn defaults(u: &UnitSizes, kernel: KernelVersion) -> Self {
        let nr = u.hpage_pmd_nr();
        match kernel {
            KernelVersion::V5_8 => KhugepagedLimits {
                max_ptes_none: nr.saturating_sub(1),
                max_ptes_swap: nr / 8,
                max_ptes_shared: nr / 2,
            },
            KernelVersion::V3_16 => KhugepagedLimits {
                max_ptes_none: nr.saturating_sub(1),
                max_ptes_swap: 0,
                max_ptes_shared: 0,
            },
        }
    }

    /// The largest value a limit may take: HPAGE_PMD_NR-1 (the sysfs store
    /// rejects more with EINVAL).
    pub fn max(u: &UnitSizes) -> u64 {
        u.hpage_pmd_nr().saturating_sub(1)
    }
}

impl Header {
    /// The geometry (`geometry` line), or the default `x86_64`.
    pub fn geometry(&self) -> Geometry {
        self.geometry.as_ref().map_or(Geometry::X86_64, |g| g.value)
    }

    /// The THP policy (`thp` line), or the default `always`.
    pub fn thp(&self) -> ThpPolicy {
        self.thp.as_ref().map_or(ThpPolicy::Always, |t| t.value)
    }

    /// The huge zero page setting (`zero-page` line), or the default `on`.
    pub fn zero_page(&self) -> bool {
        self.zero_page.as_ref().is_none_or(|z| z.value)
    }

    /// The number of NUMA nodes (`nodes` line), or the default 1.
    pub fn nodes(&self) -> u32 {
        self.nodes.as_ref().map_or(1, |n| n.value)
    }

    /// Free hugetlb pages per node (`hugetlb-pool` line), or the default 0.
    pub fn hugetlb_pool(&self) -> u64 {
        self.hugetlb_pool.as_ref().map_or(0, |p| p.value)
    }

    /// The swap device's size (`swap` line), or `None`: no swap (the default).
    pub fn swap(&self) -> Option<&Quantity> {
        self.swap.as_ref()
    }

    /// The kernel design (`kernel` line), or the default 5.8.
    pub fn kernel(&self) -> KernelVersion {
        self.kernel
            .as_ref()
            .map_or(KernelVersion::V5_8, |k| k.value)
    }

    /// khugepaged's limits for a geometry: what the `khugepaged` line sets,
    /// the kernel's defaults ([`KhugepagedLimits::defaults`]) for the rest.
    /// A value above HPAGE_PMD_NR-1 in this geometry is an error at that
    /// value (without source text; [`Scenario::khugepaged_limits`] gives one
    /// with it).
    pub fn khugepaged_limits(&self, u: &UnitSizes) -> Result<KhugepagedLimits, ScenarioError> {
        let mut limits = KhugepagedLimits::defaults(u, self.kernel());
        let Some(k) = &self.khugepaged else {
            return Ok(limits);
        };
        let max = KhugepagedLimits::max(u);
        for (key, value) in k.settings() {
            let Some(v) = value else { continue };
            if v.value > max {
                return Err(ScenarioError::new(
                    v.span,
                    format!(
                        "{key}={} is above HPAGE_PMD_NR-1 = {max} in this geometry",
                        v.value
                    ),
                )
                .with_help(format!(
                    "a huge page has {} base pages here; the kernel rejects larger values with EINVAL",
                    u.hpage_pmd_nr()
                )));
            }
            match key {
                "max_ptes_none" => limits.max_ptes_none = v.value,
                "max_ptes_swap" => limits.max_ptes_swap = v.value,
                _ => limits.max_ptes_shared = v.value,
            }
        }
        Ok(limits)
    }

    /// The features the header needs, each with the span of its value:
    /// `swap` → [`Feature::Swap`], `nodes N>1` → [`Feature::Nodes`],
    /// `hugetlb-pool N>0` → [`Feature::Hugetlb`], `kernel 3.16` →
    /// [`Feature::Kernel316`], `khugepaged ...` → [`Feature::KhugepagedLimits`].
    pub fn features(&self) -> Vec<(Feature, Span)> {
        let mut out = Vec::new();
        if let Some(k) = &self.kernel {
            if k.value == KernelVersion::V3_16 {
                out.push((Feature::Kernel316, k.span));
            }
        }
        if let Some(k) = &self.khugepaged {
            out.push((Feature::KhugepagedLimits, k.span));
        }
        if let Some(n) = &self.nodes {
            if n.value > 1 {
                out.push((Feature::Nodes, n.span));
            }
        }
        if let Some(p) = &self.hugetlb_pool {
            if p.value > 0 {
                out.push((Feature::Hugetlb, p.span));
            }
        }
        if let Some(s) = &self.swap {
            out.push((Feature::Swap, s.span));
        }
        out
    }
}

/// A parsed (and statically checked) scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// The name given to [`crate::parse`] (usually the file name).
    pub name: String,
    /// The whole source text.
    pub source: String,
    /// The header lines.
    pub header: Header,
    /// The statements after (and among) the header, in order.
    pub items: Vec<Item>,
}

impl Scenario {
    /// Every step in source order, including the steps of `together` threads.
    pub fn steps(&self) -> impl Iterator<Item = &Step> + '_ {
        self.items
            .iter()
            .flat_map(|item| -> Box<dyn Iterator<Item = &Step> + '_> {
                match item {
                    Item::Step(s) => Box::new(std::iter::once(s)),
                    Item::Together(t) => Box::new(t.threads.iter().flat_map(|th| th.steps.iter())),
                    _ => Box::new(std::iter::empty()),
                }
            })
    }

    /// The unit sizes of the header's geometry, or of `geometry` when given
    /// (a command-line override); x86_64 when neither says.
    pub fn unit_sizes(&self, geometry: Option<Geometry>) -> UnitSizes {
        geometry
            .or(self.header.geometry.as_ref().map(|g| g.value))
            .unwrap_or(Geometry::X86_64)
            .unit_sizes()
    }

    /// [`Quantity::resolve`], with the error pointing into this scenario's source.
    pub fn resolve(&self, q: &Quantity, u: &UnitSizes) -> Result<u64, ScenarioError> {
        q.resolve(u)
            .map_err(|e| e.with_source(&self.name, &self.source))
    }

    /// An error at `span` in this scenario's source (for runners that report a
    /// failing step).
    pub fn error_at(&self, span: Span, message: impl Into<String>) -> ScenarioError {
        ScenarioError::new(span, message).with_source(&self.name, &self.source)
    }

    /// The source text of a span (empty if the span is out of range).
    pub fn text(&self, span: Span) -> &str {
        self.source.get(span.offset..span.end()).unwrap_or("")
    }

    /// khugepaged's limits in the header's geometry, or in `geometry` when
    /// given (a command-line override); see [`Header::khugepaged_limits`].
    pub fn khugepaged_limits(
        &self,
        geometry: Option<Geometry>,
    ) -> Result<KhugepagedLimits, ScenarioError> {
        self.header
            .khugepaged_limits(&self.unit_sizes(geometry))
            .map_err(|e| e.with_source(&self.name, &self.source))
    }

    /// Repeats the static checks that depend on the geometry for another one
    /// (a command-line override): khugepaged limits within HPAGE_PMD_NR-1,
    /// `device:` accesses inside their pin and `mirror:` accesses inside
    /// their mirror. [`crate::parse`] has made them in the header's geometry.
    pub fn check_geometry(&self, geometry: Geometry) -> Result<(), ScenarioError> {
        crate::check::check(&self.header, &self.items, &geometry.unit_sizes())
            .map_err(|d| d.into_error().with_source(&self.name, &self.source))
    }

    /// Every feature the scenario uses (header, steps and `expect` lines),
    /// each with the span of its first use in source order ([`Feature::Core`]
    /// omitted).
    pub fn features(&self) -> Vec<(Feature, Span)> {
        let mut all = self.header.features();
        for step in self.steps() {
            all.extend(step.features());
        }
        for item in &self.items {
            if let Item::Expect(e) = item {
                all.extend(e.features());
            }
        }
        all.sort_by_key(|(_, s)| s.offset);
        let mut seen = Vec::new();
        all.retain(|(f, _)| {
            if *f == Feature::Core || seen.contains(f) {
                false
            } else {
                seen.push(*f);
                true
            }
        });
        all
    }
}

/// A statement of the scenario body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Item {
    /// `CONTEXT: OP ARGS [=> OUTCOME]`.
    Step(Step),
    /// `together` ... `end`.
    Together(Together),
    /// `process P`: declares a process (may appear anywhere; the span is the
    /// whole statement, the name carries its own).
    Process(Spanned<Name>),
    /// `expect P A[off] ...`.
    Expect(Expect),
    /// `show P A[range]`.
    Show(Show),
}

impl Item {
    /// The whole statement (or block).
    pub fn span(&self) -> Span {
        match self {
            Item::Step(s) => s.span,
            Item::Together(t) => t.span,
            Item::Process(p) => p.span,
            Item::Expect(e) => e.span,
            Item::Show(s) => s.span,
        }
    }
}

/// A `together` block: threads that run at the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Together {
    /// The `together` keyword (the block spans several lines; errors about the
    /// block point here).
    pub span: Span,
    /// The `thread` lines, in order.
    pub threads: Vec<Thread>,
}

/// `thread CTX: step; step; ...` — one CPU's sequence of steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thread {
    /// The whole line from `thread`.
    pub span: Span,
    /// Who runs the steps.
    pub context: Context,
    /// The steps (at least one); each carries a copy of the thread's context.
    pub steps: Vec<Step>,
}

/// Who performs a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Context {
    /// A user process (its name).
    Process(Name),
    /// `kernel`: work the kernel does on its own.
    Kernel,
    /// `device`: a DMA engine using pinned pages.
    Device,
    /// `mirror`: secondary MMUs (accesses through their own translation cache).
    Mirror,
}

impl Context {
    /// The process name, if the context is a process.
    pub fn process(&self) -> Option<&Name> {
        match self {
            Context::Process(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Context::Process(n) => write!(f, "{n}"),
            Context::Kernel => f.write_str("kernel"),
            Context::Device => f.write_str("device"),
            Context::Mirror => f.write_str("mirror"),
        }
    }
}

/// One step: `CONTEXT: OP ARGS [=> OUTCOME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// From the context to the end of the step (in a thread, a step after the
    /// first starts at its operation unless it restates the context).
    pub span: Span,
    /// The operation keyword (`mmap`, `split-huge-page`, ...).
    pub op_span: Span,
    /// Who performs it.
    pub context: Context,
    /// What it does.
    pub op: Op,
    /// `=> OUTCOME`, if written (absent means `ok`).
    pub outcome: Option<Spanned<Outcome>>,
}

impl Step {
    /// The expected outcome (`ok` when not written).
    pub fn expected(&self) -> Outcome {
        self.outcome.as_ref().map_or(Outcome::Ok, |o| o.value)
    }

    /// The features this step needs, each with the span to blame (the
    /// operation keyword, or the argument that needs the feature).
    pub fn features(&self) -> Vec<(Feature, Span)> {
        let mut out = vec![(self.op.feature(), self.op_span)];
        match &self.op {
            Op::Mmap { backing, .. } => out = vec![(self.op.feature(), backing.span)],
            Op::Madvise { advice, .. } => out = vec![(self.op.feature(), advice.span)],
            Op::Memfd { hugetlb: true, .. } => out.push((Feature::Hugetlb, self.op_span)),
            Op::MovePages { all: true, .. } => out.push((Feature::MovePagesAll, self.op_span)),
            Op::Pin { write, fast, .. } => {
                if !write {
                    out.push((Feature::PinReadOnly, self.op_span));
                }
                if *fast {
                    out.push((Feature::PinFast, self.op_span));
                }
            }
            _ => {}
        }
        out
    }
}

/// How `mmap` backs a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Backing {
    /// Anonymous memory (THP-eligible).
    Anon,
    /// `hugetlb`: hugetlb-backed, PMD-size pages.
    Hugetlb,
    /// `file=F`: a shared-memory file made by `memfd`.
    File(Name),
}

/// The operation of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `P: fork C`.
    Fork {
        /// The new child.
        child: Name,
    },
    /// `P: exit`.
    Exit,
    /// `P: mmap A SIZE [shared] [hugetlb | file=F]`.
    Mmap {
        /// The new region.
        region: Name,
        /// Its size.
        size: Quantity,
        /// Anonymous, hugetlb or file; the span is the modifier word (or the
        /// size, for plain anonymous memory).
        backing: Spanned<Backing>,
        /// MAP_SHARED (otherwise MAP_PRIVATE). Always true for `file=F`.
        shared: bool,
    },
    /// `P: memfd F SIZE [hugetlb]`.
    Memfd {
        /// The new file.
        file: Name,
        /// Its size.
        size: Quantity,
        /// hugetlbfs-backed.
        hugetlb: bool,
    },
    /// `P: munmap RANGE`.
    Munmap {
        /// The range.
        target: Target,
    },
    /// `P: mprotect RANGE r|rw|none`.
    Mprotect {
        /// The range.
        target: Target,
        /// The new protection.
        prot: Spanned<Protection>,
    },
    /// `P: madvise RANGE ADVICE`.
    Madvise {
        /// The range.
        target: Target,
        /// The advice.
        advice: Spanned<Advice>,
    },
    /// `P: move-pages RANGE node=N [all]`: move_pages(2) with MPOL_MF_MOVE, or
    /// MPOL_MF_MOVE_ALL with `all`.
    MovePages {
        /// The range.
        target: Target,
        /// The destination node (below `nodes N`).
        node: Spanned<u32>,
        /// MPOL_MF_MOVE_ALL: also pages mapped by other processes.
        all: bool,
    },
    /// `P: mlock RANGE`.
    Mlock {
        /// The range.
        target: Target,
    },
    /// `P: munlock RANGE`.
    Munlock {
        /// The range.
        target: Target,
    },
    /// `P: write RANGE-or-PLACE = BYTE`.
    Write {
        /// Where to write.
        target: Target,
        /// The byte written.
        value: Spanned<u8>,
    },
    /// `P: read PLACE [== BYTE]`.
    Read {
        /// Where to read.
        target: Target,
        /// The byte the read must return, if asserted.
        expect: Option<Spanned<u8>>,
    },
    /// `P: pin R = RANGE [write] [fast]`: pin_user_pages(FOLL_LONGTERM), or
    /// pin_user_pages_fast() with `fast`.
    Pin {
        /// The pin's name.
        pin: Name,
        /// The pinned range.
        target: Target,
        /// FOLL_WRITE (without it, a read-only long-term pin).
        write: bool,
        /// pin_user_pages_fast(): the lockless page-table walk first.
        fast: bool,
    },
    /// `P: unpin R`.
    Unpin {
        /// The pin.
        pin: Name,
    },
    /// `device: write R[...] = BYTE` (the target's name is the pin).
    DeviceWrite {
        /// Place or range in the pinned pages.
        target: Target,
        /// The byte written.
        value: Spanned<u8>,
    },
    /// `device: read R[off] [== BYTE]`.
    DeviceRead {
        /// Place in the pinned pages.
        target: Target,
        /// The byte the read must return, if asserted.
        expect: Option<Spanned<u8>>,
    },
    /// `P: mirror M = RANGE`: registers the secondary MMU `M` over that range
    /// of the process (an mmu notifier).
    Mirror {
        /// The mirror's name.
        mirror: Name,
        /// The mirrored range.
        target: Target,
    },
    /// `mirror: write M[...] = BYTE` (the target's name is the mirror; offsets
    /// are relative to the mirror's start).
    MirrorWrite {
        /// Place or range in the mirrored range.
        target: Target,
        /// The byte written.
        value: Spanned<u8>,
    },
    /// `mirror: read M[off] [== BYTE]`.
    MirrorRead {
        /// Place in the mirrored range.
        target: Target,
        /// The byte the read must return, if asserted.
        expect: Option<Spanned<u8>>,
    },
    /// `kernel: split-huge-page P A[off]`.
    SplitHugePage {
        /// Whose address space.
        process: Name,
        /// The address.
        target: Target,
    },
    /// `kernel: khugepaged P RANGE`.
    Khugepaged {
        /// Whose address space.
        process: Name,
        /// The range scanned.
        target: Target,
    },
    /// `kernel: reclaim P RANGE`.
    Reclaim {
        /// Whose address space.
        process: Name,
        /// The range to reclaim.
        target: Target,
    },
    /// `kernel: deferred-split`.
    DeferredSplit,
}

impl Op {
    /// The keyword of the operation as written (`device:` and `mirror:` ops
    /// are `write`/`read`).
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Fork { .. } => "fork",
            Op::Exit => "exit",
            Op::Mmap { .. } => "mmap",
            Op::Memfd { .. } => "memfd",
            Op::Munmap { .. } => "munmap",
            Op::Mprotect { .. } => "mprotect",
            Op::Madvise { .. } => "madvise",
            Op::MovePages { .. } => "move-pages",
            Op::Mlock { .. } => "mlock",
            Op::Munlock { .. } => "munlock",
            Op::Write { .. } | Op::DeviceWrite { .. } | Op::MirrorWrite { .. } => "write",
            Op::Read { .. } | Op::DeviceRead { .. } | Op::MirrorRead { .. } => "read",
            Op::Mirror { .. } => "mirror",
            Op::Pin { .. } => "pin",
            Op::Unpin { .. } => "unpin",
            Op::SplitHugePage { .. } => "split-huge-page",
            Op::Khugepaged { .. } => "khugepaged",
            Op::Reclaim { .. } => "reclaim",
            Op::DeferredSplit => "deferred-split",
        }
    }

    /// The later-issue feature this operation needs ([`Feature::Core`] if none).
    /// `memfd F SIZE hugetlb` also needs [`Feature::Hugetlb`], `move-pages
    /// ... all` [`Feature::MovePagesAll`], a pin without
    /// `write` [`Feature::PinReadOnly`], a pin with `fast`
    /// [`Feature::PinFast`]; see [`Step::features`].
    pub fn feature(&self) -> Feature {
        match self {
            Op::Pin { .. } | Op::Unpin { .. } => Feature::Pin,
            Op::DeviceWrite { .. } | Op::DeviceRead { .. } => Feature::Device,
            Op::Mirror { .. } | Op::MirrorWrite { .. } | Op::MirrorRead { .. } => Feature::Mirror,
            Op::MovePages { .. } => Feature::MovePages,
            Op::Mmap { backing, .. } => match backing.value {
                Backing::Anon => Feature::Core,
                Backing::Hugetlb => Feature::Hugetlb,
                Backing::File(_) => Feature::Memfd,
            },
            Op::Memfd { .. } => Feature::Memfd,
            Op::Mlock { .. } | Op::Munlock { .. } => Feature::Mlock,
            Op::Madvise { advice, .. } => match advice.value {
                Advice::Collapse => Feature::Collapse,
                Advice::Pageout => Feature::Pageout,
                Advice::Free => Feature::Free,
                Advice::Hugepage | Advice::Nohugepage | Advice::Dontneed => Feature::Core,
            },
            Op::Khugepaged { .. } => Feature::Khugepaged,
            Op::Reclaim { .. } => Feature::Reclaim,
            Op::Fork { .. }
            | Op::Exit
            | Op::Munmap { .. }
            | Op::Mprotect { .. }
            | Op::Write { .. }
            | Op::Read { .. }
            | Op::SplitHugePage { .. }
            | Op::DeferredSplit => Feature::Core,
        }
    }

    /// The place or range the operation works on, if any.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Op::Munmap { target }
            | Op::Mprotect { target, .. }
            | Op::Madvise { target, .. }
            | Op::MovePages { target, .. }
            | Op::Mlock { target }
            | Op::Munlock { target }
            | Op::Write { target, .. }
            | Op::Read { target, .. }
            | Op::Pin { target, .. }
            | Op::DeviceWrite { target, .. }
            | Op::DeviceRead { target, .. }
            | Op::Mirror { target, .. }
            | Op::MirrorWrite { target, .. }
            | Op::MirrorRead { target, .. }
            | Op::SplitHugePage { target, .. }
            | Op::Khugepaged { target, .. }
            | Op::Reclaim { target, .. } => Some(target),
            Op::Fork { .. }
            | Op::Exit
            | Op::Mmap { .. }
            | Op::Memfd { .. }
            | Op::Unpin { .. }
            | Op::DeferredSplit => None,
        }
    }
}

/// `expect P A[off] ...`: an assertion on the state of one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    /// The whole statement.
    pub span: Span,
    /// Whose address space.
    pub process: Name,
    /// The place.
    pub target: Target,
    /// What must hold.
    pub what: Expectation,
}

impl Expect {
    /// The features checking this needs: `mlocked` needs [`Feature::Mlock`].
    pub fn features(&self) -> Vec<(Feature, Span)> {
        match &self.what {
            Expectation::Kind(k) if k.value.feature() != Feature::Core => {
                vec![(k.value.feature(), k.span)]
            }
            _ => Vec::new(),
        }
    }
}

/// What an `expect` asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Expectation {
    /// `none | zero | base | thp-pmd | thp-pte | hugetlb | swap | migration`,
    /// or `mlocked`.
    Kind(Spanned<PageKind>),
    /// `mapcount N`: the subpage's mapcount as /proc/kpagecount reports it.
    Mapcount(Spanned<u64>),
    /// `same C A[off]`: the same physical page as that place.
    Same {
        /// The other process.
        process: Name,
        /// The place in it.
        target: Target,
    },
    /// `other C A[off]`: a different physical page.
    Other {
        /// The other process.
        process: Name,
        /// The place in it.
        target: Target,
    },
    /// `node N`: the page is on NUMA node N.
    Node(Spanned<u32>),
}

/// `show P RANGE`: report the state of each page (for conformance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Show {
    /// The whole statement.
    pub span: Span,
    /// Whose address space.
    pub process: Name,
    /// The range (or a single place).
    pub target: Target,
}
