//! The quiescent-point audit: walk every page table of every live mm and
//! recompute, from the tables alone, what each frame's counters must be; then
//! compare with the counters. Independent of the code that maintains them: it
//! reads raw `struct page` fields and raw entries, never the model's mapcount
//! helpers.
//!
//! Pins are references too: the caller passes the pages its pins hold (one
//! entry per pinned page per pin, as the driver's pages array has them), and
//! the audit adds what 5.8 adds for each: GUP_PIN_COUNTING_BIAS to a base
//! page's `_refcount`, or one to the head's `_refcount` and one to the exact
//! pin count of a compound page of order > 1.
//!
//! Run only when no CPU is inside the kernel (between steps).

use super::{invariants as inv, Violation, ViolationKind};
use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::hash::{FastMap, FastSet};
use crate::mm_types::{MmStruct, Vma};
use crate::page::pg;
use crate::pgtable::{Pmd, Pte, Upper};
use crate::profile::KernelProfile;
use crate::types::{Geometry, Level, Pfn, VirtAddr};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Default)]
struct Tally {
    pte_maps: FastMap<Pfn, i64>,
    pmd_maps: FastMap<Pfn, i64>,
    /// Per head frame: the references the pins hold, and the pinned subpages
    /// (the exact pin count of a compound page).
    pin_refs: FastMap<Pfn, i64>,
    pin_count: FastMap<Pfn, i64>,
    /// Under `kernel 3.16`: the pins of each tail page of a whole THP.
    tail_pins: FastMap<Pfn, i64>,
    /// Frames a PTE of a VM_LOCKED VMA maps, and THP heads a huge PMD of one
    /// maps.
    locked_ptes: FastSet<Pfn>,
    locked_pmds: FastSet<Pfn>,
    tables: BTreeSet<Pfn>,
    /// How many upper-level entries point at each PMD table (more than one:
    /// a shared hugetlb PMD table, whose page's refcount counts them).
    table_refs: FastMap<Pfn, i64>,
    /// Hugetlb heads each file's page cache holds (one reference each).
    cached: FastMap<Pfn, crate::types::FileId>,
    /// Per swap slot, the swap PTEs that reference it.
    swap_ptes: BTreeMap<u64, i64>,
    /// The frames in the swap cache (one reference each, held on the head)
    /// and their slots.
    swap_cached: FastMap<Pfn, u64>,
    violations: Vec<Violation>,
}

impl Tally {
    fn fail(&mut self, id: &'static str, message: String, page: Option<Pfn>) {
        self.violations.push(Violation {
            id,
            kind: ViolationKind::Audit,
            message,
            cpu: None,
            backtrace: Vec::new(),
            page,
        });
    }
}

/// Audits the whole machine. `cpu` is an idle CPU used only to read.
pub fn audit<E: Engine>(cpu: &Cpu<E>) -> Vec<Violation> {
    audit_pinned(cpu, &[])
}

/// Audits the whole machine with the pins held: `pinned` has one entry per
/// page of each pin (a page pinned twice appears twice).
pub fn audit_pinned<E: Engine>(cpu: &Cpu<E>, pinned: &[Pfn]) -> Vec<Violation> {
    let k = &cpu.k;
    let g = k.geo;
    let mut t = Tally::default();
    for &p in pinned {
        let head = k.mem.page(p).tail_head_peek().unwrap_or(p);
        let hp = k.mem.page(head);
        if k.cfg.kernel == KernelProfile::V3_16 {
            // get_page_foll(), v3.16: one reference on the head, and one in a
            // tail's _mapcount while the THP is whole.
            *t.pin_refs.entry(head).or_default() += 1;
            if head != p {
                *t.tail_pins.entry(p).or_default() += 1;
            }
            continue;
        }
        // hpage_pincount_available()
        if hp.test_flag_peek(pg::HEAD) && hp.compound_order_peek() > 1 {
            *t.pin_refs.entry(head).or_default() += 1;
            *t.pin_count.entry(head).or_default() += 1;
        } else {
            *t.pin_refs.entry(head).or_default() += crate::gup::GUP_PIN_COUNTING_BIAS;
        }
    }
    for f in k.all_files() {
        for (_, page) in f.cached() {
            t.cached.insert(page, f.id);
        }
    }
    if let Some(si) = &k.swap {
        for (&off, &page) in &si.peek().cache {
            t.swap_cached.insert(page, off);
        }
    }
    for mm in k.all_mms() {
        if mm.exited.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        walk_mm(cpu, &mm, &g, &mut t);
    }
    check_swap(cpu, &mut t);
    check_frames(cpu, &mut t);
    check_deferred(cpu, &mut t);
    check_locks(cpu, &mut t);
    check_tlbs(cpu, &mut t);
    check_mirrors(cpu, &mut t);
    check_hugetlb_pool(cpu, &mut t);
    t.violations
}

