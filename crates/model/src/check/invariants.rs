//! The invariants the model checks, each with an ID. This is their one home:
//! reports name these IDs, docs/ARCHITECTURE.md lists them.

/// An invariant and where it comes from.
pub struct Invariant {
    pub id: &'static str,
    pub checked_by: &'static str,
    pub statement: &'static str,
}

pub const VM_BUG_ON: &str = "VM-BUG-ON";
pub const VM_WARN: &str = "VM-WARN";
pub const BAD_PAGE: &str = "BAD-PAGE";
pub const LOCK_ORDER: &str = "LOCK-ORDER";
pub const DEADLOCK: &str = "DEADLOCK";
pub const AUDIT_MAPCOUNT: &str = "AUDIT-MAPCOUNT";
pub const AUDIT_COMPOUND_MAPCOUNT: &str = "AUDIT-COMPOUND-MAPCOUNT";
pub const AUDIT_DOUBLE_MAP: &str = "AUDIT-DOUBLE-MAP";
pub const AUDIT_REFCOUNT: &str = "AUDIT-REFCOUNT";
pub const AUDIT_FREE: &str = "AUDIT-FREE";
pub const AUDIT_LEAK: &str = "AUDIT-LEAK";
pub const AUDIT_RMAP: &str = "AUDIT-RMAP";
pub const AUDIT_VMA: &str = "AUDIT-VMA";
pub const AUDIT_LOCKS: &str = "AUDIT-LOCKS";
pub const MIRROR_COHERENT: &str = "MIRROR-COHERENT";
pub const AUDIT_DEFERRED: &str = "AUDIT-DEFERRED";
pub const AUDIT_MIGRATION: &str = "AUDIT-MIGRATION";
pub const AUDIT_TLB: &str = "AUDIT-TLB";
pub const AUDIT_MLOCK: &str = "AUDIT-MLOCK";
pub const AUDIT_HUGETLB: &str = "AUDIT-HUGETLB";
pub const AUDIT_SWAP: &str = "AUDIT-SWAP";
pub const AUDIT_THP_3_16: &str = "AUDIT-THP-3.16";
pub const MEM_PRIVATE: &str = "MEM-PRIVATE";
pub const MEM_LOST_WRITE: &str = "MEM-LOST-WRITE";
pub const MEM_PIN_COHERENT: &str = "MEM-PIN-COHERENT";
pub const MODEL_LIMIT: &str = "MODEL-LIMIT";

