//! The hugetlb steps: `mmap A SIZE hugetlb [shared]` (mmap(2) with
//! MAP_HUGETLB), `memfd F SIZE hugetlb` (memfd_create(2) with MFD_HUGETLB,
//! then ftruncate(2) to SIZE rounded up to the huge page size, as the live
//! runner does) and `mmap A SIZE file=F shared` (MAP_SHARED of that file),
//! on `thpsim_model::hugetlb` and `thpsim_model::hugetlbfs`.
//!
//! The memory oracle sees a shared mapping as its file's memory
//! (`MemoryOracle::on_mmap_shared`): every process that maps a page of the
//! file sees every write to it. A MAP_SHARED|MAP_HUGETLB mapping is a file
//! of its own, shared with the children that inherit it.
//!
//! When the owner of a private hugetlb reservation cannot get a page to
//! break COW, 5.8 takes the page away from the children
//! (unmap_ref_private(): "PID killed due to inadequate hugepage pool"):
//! their next fault in that VMA is SIGBUS. What they held there is gone by
//! the kernel's design, not lost by a race, so at each quiescent point the
//! oracle forgets the pages such a VMA no longer maps
//! ([`Machine::forget_unmapped_hugetlb`]).
//!
//! Shared memory (shmem, `thpsim_model::shmem`) takes the same steps:
//! `memfd F SIZE` without `hugetlb`, `mmap A SIZE shared` of anonymous
//! memory (a file of its own), `mmap A SIZE file=F shared` of a shmem file.

use super::{errno_outcome, Done, Machine};
use std::sync::Arc;
use thpsim_model::kernel::Config;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::mmap::Prot;
use thpsim_model::task_mmu::MapKind;
use thpsim_model::types::VirtAddr;
use thpsim_model::{Cpu, Engine};
use thpsim_scenario::{Backing, Name, Outcome, Quantity, Scenario, ScenarioError};

/// The pool must fit in each node's memory, with room for the rest (the
/// zero page's block and page tables): at most the node's huge pages less
/// two.
pub(super) fn check_pool(scn: &Scenario, cfg: &Config) -> Result<(), ScenarioError> {
    let Some(p) = &scn.header.hugetlb_pool else {
        return Ok(());
    };
    let g = cfg.geometry;
    let blocks = cfg
        .memory_bytes
        .div_ceil(g.pmd_size())
        .div_ceil(cfg.nodes as u64);
    let room = blocks.saturating_sub(2);
    if p.value > room {
        return Err(scn.error_at(
            p.span,
            format!(
                "hugetlb-pool {} does not fit: each node has {blocks} huge pages of memory, room for a pool of at most {room} (raise `memory`)",
                p.value
            ),
        ));
    }
    Ok(())
}

impl<E: Engine> Machine<E> {
    /// `P: mmap A SIZE hugetlb [shared]` and `P: mmap A SIZE file=F shared`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mmap_hugetlb(
        &self,
        cpu: &Cpu<E>,
        owner: &str,
        mm: &Arc<MmStruct<E>>,
        region: &Name,
        size: &Quantity,
        shared: bool,
        backing: &Backing,
    ) -> Result<Done, ScenarioError> {
        let len = self.scn.resolve(size, &self.units)?;
        let file = match backing {
            Backing::File(f) => {
                let Some(&id) = self.st().files.get(f.as_str()) else {
                    return Err(self.err(region.span, format!("file `{f}` was not made")));
                };
                Some(id)
            }
            _ => None,
        };
        let shmem = match file {
            Some(f) => cpu.k.file(f).shmem,
            None => *backing == Backing::Anon,
        };
        let r = if shmem {
            cpu.do_mmap_shmem(mm, len, Prot::ReadWrite, file)
        } else {
            cpu.do_mmap_hugetlb(mm, len, Prot::ReadWrite, shared, file)
        };
        match r {
            Ok(addr) => {
                let unit = if shmem {
                    cpu.k.geo.page_size()
                } else {
                    cpu.huge_page_size()
                };
                let len = len.div_ceil(unit) * unit;
                let mut st = self.st();
                st.procs
                    .get_mut(owner)
                    .expect("proc")
                    .regions
                    .insert(region.text.clone(), (addr.0, len));
                if shared {
                    let obj = match backing {
                        Backing::File(f) => format!("file {f}"),
                        _ => {
                            st.shared_maps += 1;
                            format!("shared mapping #{}", st.shared_maps)
                        }
                    };
                    st.oracle.on_mmap_shared(owner, addr.0, len, &obj, 0);
                } else {
                    st.oracle.on_mmap(owner, addr.0, len);
                }
                Ok(Done::ok())
            }
            Err(e) => Ok(Done::outcome(errno_outcome(e))),
        }
    }

    /// `P: memfd F SIZE [hugetlb]`: sized to SIZE rounded up to a huge page
    /// (hugetlb) or a page (shmem).
    pub(super) fn memfd(
        &self,
        cpu: &Cpu<E>,
        file: &Name,
        size: &Quantity,
        hugetlb: bool,
    ) -> Result<Done, ScenarioError> {
        let len = self.scn.resolve(size, &self.units)?;
        let unit = if hugetlb {
            cpu.huge_page_size()
        } else {
            cpu.k.geo.page_size()
        };
        let Some(len) = len.checked_next_multiple_of(unit) else {
            return Ok(Done::outcome(Outcome::Enomem));
        };
        let r = if hugetlb {
            cpu.memfd_create_hugetlb(&file.text, len)
        } else {
            Ok(cpu.memfd_create_shmem(&file.text, len))
        };
        match r {
            Ok(id) => {
                self.st().files.insert(file.text.clone(), id);
                Ok(Done::ok())
            }
            Err(e) => Ok(Done::outcome(errno_outcome(e))),
        }
    }

    /// The oracle forgets what the kernel took away on purpose: the pages a
    /// private hugetlb VMA marked HPAGE_RESV_UNMAPPED no longer maps (they
    /// read as nothing, and the process's next fault there is SIGBUS).
    pub(super) fn forget_unmapped_hugetlb(&self, cpu: &Cpu<E>) {
        let hsz = cpu.huge_page_size();
        let mut st = self.st();
        let procs: Vec<(String, Arc<MmStruct<E>>)> = st
            .procs
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(n, p)| (n.clone(), p.mm.clone()))
            .collect();
        for (name, mm) in procs {
            for v in mm.vma_list() {
                if !v.is_hugetlb() || !v.resv().unmapped {
                    continue;
                }
                let mut a = v.vm_start().0;
                while a < v.vm_end().0 {
                    if cpu.page_info(&mm, VirtAddr(a)).kind == MapKind::None {
                        st.oracle.on_dontneed(&name, a, hsz);
                    }
                    a += hsz;
                }
            }
        }
    }
}