fn walk_mm<E: Engine>(cpu: &Cpu<E>, mm: &Arc<MmStruct<E>>, g: &Geometry, t: &mut Tally) {
    let vmas = mm.vma_list();
    let vma_of = |a: VirtAddr| vmas.iter().find(|v| v.contains(a)).cloned();
    let pgd_span = 1u64 << g.pgdir_shift();
    // Only the entries ever made can be other than none (the tiny
    // geometry's PGD has 512, an mm uses a few).
    for (i, pgd) in mm.pgd.present() {
        let Upper::Table(pud_t) = Upper::decode(pgd) else {
            continue;
        };
        t.tables.insert(pud_t);
        for j in 0..g.ptrs(Level::Pud) {
            let Upper::Table(pmd_t) = Upper::decode(cpu.table(pud_t).peek(j)) else {
                continue;
            };
            *t.table_refs.entry(pmd_t).or_default() += 1;
            if !t.tables.insert(pmd_t) {
                // A hugetlb PMD table shared with another mm (huge_pmd_share()):
                // its entries are counted once, by the first mm that reached
                // it; this mm's VMA must be a shared hugetlb one covering the
                // PUD.
                let base = VirtAddr(i as u64 * pgd_span + j as u64 * g.pud_size());
                let ok = vma_of(base).is_some_and(|v| {
                    v.is_hugetlb()
                        && v.vm_flags() & crate::mm_types::vm::MAYSHARE != 0
                        && v.vm_start() <= base
                        && base.0 + g.pud_size() <= v.vm_end().0
                });
                if !ok {
                    t.fail(
                        inv::AUDIT_VMA,
                        format!(
                            "mm {} {:?}: PMD table {} is shared, but no shared hugetlb VMA of this mm covers the PUD",
                            mm.id.0, base, pmd_t.0
                        ),
                        Some(pmd_t),
                    );
                }
                continue;
            }
            let mut huge_entries = 0usize;
            for l in 0..g.ptrs(Level::Pmd) {
                let base = VirtAddr(
                    i as u64 * pgd_span + j as u64 * g.pud_size() + l as u64 * g.pmd_size(),
                );
                match Pmd::decode(cpu.table(pmd_t).peek(l)) {
                    Pmd::None => {}
                    Pmd::Table(pte_t) => {
                        t.tables.insert(pte_t);
                        walk_ptes(cpu, mm, pte_t, base, &vma_of, g, t);
                    }
                    Pmd::Huge { pfn, .. } if is_hugetlb_entry(cpu, &vma_of, pfn, base) => {
                        walk_hugetlb_entry(cpu, mm, pfn, base, &vma_of, t);
                    }
                    Pmd::Huge {
                        pfn,
                        invalid,
                        flags,
                    } => {
                        huge_entries += 1;
                        if flags.splitting {
                            t.fail(inv::AUDIT_THP_3_16, format!("mm {} {:?}: huge PMD left pmd_trans_splitting (split_huge_page() did not finish)", mm.id.0, base), Some(pfn));
                        }
                        if invalid {
                            t.fail(inv::AUDIT_VMA, format!("mm {} {:?}: huge PMD left invalidated (pmdp_invalidate without pmd_populate)", mm.id.0, base), Some(pfn));
                        }
                        match vma_of(base) {
                            Some(v)
                                if v.vm_end().0 >= base.0 + g.pmd_size()
                                    && v.vm_start() <= base =>
                            {
                                if !cpu.is_huge_zero_page(pfn) {
                                    *t.pmd_maps.entry(pfn).or_default() += 1;
                                    if v.vm_flags() & crate::mm_types::vm::LOCKED != 0 {
                                        t.locked_pmds.insert(pfn);
                                    }
                                    check_rmap(cpu, mm, &v, pfn, base, t);
                                }
                            }
                            _ => t.fail(
                                inv::AUDIT_VMA,
                                format!(
                                    "mm {} {:?}: huge PMD not wholly inside one VMA",
                                    mm.id.0, base
                                ),
                                Some(pfn),
                            ),
                        }
                    }
                    Pmd::Migration { pfn, .. } => {
                        huge_entries += 1;
                        t.fail(
                            inv::AUDIT_MIGRATION,
                            format!(
                                "mm {} {:?}: PMD migration entry at a quiescent point",
                                mm.id.0, base
                            ),
                            Some(pfn),
                        );
                    }
                }
            }
            let deposited = cpu
                .table(pmd_t)
                .deposited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if deposited.len() != huge_entries {
                t.fail(inv::AUDIT_VMA, format!("mm {}: PMD table {:?} has {huge_entries} huge PMDs but {} deposited page tables", mm.id.0, pmd_t, deposited.len()), None);
            }
            for d in deposited {
                t.tables.insert(d);
                let tb = cpu.table(d);
                if tb.present().next().is_some() {
                    t.fail(
                        inv::AUDIT_VMA,
                        format!("mm {}: deposited page table {:?} is not empty", mm.id.0, d),
                        None,
                    );
                }
            }
        }
    }
}

fn walk_ptes<E: Engine>(
    cpu: &Cpu<E>,
    mm: &Arc<MmStruct<E>>,
    pte_t: Pfn,
    base: VirtAddr,
    vma_of: &dyn Fn(VirtAddr) -> Option<Arc<Vma>>,
    g: &Geometry,
    t: &mut Tally,
) {
    for m in 0..g.ptrs(Level::Pte) {
        let addr = base.add_bytes(m as u64 * g.page_size());
        let pte = Pte::decode(cpu.table(pte_t).peek(m));
        if pte.is_none() {
            continue;
        }
        let Some(vma) = vma_of(addr) else {
            t.fail(
                inv::AUDIT_VMA,
                format!("mm {} {:?}: PTE {:?} outside any VMA", mm.id.0, addr, pte),
                pte.pfn(),
            );
            continue;
        };
        match pte {
            Pte::Present { pfn, .. } if pfn == cpu.k.zero_pfn => {}
            Pte::Present { pfn, .. } => {
                *t.pte_maps.entry(pfn).or_default() += 1;
                if vma.vm_flags() & crate::mm_types::vm::LOCKED != 0 {
                    t.locked_ptes.insert(pfn);
                }
                check_rmap(cpu, mm, &vma, pfn, addr, t);
            }
            Pte::Migration { pfn, .. } => {
                t.fail(
                    inv::AUDIT_MIGRATION,
                    format!(
                        "mm {} {:?}: migration entry at a quiescent point",
                        mm.id.0, addr
                    ),
                    Some(pfn),
                );
            }
            Pte::Swap(e) => {
                *t.swap_ptes.entry(e.0).or_default() += 1;
            }
            Pte::None => {}
        }
    }
}