pub const INVARIANTS: &[Invariant] = &[
    Invariant { id: VM_BUG_ON, checked_by: "inline (the kernel's assertions)", statement: "No BUG_ON/VM_BUG_ON/VM_BUG_ON_PAGE/VM_BUG_ON_VMA condition of the modelled functions holds." },
    Invariant { id: VM_WARN, checked_by: "inline", statement: "No WARN_ON/VM_WARN_ON_ONCE condition of the modelled functions holds." },
    Invariant { id: BAD_PAGE, checked_by: "inline (free_pages_check)", statement: "A page is freed unmapped, unlocked, not mlocked, with no references (no \"BUG: Bad page state\")." },
    Invariant { id: LOCK_ORDER, checked_by: "sync::lockdep", statement: "Locks are taken in the order of the comment at the top of mm/rmap.c; no lock is taken twice." },
    Invariant { id: DEADLOCK, checked_by: "engine", statement: "Some thread can always make progress." },
    Invariant { id: AUDIT_MAPCOUNT, checked_by: "check::audit", statement: "Each page's _mapcount + 1 equals the PTEs mapping it, plus 1 if its THP is PageDoubleMap." },
    Invariant { id: AUDIT_COMPOUND_MAPCOUNT, checked_by: "check::audit", statement: "A THP's compound_mapcount equals the huge PMDs mapping it." },
    Invariant { id: AUDIT_DOUBLE_MAP, checked_by: "check::audit", statement: "PageDoubleMap is set only while a huge PMD maps the THP (and then every subpage's _mapcount carries the PMD's +1, AUDIT-MAPCOUNT). A THP mapped by a PMD and PTEs without it is allowed: 5.8 sets it only when it splits one of several PMDs, and migration maps a new THP both ways without it." },
    Invariant { id: AUDIT_REFCOUNT, checked_by: "check::audit", statement: "A page's _refcount equals its mappings (each PTE and each huge PMD holds one) plus pins (GUP_PIN_COUNTING_BIAS per pin of a base page; one per pinned subpage of a THP, whose compound_pincount counts them), page-table use and the swap cache (one per subpage it holds); nothing else holds a reference at a quiescent point." },
    Invariant { id: AUDIT_FREE, checked_by: "check::audit", statement: "A frame on the free lists has no mapping and no references; a frame in use is not on them." },
    Invariant { id: AUDIT_LEAK, checked_by: "check::audit", statement: "Every allocated frame is reachable: mapped, pinned, a page table, deposited, queued for deferred split, in the swap cache, or a zero page." },
    Invariant { id: AUDIT_RMAP, checked_by: "check::audit", statement: "Every mapped anonymous page's anon_vma reaches every VMA that maps it, at the address its index gives; a file's (shared hugetlb) page reaches it through its file's i_mmap." },
    Invariant { id: AUDIT_VMA, checked_by: "check::audit", statement: "No page-table entry maps an address outside a VMA; a huge PMD lies wholly inside one VMA; each huge PMD has a deposited page table." },
    Invariant { id: AUDIT_LOCKS, checked_by: "check::audit", statement: "At a quiescent point no lock is held, no page is locked and no CPU runs with interrupts disabled." },
    Invariant { id: MIRROR_COHERENT, checked_by: "check::audit", statement: "Once no invalidation of its mm is in progress, a secondary MMU (mirror) translates only to the frame the process maps at that address, and writes only where the process's mapping is writable; an exited mm leaves no translation in a mirror." },
    Invariant { id: AUDIT_DEFERRED, checked_by: "check::audit", statement: "Only THPs that are still compound sit on the deferred split queue." },
    Invariant { id: AUDIT_MIGRATION, checked_by: "check::audit", statement: "No migration entry is left in a page table at a quiescent point (a split or migration always remaps)." },
    Invariant { id: AUDIT_TLB, checked_by: "check::audit", statement: "Every TLB entry translates to the page the page tables map, and allows a write only if the entry does (no flush was missed)." },
    Invariant { id: AUDIT_MLOCK, checked_by: "check::audit", statement: "A PageMlocked page is mapped by a VM_LOCKED VMA: a base page by a PTE, a THP by a huge PMD and by no PTE (5.8 never mlocks a PTE-mapped THP). The converse need not hold: 5.8 leaves some pages of VM_LOCKED VMAs to vmscan to mlock." },
    Invariant { id: AUDIT_HUGETLB, checked_by: "check::audit", statement: "The hugetlb pool's books balance: its free lists hold exactly its unreferenced pages, as free_huge_pages counts them; resv_huge_pages equals the reservations the mappings hold and have not used (a private mapping's owner: its pages not yet consumed; a file: its reserved pages not in its page cache), and never exceeds the free pages; no page is left PagePrivate (a consumed reservation not handed to a mapping)." },
    Invariant { id: AUDIT_SWAP, checked_by: "check::audit", statement: "The swap device's books balance: each slot's swap count equals the swap PTEs that reference it and its SWAP_HAS_CACHE is set exactly while the swap cache holds it; a swap cache page is PageSwapCache with its slot in page_private(), and each of its subpages holds one reference; each cluster counts its slots in use, a huge cluster holds a THP of the swap cache; nr_swap_pages counts the free slots." },
    Invariant { id: AUDIT_THP_3_16, checked_by: "check::audit", statement: "Under `kernel 3.16` (the pre-4.5 design) a THP is mapped only by huge PMDs: no PTE maps a subpage of a compound page, no huge PMD is left _PAGE_SPLITTING at a quiescent point, the head's _mapcount + 1 equals the huge PMDs mapping it; a tail's _refcount is 0 and its _mapcount + 1 counts its pins (get_page_foll()); the head's _refcount (huge PMDs plus every pin of the THP) is checked by AUDIT-REFCOUNT, the head's mapcount by AUDIT-MAPCOUNT; a base page's pin is one reference (no GUP_PIN_COUNTING_BIAS in 3.16)." },
    Invariant { id: MEM_PRIVATE, checked_by: "check::oracle", statement: "A process's private memory shows only what it (or a device through its pins) wrote, or what it inherited at fork; unwritten memory reads 0." },
    Invariant { id: MEM_LOST_WRITE, checked_by: "check::oracle", statement: "No completed write is lost: a later read by the writer sees it unless the writer itself changed the memory since." },
    Invariant { id: MEM_PIN_COHERENT, checked_by: "check::oracle", statement: "While a long-term write pin (FOLL_WRITE with FOLL_LONGTERM) holds, the process that pinned and the device see the same bytes at every pinned address the process still maps: it maps the pinned frame there (5.8's promise; its fork breaks it)." },
    Invariant { id: MODEL_LIMIT, checked_by: "inline (Cpu::unmodelled)", statement: "No kernel path the model does not implement is reached, and no state the model cannot represent: a limit of the model, reported instead of going on silently (not a kernel bug)." },
];
