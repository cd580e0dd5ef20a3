//! Helpers for the model's unit tests (compiled for tests only).

use crate::cpu::Cpu;
use crate::mm_types::MmStruct;
use crate::mmap::Prot;
use crate::types::{CpuId, Geometry, VirtAddr};
use crate::{Config, Kernel, StdEngine, ThpPolicy};
use std::sync::Arc;

/// A std-engine machine with one process and one PMD-aligned, PMD-sized
/// read-write region: CPU 0, the process's mm and the region's start.
pub(crate) fn machine(
    geo: Geometry,
    thp: ThpPolicy,
) -> (Cpu<StdEngine>, Arc<MmStruct<StdEngine>>, VirtAddr) {
    let mut cfg = Config::new(geo);
    cfg.thp = thp;
    let cpu = Cpu::new(Kernel::<StdEngine>::new(cfg), CpuId(0));
    let mm = cpu.mm_alloc();
    let pmd = geo.pmd_size();
    let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
    (cpu, mm, a)
}