/// The swap device's books (AUDIT-SWAP): each slot's count is the swap
/// PTEs that reference it and its SWAP_HAS_CACHE is whether the swap cache
/// holds it; every swap PTE references a slot in use; a swap cache page is
/// PageSwapCache with its slot in page_private(); each cluster counts its
/// slots in use, and a huge one holds a THP of the swap cache; the free
/// slots are what nr_swap_pages says.
fn check_swap<E: Engine>(cpu: &Cpu<E>, t: &mut Tally) {
    let k = &cpu.k;
    let Some(si) = &k.swap else {
        if let Some((&off, _)) = t.swap_ptes.iter().next() {
            t.fail(
                inv::AUDIT_SWAP,
                format!("swap entry {off} without a swap device"),
                None,
            );
        }
        return;
    };
    let st = si.peek();
    let mut fails = Vec::new();
    for (&off, &n) in &t.swap_ptes {
        let s = st.slot(off);
        if s.bad || s.count as i64 != n {
            fails.push((
                format!(
                    "swap slot {off}: swap_count {}{}, but {n} swap PTEs reference it",
                    s.count,
                    if s.bad { " (a bad slot)" } else { "" }
                ),
                None,
            ));
        }
    }
    let mut used = 0;
    let mut per_cluster: BTreeMap<u64, u64> = BTreeMap::new();
    for (&off, s) in &st.map {
        *per_cluster.entry(off / si.cluster_slots).or_default() += 1;
        if s.bad {
            continue;
        }
        used += 1;
        let ptes = t.swap_ptes.get(&off).copied().unwrap_or(0);
        if ptes == 0 && s.count > 0 {
            fails.push((
                format!(
                    "swap slot {off}: swap_count {}, but no swap PTE references it",
                    s.count
                ),
                None,
            ));
        }
        let cached = st.cache.get(&off).copied();
        if s.has_cache != cached.is_some() {
            fails.push((
                format!(
                    "swap slot {off}: SWAP_HAS_CACHE is {}, but the swap cache {}",
                    s.has_cache,
                    if cached.is_some() {
                        "holds it"
                    } else {
                        "does not hold it"
                    }
                ),
                cached,
            ));
        }
        if s.count == 0 && !s.has_cache {
            fails.push((format!("swap slot {off} is in use with no reference"), None));
        }
    }
    for (&off, &page) in &st.cache {
        let p = k.mem.page(page);
        let head = p.tail_head_peek().unwrap_or(page);
        let h = k.mem.page(head);
        let private = p.private.load(std::sync::atomic::Ordering::SeqCst);
        if !h.test_flag_peek(pg::SWAPCACHE) || !h.test_flag_peek(pg::SWAPBACKED) || private != off {
            fails.push((
                format!(
                    "swap cache page {} at slot {off}: PageSwapCache {}, page_private {private}",
                    page.0,
                    h.test_flag_peek(pg::SWAPCACHE)
                ),
                Some(page),
            ));
        }
    }
    for (&idx, c) in &st.clusters {
        let n = per_cluster.get(&idx).copied().unwrap_or(0);
        if c.count != n {
            fails.push((
                format!(
                    "swap cluster {idx}: count {}, but {n} of its slots are in use",
                    c.count
                ),
                None,
            ));
        }
        if c.huge {
            let base = idx * si.cluster_slots;
            let thp = st.cache.get(&base).is_some_and(|&p| {
                let pg_ = k.mem.page(p);
                pg_.test_flag_peek(pg::HEAD) && pg_.compound_order_peek() == k.geo.hpage_pmd_order()
            });
            if !thp {
                fails.push((
                    format!("swap cluster {idx} is huge, but no THP of the swap cache holds it"),
                    None,
                ));
            }
        }
    }
    let free = st.max.saturating_sub(1) - used;
    if st.nr_swap_pages != free {
        fails.push((
            format!(
                "nr_swap_pages is {}, but {free} slots are free",
                st.nr_swap_pages
            ),
            None,
        ));
    }
    for (m, page) in fails {
        t.fail(inv::AUDIT_SWAP, m, page);
    }
}

/// The page's anon_vma must reach the VMA, and the page's index must give back
/// the address it is mapped at.
fn check_rmap<E: Engine>(
    cpu: &Cpu<E>,
    mm: &MmStruct<E>,
    vma: &Arc<Vma>,
    pfn: Pfn,
    addr: VirtAddr,
    t: &mut Tally,
) {
    let head = match cpu.k.mem.page(pfn).tail_head_peek() {
        Some(h) => h,
        None => pfn,
    };
    let hp = cpu.k.mem.page(head);
    if let Some(f) = crate::page::mapping_file(hp.mapping.peek()) {
        // A shmem page: its file's i_mmap reaches the VMA.
        let reaches =
            vma.vm_file == Some(f) && cpu.k.file(f).mappers().iter().any(|v| Arc::ptr_eq(v, vma));
        if !reaches {
            t.fail(
                inv::AUDIT_RMAP,
                format!(
                    "mm {} {:?}: the file page's file does not reach the VMA mapping it",
                    mm.id.0, addr
                ),
                Some(pfn),
            );
        }
    } else if hp.anon_vma_peek().is_none() {
        t.fail(
            inv::AUDIT_RMAP,
            format!(
                "mm {} {:?}: mapped page is neither anonymous (no anon_vma) nor a file's",
                mm.id.0, addr
            ),
            Some(pfn),
        );
        return;
    } else {
        let av = hp.anon_vma_peek().expect("checked");
        let reaches = cpu
            .k
            .anon_vma(av)
            .vmas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|v| Arc::ptr_eq(v, vma));
        if !reaches {
            t.fail(
                inv::AUDIT_RMAP,
                format!(
                    "mm {} {:?}: the page's anon_vma does not reach the VMA mapping it",
                    mm.id.0, addr
                ),
                Some(pfn),
            );
        }
    }
    let pgoff = hp.index.peek() + (pfn.0 - head.0);
    let expect = vma.vm_start().0 as i128
        + ((pgoff as i128 - vma.vm_pgoff() as i128) << cpu.k.geo.page_shift);
    if expect != addr.0 as i128 {
        t.fail(
            inv::AUDIT_RMAP,
            format!(
                "mm {} {:?}: page index {pgoff} points at {:#x}",
                mm.id.0, addr, expect
            ),
            Some(pfn),
        );
    }
}

