//! The incremental memory check (`check::watch::check_memory`: only the pages
//! whose content, translation or frame changed since the last check) catches
//! each corruption the full sweep catches, and reports it the same way.
//!
//! Each case builds a machine with a process P and its fork child C, whose
//! pages hold distinct bytes the oracle knows, checks it clean, corrupts it
//! through the model's own primitives (a frame's bytes written, a page-table
//! entry pointed elsewhere or cleared, in the parent or the child, 4 KiB
//! pages or THPs), and runs the incremental check and the full sweep (on a
//! copy of the oracle taken before): both must report, the same pages.

use std::sync::Arc;
use thpsim_model::check::oracle::MemoryOracle;
use thpsim_model::check::watch::{check_memory, TranslationWatch};
use thpsim_model::check::Violation;
use thpsim_model::engine::Atomic;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::mmap::Prot;
use thpsim_model::mmu::Access;
use thpsim_model::pgtable::{EntryRef, Pmd, Pte};
use thpsim_model::types::{CpuId, Geometry, Level, VirtAddr};
use thpsim_model::{Config, Cpu, Kernel, StdEngine, ThpPolicy};

type E = StdEngine;

struct World {
    cpu: Cpu<E>,
    p: Arc<MmStruct<E>>,
    c: Arc<MmStruct<E>>,
    a: VirtAddr,
    oracle: MemoryOracle,
    watch: TranslationWatch,
}

impl World {
    /// P maps two PMDs, writes page i with i + 1 (the oracle told), forks C.
    fn new(geo: Geometry, thp: ThpPolicy) -> World {
        let mut cfg = Config::new(geo);
        cfg.thp = thp;
        let cpu = Cpu::new(Kernel::<E>::new(cfg), CpuId(0));
        let p = cpu.mm_alloc();
        let (ps, pmd) = (geo.page_size(), geo.pmd_size());
        let a = cpu
            .do_mmap(&p, 2 * pmd, Prot::ReadWrite, pmd)
            .expect("mmap");
        let mut oracle = MemoryOracle::new(ps);
        oracle.on_spawn("P");
        oracle.on_mmap("P", a.0, 2 * pmd);
        for i in 0..2 * pmd / ps {
            let v = (i % 250) as u8 + 1;
            let at = a.add_bytes(i * ps);
            for off in 0..ps {
                cpu.user_access(&p, at.add_bytes(off), Access::Write(v))
                    .expect("write");
            }
            oracle.on_fill("P", at.0, ps, v);
        }
        let c = cpu.dup_mm(&p).expect("fork");
        oracle.on_fork("P", "C");
        let mut w = World {
            cpu,
            p,
            c,
            a,
            oracle,
            watch: TranslationWatch::default(),
        };
        assert_eq!(w.check(false), Vec::<String>::new(), "clean");
        assert_eq!(w.check(false), Vec::<String>::new(), "still clean");
        w
    }

    fn check(&mut self, full: bool) -> Vec<String> {
        let procs = [("P", &self.p), ("C", &self.c)];
        let v: Vec<Violation> = check_memory(
            &self.cpu,
            &mut self.oracle,
            &mut self.watch,
            &procs,
            full,
            true,
        );
        let mut m: Vec<String> = v.into_iter().map(|v| v.message).collect();
        m.sort();
        m
    }

    fn mm(&self, which: &str) -> &Arc<MmStruct<E>> {
        if which == "P" {
            &self.p
        } else {
            &self.c
        }
    }

    fn page(&self, i: u64) -> VirtAddr {
        self.a.add_bytes(i * self.cpu.k.geo.page_size())
    }

    fn pmd_ref(&self, mm: &MmStruct<E>, at: VirtAddr) -> EntryRef {
        self.cpu.huge_pte_offset(mm, at).expect("a PMD entry")
    }

    fn pte_ref(&self, mm: &MmStruct<E>, at: VirtAddr) -> EntryRef {
        let pmd = self.pmd_ref(mm, at);
        match Pmd::decode(self.cpu.table(pmd.table).peek(pmd.index)) {
            Pmd::Table(t) => EntryRef {
                table: t,
                index: self.cpu.k.geo.index(Level::Pte, at),
            },
            other => panic!("no PTE table at {at:?}: {other:?}"),
        }
    }

    fn store(&self, e: EntryRef, v: u64) {
        Atomic::store(self.cpu.table(e.table).raw(e.index), v);
    }
}

