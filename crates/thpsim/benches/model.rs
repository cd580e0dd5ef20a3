//! Performance baseline of the model on the std engine (docs/PERFORMANCE.md).
//!
//! Run with `cargo bench -p thpsim --bench model`. Groups:
//!
//! - `fault/base_4k_write`: write faults on a region with THP off
//!   (`ThpPolicy::Never`), one write per base page, each a do_anonymous_page().
//!   Throughput is in faults. Each iteration maps a fresh 32 MiB region in one
//!   long-lived mm and writes every page of it; only the writes are timed
//!   (`iter_custom`), the mmap and the munmap that returns the pages are not.
//! - `fault/thp_write`: the same with THP always and one write per 2 MiB, each
//!   a do_huge_pmd_anonymous_page() (which clears 2 MiB). 64 MiB regions.
//! - `fork_1g_thp`: a parent with 1 GiB populated with THPs once in setup;
//!   `dup_mm+mmput` times fork of the child and its exit per iteration
//!   (`iter`, teardown inside the timed closure); `dup_mm` times the fork only
//!   (`iter_custom`, the child's mmput untimed).
//! - `mmput/empty_mm`: exit of an address space that maps nothing, to isolate
//!   the fixed cost of exit_mmap() (its free_pgtables() walks the whole user
//!   address range).
//! - `scenario/fork_child_write`: `thpsim run` of a bundled scenario end to
//!   end through the library: parse, run (interpreter, audit and memory oracle
//!   at every quiescent point), render the text report.
//!
//! Every group keeps its sample size and measurement time small so the whole
//! run takes a few minutes on two cores.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thpsim::run::{run, RunOptions};
use thpsim_model::mm_types::MmStruct;
use thpsim_model::mmap::Prot;
use thpsim_model::mmu::Access;
use thpsim_model::task_mmu::MapKind;
use thpsim_model::types::{CpuId, Geometry, VirtAddr};
use thpsim_model::{Config, Cpu, Kernel, StdEngine, ThpPolicy};

type E = StdEngine;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A booted machine with one empty process.
fn machine(cfg: Config) -> (Cpu<E>, Arc<MmStruct<E>>) {
    let k = Kernel::<E>::new(cfg);
    let cpu = Cpu::new(k, CpuId(0));
    let mm = cpu.mm_alloc();
    (cpu, mm)
}

/// Maps `len` bytes, PMD-aligned.
fn mmap(cpu: &Cpu<E>, mm: &Arc<MmStruct<E>>, len: u64) -> VirtAddr {
    let pmd = cpu.k.geo.pmd_size();
    cpu.do_mmap(mm, len, Prot::ReadWrite, pmd).expect("mmap")
}

/// One write every `stride` bytes of `[a, a + len)`.
fn touch(cpu: &Cpu<E>, mm: &Arc<MmStruct<E>>, a: VirtAddr, len: u64, stride: u64) {
    let mut off = 0;
    while off < len {
        cpu.user_access(mm, a.add_bytes(off), Access::Write(0x5a))
            .expect("write");
        off += stride;
    }
}

/// Checks once that the writes fault in what the benchmark claims they do,
/// and that no violation was reported.
fn check_kind(cpu: &Cpu<E>, mm: &Arc<MmStruct<E>>, a: VirtAddr, want: MapKind) {
    assert_eq!(cpu.page_info(mm, a).kind, want, "benchmark setup");
    assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
}

/// Write faults per second: `region` bytes, one write per `stride`.
fn fault_bench(c: &mut Criterion, name: &str, thp: ThpPolicy, region: u64, stride: u64) {
    let mut cfg = Config::new(Geometry::X86_64);
    cfg.thp = thp;
    let (cpu, mm) = machine(cfg);
    let want = if thp == ThpPolicy::Never {
        MapKind::Base
    } else {
        MapKind::ThpPmd
    };
    let a = mmap(&cpu, &mm, region);
    touch(&cpu, &mm, a, region, stride);
    check_kind(&cpu, &mm, a, want);
    cpu.do_munmap(&mm, a, region).expect("munmap");

    let mut g = c.benchmark_group("fault");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(region / stride));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let a = mmap(&cpu, &mm, region);
                let t = Instant::now();
                touch(&cpu, &mm, a, region, stride);
                timed += t.elapsed();
                cpu.do_munmap(&mm, a, region).expect("munmap");
            }
            timed
        })
    });
    g.finish();
}

fn faults(c: &mut Criterion) {
    let g = Geometry::X86_64;
    fault_bench(
        c,
        "base_4k_write",
        ThpPolicy::Never,
        32 * MIB,
        g.page_size(),
    );
    fault_bench(c, "thp_write", ThpPolicy::Always, 64 * MIB, g.pmd_size());
}

/// Fork and exit of a child sharing 1 GiB of THPs.
fn fork(c: &mut Criterion) {
    let geo = Geometry::X86_64;
    let mut cfg = Config::new(geo);
    // 1 GiB of THPs, shared by the child: only page tables are added per fork.
    cfg.memory_bytes = 3 * GIB;
    let (cpu, mm) = machine(cfg);
    let a = mmap(&cpu, &mm, GIB);
    touch(&cpu, &mm, a, GIB, geo.pmd_size());
    check_kind(&cpu, &mm, a, MapKind::ThpPmd);
    check_kind(
        &cpu,
        &mm,
        a.add_bytes(GIB - geo.page_size()),
        MapKind::ThpPmd,
    );

    let mut g = c.benchmark_group("fork_1g_thp");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("dup_mm+mmput", |b| {
        b.iter(|| {
            let child = cpu.dup_mm(&mm).expect("fork");
            cpu.mmput(black_box(&child));
        })
    });
    g.bench_function("dup_mm", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let child = cpu.dup_mm(&mm).expect("fork");
                timed += t.elapsed();
                cpu.mmput(&child);
            }
            timed
        })
    });
    g.finish();
    assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
}

/// exit_mmap() of an mm that maps nothing.
fn mmput_empty(c: &mut Criterion) {
    let mut g = c.benchmark_group("mmput");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for geo in [Geometry::TINY, Geometry::X86_64] {
        let (cpu, _) = machine(Config::new(geo));
        g.bench_function(format!("empty_mm/{}", geo.name), |b| {
            b.iter_batched(
                || cpu.mm_alloc(),
                |mm| cpu.mmput(&mm),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// `thpsim run fork_child_write` end to end, on both geometries.
fn scenario(c: &mut Criterion) {
    let name = "fork_child_write";
    let src = thpsim::bundled::find(name).expect("bundled scenario");
    let mut g = c.benchmark_group(format!("scenario/{name}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (geo, label) in [
        (thpsim_scenario::Geometry::Tiny, "tiny"),
        (thpsim_scenario::Geometry::X86_64, "x86_64"),
    ] {
        let opts = RunOptions {
            geometry: Some(geo),
            reverts: Vec::new(),
            ..RunOptions::default()
        };
        let once = run(&thpsim_scenario::parse(name, src).expect("parse"), &opts).expect("run");
        assert!(once.passed(), "{}", thpsim::output::text(&once));
        g.bench_function(label, |b| {
            b.iter(|| {
                let scn = thpsim_scenario::parse(name, black_box(src)).expect("parse");
                let report = run(&scn, &opts).expect("run");
                black_box(thpsim::output::text(&report))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, faults, fork, mmput_empty, scenario);
criterion_main!(benches);