fn check_frames<E: Engine>(cpu: &Cpu<E>, t: &mut Tally) {
    let k = &cpu.k;
    let nr = k.geo.hpage_pmd_nr();
    let huge_zero = k.huge_zero_pfn();
    // Mapped or pinned frames that are free: use after free. In frame order
    // within each map (the maps are hashed): reports are deterministic.
    let free_in = |m: &FastMap<Pfn, i64>| {
        let mut v: Vec<Pfn> = m.keys().copied().filter(|&p| k.mem.is_free(p)).collect();
        v.sort_unstable();
        v
    };
    let freed: Vec<Pfn> = [&t.pte_maps, &t.pmd_maps, &t.pin_refs]
        .into_iter()
        .flat_map(free_in)
        .collect();
    for p in freed {
        t.violations.push(Violation {
            id: inv::AUDIT_FREE,
            kind: ViolationKind::Audit,
            message: format!("free frame {} is mapped or pinned", p.0),
            cpu: None,
            backtrace: Vec::new(),
            page: Some(p),
        });
    }
    let allocated = k.mem.allocated();
    let mut next = 0;
    for &p in &allocated {
        if p.0 < next {
            continue; // a tail page already checked with its head
        }
        let pfn = p.0;
        let page = k.mem.page(p);
        if p == k.zero_pfn || Some(p) == huge_zero {
            next = pfn + if Some(p) == huge_zero { nr } else { 1 };
            continue;
        }
        let refcount = page.refcount.peek_i64();
        if k.mem.is_free(p) {
            if refcount != 0
                || page.mapcount.peek_i64() != -1
                || t.pte_maps.contains_key(&p)
                || t.pmd_maps.contains_key(&p)
            {
                t.fail(
                    inv::AUDIT_FREE,
                    format!(
                        "free frame {pfn} is in use: refcount {refcount}, mapcount {}",
                        page.mapcount.peek_i64() + 1
                    ),
                    Some(p),
                );
            }
            next = pfn + 1;
            continue;
        }
        if page.test_flag_peek(pg::TABLE) {
            if !t.tables.contains(&p) {
                t.fail(
                    inv::AUDIT_LEAK,
                    format!("page table frame {pfn} is reachable from no page table"),
                    Some(p),
                );
            }
            let want = t.table_refs.get(&p).copied().unwrap_or(1).max(1);
            if refcount != want {
                t.fail(
                    inv::AUDIT_REFCOUNT,
                    format!("page table frame {pfn}: refcount {refcount}, expected {want} (the entries pointing at it)"),
                    Some(p),
                );
            }
            next = pfn + 1;
            continue;
        }
        if page.test_flag_peek(pg::HUGETLB) {
            check_hugetlb_page(cpu, p, t);
            next = pfn + (1u64 << page.compound_order_peek());
            continue;
        }
        if page.test_flag_peek(pg::HEAD) && k.cfg.kernel == KernelProfile::V3_16 {
            next = pfn + check_thp_v3_16(cpu, p, t);
            continue;
        }
        if page.test_flag_peek(pg::HEAD) {
            let order = page.compound_order_peek();
            let n = 1u64 << order;
            let pmd_maps = t.pmd_maps.get(&p).copied().unwrap_or(0);
            let compound = page.compound_mapcount.peek_i64() + 1;
            if compound != pmd_maps {
                t.fail(
                    inv::AUDIT_COMPOUND_MAPCOUNT,
                    format!(
                        "THP {pfn}: compound_mapcount {compound}, but {pmd_maps} huge PMDs map it"
                    ),
                    Some(p),
                );
            }
            let double_map = page.test_flag_peek(pg::DOUBLE_MAP);
            let mut total_pte = 0;
            for i in 0..n {
                let sub = p.add(i);
                if i > 0 && k.mem.page(sub).tail_head_peek() != Some(p) {
                    t.fail(
                        inv::AUDIT_MAPCOUNT,
                        format!("THP {pfn}: subpage {} does not point to its head", sub.0),
                        Some(sub),
                    );
                }
                let ptes = t.pte_maps.get(&sub).copied().unwrap_or(0);
                total_pte += ptes;
                let mc = k.mem.page(sub).mapcount.peek_i64() + 1;
                let want = ptes + double_map as i64;
                if mc != want {
                    t.fail(
                        inv::AUDIT_MAPCOUNT,
                        format!(
                            "THP {pfn} subpage {i}: _mapcount+1 is {mc}, but {ptes} PTEs map it{}",
                            if double_map {
                                " (+1 for PageDoubleMap)"
                            } else {
                                ""
                            }
                        ),
                        Some(sub),
                    );
                }
            }
            if double_map && pmd_maps == 0 {
                t.fail(
                    inv::AUDIT_DOUBLE_MAP,
                    format!("THP {pfn}: PageDoubleMap set but no huge PMD maps it"),
                    Some(p),
                );
            }
            // Not checked: that a THP mapped by a PMD and by PTEs has
            // PageDoubleMap (page-flags.h's description). 5.8 sets it only
            // when it splits one of two or more PMDs mapping the THP;
            // remove_migration_ptes() of a THP migrated while one process
            // mapped it by a PMD and another by PTEs maps the new THP both
            // ways without it, and every count stays right (each subpage's
            // _mapcount is checked above against the flag).
            let want = pmd_maps + total_pte;
            let pins = t.pin_refs.get(&p).copied().unwrap_or(0);
            let swap_cached = (0..n)
                .filter(|i| t.swap_cached.contains_key(&p.add(*i)))
                .count() as i64;
            if refcount != want + pins + swap_cached {
                t.fail(inv::AUDIT_REFCOUNT, format!("THP {pfn}: refcount {refcount}, but it has {want} mappings, {pins} pin references, {swap_cached} swap cache references and no other user"), Some(p));
            }
            if page.test_flag_peek(pg::SWAPCACHE) != (swap_cached == n as i64) {
                t.fail(inv::AUDIT_SWAP, format!("THP {pfn}: PageSwapCache {}, but the swap cache holds {swap_cached} of its subpages", page.test_flag_peek(pg::SWAPCACHE)), Some(p));
            }
            let pincount = page.compound_pincount_peek();
            let pinned = t.pin_count.get(&p).copied().unwrap_or(0);
            if order > 1 && pincount != pinned {
                t.fail(inv::AUDIT_REFCOUNT, format!("THP {pfn}: compound_pincount {pincount}, but its pins hold {pinned} subpages"), Some(p));
            }
            if want == 0 && pins == 0 && swap_cached == 0 {
                t.fail(
                    inv::AUDIT_LEAK,
                    format!("THP {pfn} is allocated but mapped nowhere"),
                    Some(p),
                );
            }
            if page.test_flag_peek(pg::MLOCKED) && (!t.locked_pmds.contains(&p) || total_pte > 0) {
                t.fail(
                    inv::AUDIT_MLOCK,
                    format!(
                        "THP {pfn} is PageMlocked, but {} and {total_pte} PTEs map it",
                        if t.locked_pmds.contains(&p) {
                            "a VM_LOCKED huge PMD maps it"
                        } else {
                            "no VM_LOCKED huge PMD maps it"
                        }
                    ),
                    Some(p),
                );
            }
            next = pfn + n;
            continue;
        }
        if page.tail_head_peek().is_some() {
            t.fail(
                inv::AUDIT_MAPCOUNT,
                format!("tail page {pfn} outside a compound page walk"),
                Some(p),
            );
            next = pfn + 1;
            continue;
        }
        let ptes = t.pte_maps.get(&p).copied().unwrap_or(0);
        let mc = page.mapcount.peek_i64() + 1;
        if mc != ptes {
            t.fail(
                inv::AUDIT_MAPCOUNT,
                format!("page {pfn}: _mapcount+1 is {mc}, but {ptes} PTEs map it"),
                Some(p),
            );
        }
        let pins = t.pin_refs.get(&p).copied().unwrap_or(0);
        let cached = t.cached.contains_key(&p) as i64 + t.swap_cached.contains_key(&p) as i64;
        if refcount != ptes + pins + cached {
            t.fail(
                inv::AUDIT_REFCOUNT,
                format!(
                    "page {pfn}: refcount {refcount}, but it has {ptes} mappings, {pins} pin references{} and no other user",
                    if cached != 0 { ", a page-cache (or swap cache) reference" } else { "" }
                ),
                Some(p),
            );
        }
        if page.test_flag_peek(pg::SWAPCACHE) && !t.swap_cached.contains_key(&p) {
            t.fail(
                inv::AUDIT_SWAP,
                format!("page {pfn} is PageSwapCache but not in the swap cache"),
                Some(p),
            );
        }
        if ptes == 0 && pins == 0 && cached == 0 {
            t.fail(
                inv::AUDIT_LEAK,
                format!("page {pfn} is allocated but mapped nowhere"),
                Some(p),
            );
        }
        if page.test_flag_peek(pg::MLOCKED) && !t.locked_ptes.contains(&p) {
            t.fail(
                inv::AUDIT_MLOCK,
                format!("page {pfn} is PageMlocked, but no VM_LOCKED VMA maps it"),
                Some(p),
            );
        }
        next = pfn + 1;
    }
}

