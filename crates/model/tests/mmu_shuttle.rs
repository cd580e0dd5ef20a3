//! The software MMU under exploration: a TLB shootdown and a hardware walk
//! never leave a stale translation behind, whatever the interleaving (the
//! walk and its TLB fill are one CPU step; a shootdown that reaches the TLB
//! during the walk makes it walk again).

use std::sync::Arc;
use thpsim_model::check::audit::audit;
use thpsim_model::check::invariants as inv;
use thpsim_model::kernel::ThpPolicy;
use thpsim_model::mmap::Prot;
use thpsim_model::mmu::Access;
use thpsim_model::types::{CpuId, Geometry};
use thpsim_model::{Config, Cpu, Kernel, ShuttleEngine};

type E = ShuttleEngine;

/// CPU1 writes a base page (its PTE is now young and dirty), then CPU0
/// accesses it (a TLB miss: a walk, with no compare-and-exchange) while CPU1
/// unmaps it or makes it read-only; afterwards no CPU caches a translation
/// the page tables no longer allow.
fn walk_against(
    change: fn(
        &Cpu<E>,
        &Arc<thpsim_model::mm_types::MmStruct<E>>,
        thpsim_model::types::VirtAddr,
        u64,
    ),
    access: Access,
) {
    let mut cfg = Config::new(Geometry::TINY);
    cfg.thp = ThpPolicy::Never;
    cfg.cpus = 2;
    let k = Kernel::<E>::new(cfg);
    let cpu1 = Cpu::new(k.clone(), CpuId(1));
    let mm = cpu1.mm_alloc();
    let page = k.geo.page_size();
    let a = cpu1
        .do_mmap(&mm, page, Prot::ReadWrite, page)
        .expect("mmap");
    cpu1.user_access(&mm, a, Access::Write(7)).expect("write");
    let (k0, mm0) = (k.clone(), mm.clone());
    let t0 = shuttle::thread::spawn(move || {
        let cpu0 = Cpu::new(k0, CpuId(0));
        // The page may be gone already: SIGSEGV is a fine outcome.
        let _ = cpu0.user_access(&mm0, a, access);
    });
    change(&cpu1, &mm, a, page);
    t0.join().expect("cpu0");
    let stale: Vec<_> = audit(&cpu1)
        .into_iter()
        .filter(|v| v.id == inv::AUDIT_TLB)
        .map(|v| v.message)
        .collect();
    assert!(stale.is_empty(), "stale TLB entries: {stale:?}");
    drop(Arc::clone(&mm));
}

#[test]
fn a_walk_never_caches_a_translation_a_shootdown_removed() {
    shuttle::check_random(
        || {
            walk_against(
                |c, mm, a, len| c.do_munmap(mm, a, len).expect("munmap"),
                Access::Read,
            )
        },
        3_000,
    );
    shuttle::check_random(
        || {
            walk_against(
                |c, mm, a, len| c.do_mprotect(mm, a, len, Prot::Read).expect("mprotect"),
                Access::Write(9),
            )
        },
        3_000,
    );
}
