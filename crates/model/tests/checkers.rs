//! The checkers catch what they are for: a corrupted counter, a stale TLB
//! entry, a leaked page, a byte a process never wrote, a lock-order inversion.

use std::sync::Arc;
use thpsim_model::check::audit::audit;
use thpsim_model::check::invariants as inv;
use thpsim_model::check::oracle::MemoryOracle;
use thpsim_model::engine::Atomic;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::mmap::Prot;
use thpsim_model::mmu::Access;
use thpsim_model::sync::{LockClass, SpinLock};
use thpsim_model::types::{CpuId, Geometry, VirtAddr};
use thpsim_model::{Config, Cpu, Kernel, StdEngine};

type E = StdEngine;

fn machine(geo: Geometry) -> (Cpu<E>, Arc<MmStruct<E>>, VirtAddr) {
    let k = Kernel::<E>::new(Config::new(geo));
    let cpu = Cpu::new(k, CpuId(0));
    let mm = cpu.mm_alloc();
    let pmd = cpu.k.geo.pmd_size();
    let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
    (cpu, mm, a)
}

fn ids(cpu: &Cpu<E>) -> Vec<&'static str> {
    let mut v: Vec<_> = audit(cpu).into_iter().map(|v| v.id).collect();
    v.extend(cpu.k.reports().into_iter().map(|v| v.id));
    v
}

#[test]
fn a_clean_thp_fault_and_fork_audit_clean() {
    for geo in [Geometry::TINY, Geometry::X86_64] {
        let (cpu, mm, a) = machine(geo);
        cpu.user_access(&mm, a, Access::Write(7)).expect("write");
        let child = cpu.dup_mm(&mm).expect("fork");
        cpu.user_access(&child, a.add_bytes(geo.page_size()), Access::Write(9))
            .expect("cow");
        assert_eq!(ids(&cpu), Vec::<&str>::new());
    }
}

#[test]
fn audit_catches_a_wrong_mapcount() {
    let (cpu, mm, a) = machine(Geometry::TINY);
    cpu.user_access(&mm, a, Access::Write(7)).expect("write");
    let head = cpu.page_info(&mm, a).pfn.expect("mapped");
    Atomic::fetch_add(&cpu.page(head.add(1)).mapcount, 1);
    assert!(ids(&cpu).contains(&inv::AUDIT_MAPCOUNT));
}

#[test]
fn audit_catches_a_wrong_refcount_and_a_leak() {
    let (cpu, mm, a) = machine(Geometry::TINY);
    cpu.user_access(&mm, a, Access::Write(7)).expect("write");
    let head = cpu.page_info(&mm, a).pfn.expect("mapped");
    cpu.get_page(head);
    assert!(ids(&cpu).contains(&inv::AUDIT_REFCOUNT));
    let leaked = cpu.alloc_pages(0, 0, true).expect("page");
    let _ = leaked;
    assert!(ids(&cpu).contains(&inv::AUDIT_LEAK));
}

#[test]
fn audit_catches_a_stale_tlb_entry() {
    let (cpu, mm, a) = machine(Geometry::TINY);
    cpu.user_access(&mm, a, Access::Write(7)).expect("write");
    // Clear the PMD behind the TLB's back: no flush.
    let pmd = cpu.pmd_offset(&mm, a).expect("pmd");
    let _ = cpu.pmdp_huge_get_and_clear(pmd);
    assert!(ids(&cpu).contains(&inv::AUDIT_TLB));
}

/// A THP write caches one 2 MiB entry: write-protecting the huge PMD
/// without a flush leaves it stale (a writable translation the tables no
/// longer allow); with the flush, nothing is left to report.
#[test]
fn audit_catches_a_stale_writable_huge_tlb_entry() {
    for geo in [Geometry::TINY, Geometry::X86_64] {
        for flush in [false, true] {
            let (cpu, mm, a) = machine(geo);
            cpu.user_access(&mm, a, Access::Write(7)).expect("write");
            let tlb = cpu.k.tlbs[0].lock().unwrap().huge_entries();
            assert_eq!(tlb.len(), 1, "one 2 MiB entry: {tlb:?}");
            let pmd = cpu.pmd_offset(&mm, a).expect("pmd");
            cpu.pmdp_set_wrprotect(pmd);
            if flush {
                cpu.flush_tlb_range(mm.id, a, a.add_bytes(geo.pmd_size()));
            }
            assert_eq!(
                ids(&cpu).contains(&inv::AUDIT_TLB),
                !flush,
                "{geo:?}, flush {flush}"
            );
        }
    }
}

#[test]
fn oracle_catches_a_foreign_byte() {
    let (cpu, mm, a) = machine(Geometry::TINY);
    cpu.user_access(&mm, a, Access::Write(7)).expect("write");
    let mut o = MemoryOracle::new(cpu.k.geo.page_size());
    o.on_mmap("P", a.0, cpu.k.geo.pmd_size());
    o.on_write("P", a.0, 7);
    assert!(o
        .check_all(|_, p| cpu.peek_page(&mm, VirtAddr(p)))
        .is_empty());
    // Someone else's write lands in P's page.
    let pfn = cpu.page_info(&mm, a).pfn.expect("mapped");
    thpsim_model::page::write_byte(cpu.k.mem.words(pfn), 3, 0x55);
    let v = o.check_all(|_, p| cpu.peek_page(&mm, VirtAddr(p)));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].id, inv::MEM_PRIVATE);
}

#[test]
fn lockdep_reports_a_deliberate_inversion() {
    let (cpu, mm, _a) = machine(Geometry::TINY);
    let ptl = SpinLock::<E>::new(LockClass::PageTableLock);
    let g = ptl.lock(&cpu);
    // mmap_lock under a page-table lock: inverted.
    let r = mm.mmap_lock.read(&cpu);
    drop(r);
    drop(g);
    let reports = cpu.k.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].id, inv::LOCK_ORDER);
    assert!(
        reports[0].message.contains("circular locking dependency"),
        "{}",
        reports[0].message
    );
}

#[test]
fn a_thp_falls_back_to_base_pages_when_memory_is_fragmented() {
    // Memory of exactly 4 PMD blocks (the first holds the zero page); take
    // one base page from each of the three free blocks: no THP can be had.
    let mut cfg = Config::new(Geometry::TINY);
    cfg.memory_bytes = 4 * Geometry::TINY.pmd_size();
    let k = Kernel::<E>::new(cfg);
    let cpu = Cpu::new(k, CpuId(0));
    let pmd = cpu.k.geo.pmd_size();
    let mut held = Vec::new();
    while let Some(p) = cpu.alloc_pages(0, 0, true) {
        held.push(p);
    }
    // Free one base page in each block but keep the blocks partial.
    let nr = cpu.k.geo.hpage_pmd_nr();
    for p in held.iter().filter(|p| p.0 % nr == 1) {
        cpu.put_page(*p);
    }
    let mm = cpu.mm_alloc();
    let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
    cpu.user_access(&mm, a, Access::Write(1))
        .expect("base page fallback");
    assert_eq!(
        cpu.page_info(&mm, a).kind,
        thpsim_model::task_mmu::MapKind::Base
    );
}