/// A THP under `kernel 3.16` (the pre-4.5 rules, v3.16's page_mapcount()
/// and __split_huge_page_refcount()): mapped only by huge PMDs, counted on
/// the head's `_mapcount`; the tails' `_mapcount` and `_refcount` unused.
/// Returns the frames checked.
fn check_thp_v3_16<E: Engine>(cpu: &Cpu<E>, p: Pfn, t: &mut Tally) -> u64 {
    let k = &cpu.k;
    let page = k.mem.page(p);
    let pfn = p.0;
    let n = 1u64 << page.compound_order_peek();
    let pmd_maps = t.pmd_maps.get(&p).copied().unwrap_or(0);
    let mc = page.mapcount.peek_i64() + 1;
    if mc != pmd_maps {
        t.fail(
            inv::AUDIT_MAPCOUNT,
            format!("THP {pfn}: head _mapcount+1 is {mc}, but {pmd_maps} huge PMDs map it (the 3.16 rule)"),
            Some(p),
        );
    }
    if page.compound_mapcount.peek_i64() != -1 || page.test_flag_peek(pg::DOUBLE_MAP) {
        t.fail(
            inv::AUDIT_THP_3_16,
            format!("THP {pfn}: a 5.8 compound mapcount or PageDoubleMap under kernel 3.16"),
            Some(p),
        );
    }
    for i in 0..n {
        let sub = p.add(i);
        let sp = k.mem.page(sub);
        if i > 0 && sp.tail_head_peek() != Some(p) {
            t.fail(
                inv::AUDIT_MAPCOUNT,
                format!("THP {pfn}: subpage {} does not point to its head", sub.0),
                Some(sub),
            );
        }
        let ptes = t.pte_maps.get(&sub).copied().unwrap_or(0);
        if ptes != 0 {
            t.fail(
                inv::AUDIT_THP_3_16,
                format!("THP {pfn} subpage {i}: {ptes} PTEs map it, but a 3.16 THP is mapped only by huge PMDs"),
                Some(sub),
            );
        }
        let pins = t.tail_pins.get(&sub).copied().unwrap_or(0);
        if i > 0 && (sp.mapcount.peek_i64() != pins - 1 || sp.refcount.peek_i64() != 0) {
            t.fail(
                inv::AUDIT_THP_3_16,
                format!(
                    "THP {pfn} tail {i}: _mapcount {} and _refcount {}, but a tail of a whole THP with {pins} pins has {} and 0",
                    sp.mapcount.peek_i64(),
                    sp.refcount.peek_i64(),
                    pins - 1
                ),
                Some(sub),
            );
        }
    }
    let refcount = page.refcount.peek_i64();
    let pins = t.pin_refs.get(&p).copied().unwrap_or(0);
    if refcount != pmd_maps + pins {
        t.fail(
            inv::AUDIT_REFCOUNT,
            format!("THP {pfn}: refcount {refcount}, but {pmd_maps} huge PMDs map it, its pins hold {pins} and nothing else holds it"),
            Some(p),
        );
    }
    if pmd_maps == 0 && pins == 0 {
        t.fail(
            inv::AUDIT_LEAK,
            format!("THP {pfn} is allocated but mapped nowhere"),
            Some(p),
        );
    }
    n
}