/// Corrupts `w`; the name says how.
type Corruption = (&'static str, ThpPolicy, fn(&World));

fn corruptions() -> Vec<Corruption> {
    vec![
        (
            "a byte of a frame P shows, written",
            ThpPolicy::Never,
            |w| {
                let f = w.cpu.page_info(&w.p, w.page(1)).pfn.expect("mapped");
                thpsim_model::page::write_byte(w.cpu.k.mem.words(f), 3, 0xee);
                w.cpu.touch_data(f);
            },
        ),
        (
            "a byte of a THP both show, written",
            ThpPolicy::Always,
            |w| {
                let f = w.cpu.page_info(&w.c, w.page(5)).pfn.expect("mapped");
                thpsim_model::page::write_byte(w.cpu.k.mem.words(f), 0, 0);
                w.cpu.touch_data(f);
            },
        ),
        (
            "P's PTE pointed at another page's frame",
            ThpPolicy::Never,
            |w| {
                let other = w.cpu.page_info(&w.p, w.page(2)).pfn.expect("mapped");
                let e = w.pte_ref(&w.p, w.page(1));
                let Pte::Present { flags, .. } = Pte::decode(w.cpu.table(e.table).peek(e.index))
                else {
                    panic!("present")
                };
                w.store(e, Pte::Present { pfn: other, flags }.encode());
            },
        ),
        ("C's PTE cleared", ThpPolicy::Never, |w| {
            let e = w.pte_ref(w.mm("C"), w.page(3));
            w.store(e, Pte::None.encode());
        }),
        (
            "P's huge PMD pointed at the other THP",
            ThpPolicy::Always,
            |w| {
                let g = w.cpu.k.geo;
                let second = w
                    .cpu
                    .page_info(&w.p, w.a.add_bytes(g.pmd_size()))
                    .pfn
                    .expect("mapped");
                let e = w.pmd_ref(&w.p, w.a);
                let Pmd::Huge { flags, invalid, .. } =
                    Pmd::decode(w.cpu.table(e.table).peek(e.index))
                else {
                    panic!("a huge PMD")
                };
                w.store(
                    e,
                    Pmd::Huge {
                        pfn: second,
                        flags,
                        invalid,
                    }
                    .encode(),
                );
            },
        ),
        ("C's huge PMD cleared", ThpPolicy::Always, |w| {
            let e = w.pmd_ref(w.mm("C"), w.a);
            w.store(e, Pmd::None.encode());
        }),
    ]
}

#[test]
fn the_incremental_check_catches_what_the_full_sweep_catches() {
    for geo in [Geometry::TINY, Geometry::X86_64] {
        for (what, thp, corrupt) in corruptions() {
            let mut w = World::new(geo, thp);
            let before = w.oracle.clone();
            corrupt(&w);
            let incremental = w.check(false);
            w.oracle = before;
            let full = w.check(true);
            assert!(
                !full.is_empty(),
                "{} {what}: the full sweep saw nothing",
                geo.name
            );
            assert_eq!(incremental, full, "{} {what}", geo.name);
        }
    }
}

/// Only what changed is compared again: a byte written into a frame behind
/// the model's back (no `touch_data`, which no model path does) is not seen
/// by the incremental check, which compares only the page whose expected
/// content changed, and is seen by the full sweep (the end of every run).
#[test]
fn only_what_changed_is_compared_again_and_the_full_sweep_sees_everything() {
    let mut w = World::new(Geometry::TINY, ThpPolicy::Never);
    let f = w.cpu.page_info(&w.p, w.page(2)).pfn.expect("mapped");
    thpsim_model::page::write_byte(w.cpu.k.mem.words(f), 1, 0xee);
    w.oracle.on_fill("P", w.page(1).0, 1, 0x77);
    let before = w.oracle.clone();
    let v = w.check(false);
    assert_eq!(v.len(), 1, "page 1 only: {v:?}");
    w.oracle = before;
    let v = w.check(true);
    assert_eq!(
        v.len(),
        3,
        "P's page 1, and page 2 of P and C (one frame): {v:?}"
    );
}

/// A check without the index (an exploration's) followed by indexed ones:
/// the first indexed check rebuilds the index, and a frame written after it
/// is found through it.
#[test]
fn the_index_is_rebuilt_after_an_unindexed_check() {
    let mut w = World::new(Geometry::TINY, ThpPolicy::Never);
    let procs = [("P", &w.p), ("C", &w.c)];
    let v = check_memory(&w.cpu, &mut w.oracle, &mut w.watch, &procs, false, false);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(w.check(false), Vec::<String>::new(), "rebuilt, clean");
    let f = w.cpu.page_info(&w.c, w.page(6)).pfn.expect("mapped");
    thpsim_model::page::write_byte(w.cpu.k.mem.words(f), 2, 0xee);
    w.cpu.touch_data(f);
    assert_eq!(w.check(false).len(), 2, "P's and C's page 6 (one frame)");
}