fn check_deferred<E: Engine>(cpu: &Cpu<E>, t: &mut Tally) {
    let q = cpu
        .k
        .deferred_split
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for p in q {
        let page = cpu.k.mem.page(p);
        if !page.test_flag_peek(pg::HEAD)
            || !page
                .on_deferred_list
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            t.fail(
                inv::AUDIT_DEFERRED,
                format!(
                    "frame {} is on the deferred split queue but is not a queued THP",
                    p.0
                ),
                Some(p),
            );
        }
    }
}

fn check_locks<E: Engine>(cpu: &Cpu<E>, t: &mut Tally) {
    let k = &cpu.k;
    for pfn in k.mem.allocated().into_iter().map(|p| p.0) {
        if k.mem.page(Pfn(pfn)).is_locked() {
            t.fail(
                inv::AUDIT_LOCKS,
                format!("page {pfn} is still locked at a quiescent point"),
                Some(Pfn(pfn)),
            );
        }
    }
    for (c, irq) in k.irqs.iter().enumerate() {
        if irq.disabled_peek() {
            t.fail(
                inv::AUDIT_LOCKS,
                format!("CPU{c} runs with interrupts disabled at a quiescent point"),
                None,
            );
        }
    }
    for mm in k.all_mms() {
        if mm.mmap_lock.is_locked() {
            t.fail(
                inv::AUDIT_LOCKS,
                format!("mm {}: mmap_lock still held", mm.id.0),
                None,
            );
        }
    }
    for av in k.all_anon_vmas() {
        if av.rwsem.is_locked() {
            t.fail(
                inv::AUDIT_LOCKS,
                format!("anon_vma {}: rwsem still held", av.id.0),
                None,
            );
        }
    }
    for &tb in &t.tables.clone() {
        if cpu.table(tb).ptl.is_locked() {
            t.fail(
                inv::AUDIT_LOCKS,
                format!("page table {}: lock still held", tb.0),
                None,
            );
        }
    }
}

/// MIRROR-COHERENT: each secondary MMU's entries against the page tables,
/// as `check_tlbs` checks the CPUs' TLBs.
fn check_mirrors<E: Engine>(cpu: &Cpu<E>, t: &mut Tally) {
    let k = &cpu.k;
    for m in k.all_mirrors() {
        let mm = k.mm(m.mm);
        let entries = m.entries();
        if mm.exited.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(&(_, pfn, _)) = entries.first() {
                t.fail(
                    inv::MIRROR_COHERENT,
                    format!(
                        "mirror {} still translates {} page(s) of exited mm {}",
                        m.id.0,
                        entries.len(),
                        m.mm.0
                    ),
                    Some(pfn),
                );
            }
            continue;
        }
        if mm.notifiers.get().is_some_and(|n| n.peek_invalidating()) {
            continue;
        }
        for (vpn, pfn, write) in entries {
            let addr = VirtAddr(vpn << k.geo.page_shift);
            let info = cpu.page_info(&mm, addr);
            let writable = writable_at(cpu, &mm, addr);
            if info.pfn != Some(pfn) || (write && !writable) {
                t.fail(
                    inv::MIRROR_COHERENT,
                    format!(
                        "mirror {}: stale entry for mm {} {:?} -> frame {}{} (page tables: {:?}{})",
                        m.id.0,
                        m.mm.0,
                        addr,
                        pfn.0,
                        if write { " writable" } else { "" },
                        info.pfn.map(|p| p.0),
                        if writable { " writable" } else { "" }
                    ),
                    Some(pfn),
                );
            }
        }
    }
}

fn check_tlbs<E: Engine>(cpu: &Cpu<E>, t: &mut Tally) {
    let k = &cpu.k;
    let order = k.geo.hpage_pmd_order();
    let mut entries: Vec<_> = Vec::new();
    for (i, tlb) in k.tlbs.iter().enumerate() {
        let tlb = tlb.lock().unwrap_or_else(|p| p.into_inner());
        entries.extend(tlb.base_entries().into_iter().map(|e| (i, e)));
        // A 2 MiB entry that the huge PMD still backs as cached is checked
        // whole; any other is checked base page by base page, to name what
        // went stale.
        for ((mm_id, h), e) in tlb.huge_entries() {
            let base = VirtAddr(h << k.geo.pmd_shift());
            let mm = k.mm(mm_id);
            if mm.exited.load(std::sync::atomic::Ordering::SeqCst) {
                // Reported once, below.
                entries.push((i, ((mm_id, h << order), e)));
                continue;
            }
            let backed = cpu.pmd_offset(&mm, base).is_some_and(|pmd| {
                matches!(cpu.pmd_read(pmd), Pmd::Huge { pfn, flags, invalid: false }
                    if pfn == e.pfn && (flags.write || !e.write))
            });
            if !backed {
                entries.extend((0..1u64 << order).map(|sub| {
                    let te = crate::mmu::TlbEntry {
                        pfn: e.pfn.add(sub),
                        write: e.write,
                    };
                    (i, ((mm_id, (h << order) + sub), te))
                }));
            }
        }
    }
    // In a fixed order (the TLB's sets are not): reports are deterministic.
    entries.sort_by_key(|&(cpu, ((mm, vpn), _))| (cpu, mm, vpn));
    for (cpu_id, ((mm_id, vpn), e)) in entries {
        let mm = k.mm(mm_id);
        if mm.exited.load(std::sync::atomic::Ordering::SeqCst) {
            t.fail(
                inv::AUDIT_TLB,
                format!("CPU{cpu_id} caches a translation of exited mm {}", mm_id.0),
                Some(e.pfn),
            );
            continue;
        }
        let addr = VirtAddr(vpn << k.geo.page_shift);
        let info = cpu.page_info(&mm, addr);
        let writable = writable_at(cpu, &mm, addr);
        if info.pfn != Some(e.pfn) || (e.write && !writable) {
            t.fail(
                inv::AUDIT_TLB,
                format!(
                    "CPU{cpu_id}: stale TLB entry for mm {} {:?} -> frame {}{} (page tables: {:?})",
                    mm_id.0,
                    addr,
                    e.pfn.0,
                    if e.write { " writable" } else { "" },
                    info.pfn.map(|p| p.0)
                ),
                Some(e.pfn),
            );
        }
    }
}

fn writable_at<E: Engine>(cpu: &Cpu<E>, mm: &MmStruct<E>, addr: VirtAddr) -> bool {
    let Some(pmd) = cpu.pmd_offset(mm, addr) else {
        return false;
    };
    match cpu.pmd_read(pmd) {
        Pmd::Huge {
            flags,
            invalid: false,
            ..
        } => flags.write,
        v @ Pmd::Table(_) => cpu
            .pte_offset(v, addr)
            .is_some_and(|p| cpu.pte_read(p).is_write()),
        _ => false,
    }
}

/// Whether the huge PMD at `base` maps a hugetlb page (the page is PageHuge
/// or the VMA is a hugetlb one: a mismatch is reported by
/// [`walk_hugetlb_entry`]).
fn is_hugetlb_entry<E: Engine>(
    cpu: &Cpu<E>,
    vma_of: &dyn Fn(VirtAddr) -> Option<Arc<Vma>>,
    pfn: Pfn,
    base: VirtAddr,
) -> bool {
    cpu.k.mem.page(pfn).test_flag_peek(pg::HUGETLB) || vma_of(base).is_some_and(|v| v.is_hugetlb())
}

/// A hugetlb entry: a PageHuge head mapped whole by a hugetlb VMA, whose
/// rmap (its anon_vma for a private page, its file's `i_mmap` for a shared
/// one) reaches the VMA at the address its index (in huge pages) gives.
fn walk_hugetlb_entry<E: Engine>(
    cpu: &Cpu<E>,
    mm: &Arc<MmStruct<E>>,
    pfn: Pfn,
    base: VirtAddr,
    vma_of: &dyn Fn(VirtAddr) -> Option<Arc<Vma>>,
    t: &mut Tally,
) {
    let g = cpu.k.geo;
    let page = cpu.k.mem.page(pfn);
    let Some(vma) = vma_of(base) else {
        t.fail(
            inv::AUDIT_VMA,
            format!("mm {} {:?}: hugetlb entry outside any VMA", mm.id.0, base),
            Some(pfn),
        );
        return;
    };
    if !vma.is_hugetlb() || !page.test_flag_peek(pg::HUGETLB) || page.tail_head_peek().is_some() {
        t.fail(
            inv::AUDIT_VMA,
            format!(
                "mm {} {:?}: a huge PMD of a {} VMA maps {} frame {}",
                mm.id.0,
                base,
                if vma.is_hugetlb() {
                    "hugetlb"
                } else {
                    "non-hugetlb"
                },
                if page.test_flag_peek(pg::HUGETLB) {
                    "the hugetlb"
                } else {
                    "the non-hugetlb"
                },
                pfn.0
            ),
            Some(pfn),
        );
        return;
    }
    *t.pmd_maps.entry(pfn).or_default() += 1;
    let mapping = page.mapping.peek();
    let reaches = if let Some(av) = page.anon_vma_peek() {
        cpu.k
            .anon_vma(av)
            .vmas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|v| Arc::ptr_eq(v, &vma))
    } else if let Some(f) = crate::page::mapping_file(mapping) {
        vma.vm_file == Some(f) && cpu.k.file(f).mappers().iter().any(|v| Arc::ptr_eq(v, &vma))
    } else {
        false
    };
    if !reaches {
        t.fail(
            inv::AUDIT_RMAP,
            format!(
                "mm {} {:?}: the hugetlb page's mapping ({mapping:#x}) does not reach the VMA mapping it",
                mm.id.0, base
            ),
            Some(pfn),
        );
    }
    let order = g.pmd_shift() - g.page_shift;
    let pgoff = page.index.peek() << order;
    let expect =
        vma.vm_start().0 as i128 + ((pgoff as i128 - vma.vm_pgoff() as i128) << g.page_shift);
    if expect != base.0 as i128 {
        t.fail(
            inv::AUDIT_RMAP,
            format!(
                "mm {} {:?}: hugetlb page index {} points at {:#x}",
                mm.id.0,
                base,
                page.index.peek(),
                expect
            ),
            Some(pfn),
        );
    }
}

/// A hugetlb page in use: mapped only by huge PMDs (its compound mapcount
/// counts them, no subpage has a PTE mapcount), referenced by its mappings,
/// its pins and its file's page cache, and reachable from one of them; a
/// free one (on the pool's free list) has no reference and no mapping.
fn check_hugetlb_page<E: Engine>(cpu: &Cpu<E>, p: Pfn, t: &mut Tally) {
    let k = &cpu.k;
    let page = k.mem.page(p);
    let pfn = p.0;
    let refcount = page.refcount.peek_i64();
    let pmd_maps = t.pmd_maps.get(&p).copied().unwrap_or(0);
    let pins = t.pin_refs.get(&p).copied().unwrap_or(0);
    let cached = t.cached.contains_key(&p) as i64;
    let compound = page.compound_mapcount.peek_i64() + 1;
    if refcount == 0 {
        if pmd_maps != 0 || pins != 0 || cached != 0 || compound != 0 {
            t.fail(
                inv::AUDIT_FREE,
                format!("free hugetlb page {pfn} is in use: {pmd_maps} mappings, {pins} pin references, compound_mapcount {compound}{}", if cached != 0 { ", in a page cache" } else { "" }),
                Some(p),
            );
        }
        return;
    }
    if compound != pmd_maps {
        t.fail(
            inv::AUDIT_COMPOUND_MAPCOUNT,
            format!(
                "hugetlb page {pfn}: compound_mapcount {compound}, but {pmd_maps} huge PMDs map it"
            ),
            Some(p),
        );
    }
    let n = 1u64 << page.compound_order_peek();
    for i in 0..n {
        let sub = k.mem.page(p.add(i));
        if sub.mapcount.peek_i64() != -1 || t.pte_maps.contains_key(&p.add(i)) {
            t.fail(
                inv::AUDIT_MAPCOUNT,
                format!("hugetlb page {pfn} subpage {i}: mapped by a PTE (hugetlb pages are always mapped with PMDs)"),
                Some(p.add(i)),
            );
        }
    }
    if refcount != pmd_maps + pins + cached {
        t.fail(
            inv::AUDIT_REFCOUNT,
            format!("hugetlb page {pfn}: refcount {refcount}, but it has {pmd_maps} mappings, {pins} pin references{} and no other user", if cached != 0 { ", a page-cache reference" } else { "" }),
            Some(p),
        );
    }
    if pmd_maps + pins + cached == 0 {
        t.fail(
            inv::AUDIT_LEAK,
            format!("hugetlb page {pfn} is allocated but mapped nowhere, pinned by no one and in no page cache"),
            Some(p),
        );
    }
    if page.test_flag_peek(pg::PRIVATE) {
        t.fail(
            inv::AUDIT_HUGETLB,
            format!("hugetlb page {pfn}: PagePrivate (a consumed reservation not yet handed to a mapping) at a quiescent point"),
            Some(p),
        );
    }
}

/// The pool's books: the free lists hold exactly the pool's unreferenced
/// pages, the counters count them, and `resv_huge_pages` is what the
/// mappings were promised and have not used: for each private mapping whose
/// VMA owns its reservation, its pages not yet consumed (not in its map),
/// and for each file, the reserved pages of its map that are not in its
/// page cache.
fn check_hugetlb_pool<E: Engine>(cpu: &Cpu<E>, t: &mut Tally) {
    let k = &cpu.k;
    let h = &k.hstate;
    let pool = h.pool_peek();
    let order = k.geo.pmd_shift() - k.geo.page_shift;
    let listed: usize = pool.freelists.iter().map(Vec::len).sum();
    if listed as u64 != pool.free_huge_pages
        || pool.free_huge_pages_node.iter().sum::<u64>() != pool.free_huge_pages
        || pool.nr_huge_pages != pool.free_huge_pages + pool.active.len() as u64
    {
        t.fail(
            inv::AUDIT_HUGETLB,
            format!(
                "hugetlb pool: free_huge_pages {} but {listed} pages on the free lists ({:?} per node), {} in use of nr_huge_pages {}",
                pool.free_huge_pages, pool.free_huge_pages_node, pool.active.len(), pool.nr_huge_pages
            ),
            None,
        );
    }
    for (nid, list) in pool.freelists.iter().enumerate() {
        for &p in list {
            let page = k.mem.page(p);
            if page.refcount.peek_i64() != 0 || page.node as usize != nid {
                t.fail(
                    inv::AUDIT_HUGETLB,
                    format!(
                        "hugetlb page {} is on node {nid}'s free list with refcount {} (node {})",
                        p.0,
                        page.refcount.peek_i64(),
                        page.node
                    ),
                    Some(p),
                );
            }
        }
    }
    for &p in &pool.active {
        if k.mem.page(p).refcount.peek_i64() == 0 {
            t.fail(
                inv::AUDIT_HUGETLB,
                format!(
                    "hugetlb page {} is in use (on the active list) with no reference",
                    p.0
                ),
                Some(p),
            );
        }
    }
    let mut promised: i64 = 0;
    for mm in k.all_mms() {
        if mm.exited.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        for v in mm.vma_list() {
            let r = v.resv();
            if !v.is_hugetlb() || v.vm_flags() & crate::mm_types::vm::MAYSHARE != 0 || !r.owner {
                continue;
            }
            let Some(map) = r.map else { continue };
            let start = v.vm_pgoff() >> order; // vma_hugecache_offset(vm_start)
            let end = start + ((v.vm_end().0 - v.vm_start().0) >> k.geo.pmd_shift());
            let used: u64 = h
                .resv_map(map)
                .regions()
                .iter()
                .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
                .sum();
            promised += (end - start) as i64 - used as i64;
        }
    }
    for f in k.all_files() {
        if f.refs.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            continue;
        }
        let cached = f.cached();
        for (s, e) in h.resv_map(f.resv_map).regions() {
            promised += (s..e).filter(|i| !cached.contains_key(i)).count() as i64;
        }
    }
    if promised != pool.resv_huge_pages as i64 {
        t.fail(
            inv::AUDIT_HUGETLB,
            format!(
                "hugetlb pool: resv_huge_pages {}, but the mappings hold {promised} unused reservations",
                pool.resv_huge_pages
            ),
            None,
        );
    }
    if pool.resv_huge_pages > pool.free_huge_pages {
        t.fail(
            inv::AUDIT_HUGETLB,
            format!(
                "hugetlb pool: {} pages reserved but only {} free",
                pool.resv_huge_pages, pool.free_huge_pages
            ),
            None,
        );
    }
}
