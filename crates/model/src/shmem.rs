//! Shared memory: mm/shmem.c and the file-fault path of mm/memory.c and
//! mm/filemap.c (v5.8).
//!
//! Models: shmem files (`shmem_file_setup()`: memfd_create(2) without
//! MFD_HUGETLB, and `shmem_zero_setup()` for a MAP_SHARED|MAP_ANONYMOUS
//! mapping, a file of its own), their page cache of base pages filled on
//! first touch (`shmem_fault()` → `shmem_getpage_gfp()` with SGP_CACHE: a
//! zeroed page added to the cache locked), the fault path of a file VMA
//! (`do_fault()`: `do_read_fault()` with fault-around, `do_shared_fault()`;
//! `__do_fault()`, `finish_fault()`/`alloc_set_pte()` with
//! `page_add_file_rmap()`; `filemap_map_pages()` maps the cached pages
//! around a read fault), and eviction of the last reference
//! (`shmem_evict_inode()` → `shmem_truncate_range()`).
//!
//! Leaves out: shmem THP (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`
//! is `never`, the default, so every shmem page is a base page), swap of
//! shmem pages, tmpfs mounts and their size limits, private (MAP_PRIVATE)
//! mappings of a shmem file, fallocate, truncation after creation, seals,
//! userfaultfd. A shmem page migrates as an LRU page whose mapping moves it
//! in the cache (migrate.rs).

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::errno::Errno;
use crate::filemap::Inode;
use crate::memory::{VmFault, VmFaultT};
use crate::mm_types::vm;
use crate::page::pg;
use crate::pgtable::{EntryRef, Pte, PteFlags};
use crate::types::{FileId, Level, Pfn, VirtAddr};
use std::sync::atomic::Ordering::SeqCst;

/// `fault_around_bytes` (mm/memory.c, v5.8 default: 64 KiB), in base pages.
const FAULT_AROUND_PAGES: u64 = 16;

impl<E: Engine> Cpu<E> {
    /// Models shmem_file_setup() (and shmem_zero_setup()'s call of it),
    /// mm/shmem.c, v5.8: a new unlinked shmem file of `size` bytes. `name` is
    /// a memfd's name; a memfd holds one reference for its descriptor.
    pub fn shmem_file_setup(&self, name: Option<String>, size: u64) -> FileId {
        let _f = self.func("shmem_file_setup");
        let map = self.k.hstate.resv_map_alloc();
        let memfd = name.is_some();
        let inode = self.k.register_file(|id| {
            let mut i = Inode::new(id, name, size, map);
            i.shmem = true;
            i
        });
        if memfd {
            inode.refs.fetch_add(1, SeqCst);
        }
        inode.id
    }

    /// Models memfd_create(name, 0) followed by ftruncate(fd, size),
    /// mm/memfd.c and shmem_setattr(), v5.8 (the caller rounds `size` to a
    /// page, as the live runner does).
    pub fn memfd_create_shmem(&self, name: &str, size: u64) -> FileId {
        let _f = self.func("memfd_create");
        self.shmem_file_setup(Some(name.to_string()), size)
    }

    /// Models shmem_evict_inode() → shmem_truncate_range(inode, 0, -1),
    /// mm/shmem.c, v5.8: every cached page leaves the cache.
    ///
    /// # Locking
    /// Takes each cached page's lock.
    pub(crate) fn shmem_evict_inode(&self, inode: &Inode<E>) {
        let _f = self.func("shmem_evict_inode");
        for (_, page) in inode.cached() {
            self.get_page(page);
            self.lock_page(page);
            self.delete_from_page_cache(page);
            self.unlock_page(page);
            self.put_page(page);
        }
    }

    /// Models shmem_fault() → shmem_getpage_gfp(SGP_CACHE), mm/shmem.c,
    /// v5.8: the cached page at the fault's file index, locked and
    /// referenced; a page not cached yet is allocated, added to the cache
    /// locked, put on the LRU, cleared and marked uptodate. Beyond the end of
    /// the file: SIGBUS.
    ///
    /// # Locking
    /// Takes the `i_pages` lock and the page lock (find_lock_entry(), or the
    /// new page's in shmem_add_to_page_cache()).
    fn shmem_fault(&self, vmf: &VmFault<E>, file: FileId) -> Result<Pfn, VmFaultT> {
        let _f = self.func("shmem_fault");
        let ps = self.k.geo.page_shift;
        let index = vmf.vma.linear_page_index(vmf.address, ps);
        let inode = self.k.file(file);
        loop {
            if index << ps >= inode.i_size_bytes.load(SeqCst) {
                return Err(VmFaultT::SIGBUS); // -EINVAL
            }
            if let Some(page) = self.find_lock_page(file, index) {
                return Ok(page);
            }
            // shmem_alloc_and_acct_page(): __SetPageLocked() and
            // __SetPageSwapBacked() of the new page.
            let node = self.numa_node_for(&vmf.vma, vmf.address);
            let Some(page) = self.alloc_pages(0, node, false) else {
                return Err(VmFaultT::OOM);
            };
            self.page(page).__set_flag(pg::SWAPBACKED);
            match self.add_to_page_cache(page, file, index) {
                Ok(()) => {}
                Err(Errno::Eexist) => {
                    self.put_page(page);
                    continue; // repeat
                }
                Err(_) => {
                    self.put_page(page);
                    return Err(VmFaultT::OOM);
                }
            }
            self.page(page).set_flag(pg::LRU); // lru_cache_add()
                                               // clear_highpage(); SetPageUptodate(): the page is locked, so no
                                               // one maps it before it is cleared.
            self.clear_page(page);
            self.page(page).set_flag(pg::UPTODATE);
            return Ok(page);
        }
    }

    /// Models do_fault(), mm/memory.c, v5.8, for a shared file VMA:
    /// do_read_fault() (fault-around first) or, for a write, do_shared_fault().
    pub fn do_fault(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("do_fault");
        let Some(file) = vmf.vma.vm_file else {
            return VmFaultT::SIGBUS;
        };
        if vmf.vma.vm_flags() & vm::SHARED == 0 {
            // do_cow_fault(): a private file mapping (not in the language).
            self.unmodelled("do_cow_fault(): a private mapping of a shmem file", None);
        }
        if !vmf.flags.write {
            // do_read_fault(): fault around first.
            if self.do_fault_around(vmf, file) {
                return VmFaultT::NONE;
            }
        }
        // __do_fault()
        let page = match self.shmem_fault(vmf, file) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let ret = self.finish_fault(vmf, page);
        if vmf.flags.write {
            // fault_dirty_shared_page(): set_page_dirty()
            self.page(page).set_flag(pg::DIRTY);
        }
        self.unlock_page(page);
        if ret != VmFaultT::NONE {
            self.put_page(page);
        }
        ret
    }

    /// Models finish_fault() with alloc_set_pte(), mm/memory.c, v5.8: map the
    /// locked, referenced page at the fault's address (its reference becomes
    /// the mapping's) unless something is mapped there already
    /// (VM_FAULT_NOPAGE, returned as SIGSEGV-free `NONE` with the page left to
    /// the caller to release: here the caller drops it).
    ///
    /// # Locking
    /// Takes the PTE lock (pte_offset_map_lock()).
    fn finish_fault(&self, vmf: &mut VmFault<E>, page: Pfn) -> VmFaultT {
        let _f = self.func("finish_fault");
        let Some(pmd) = vmf.pmd else {
            return VmFaultT::OOM;
        };
        if !self.pte_alloc(pmd) {
            return VmFaultT::OOM;
        }
        let Some(pte) = self.pte_offset(self.pmd_read(pmd), vmf.address) else {
            // A huge PMD appeared: pmd_devmap_trans_unstable().
            return VmFaultT::NOPAGE;
        };
        let ptl = self.pte_lockptr(pte.table).lock(self);
        let r = self.alloc_set_pte(pte, vmf, page);
        drop(ptl);
        r
    }

    /// Models alloc_set_pte(), mm/memory.c, v5.8, for a file base page,
    /// with the PTE lock held: NOPAGE if the entry is not none.
    ///
    /// # Locking
    /// Called with the PTE lock held.
    fn alloc_set_pte(&self, pte: EntryRef, vmf: &VmFault<E>, page: Pfn) -> VmFaultT {
        if !self.pte_read(pte).is_none() {
            return VmFaultT::NOPAGE;
        }
        let vma = &vmf.vma;
        let mut flags = PteFlags {
            young: true, // pte_sw_mkyoung()
            ..vma.vm_page_prot()
        };
        if vmf.flags.write {
            flags.dirty = true;
            self.maybe_mkwrite(&mut flags, vma);
        }
        // page_add_file_rmap(page, false)
        self.page(page).mapcount.fetch_add(1);
        self.set_pte_at(pte, Pte::Present { pfn: page, flags });
        VmFaultT::NONE
    }

    /// Models do_fault_around() with filemap_map_pages(), mm/memory.c and
    /// mm/filemap.c, v5.8: map the cached, uptodate, unlocked pages of the
    /// file around a read fault (fault_around_bytes, within the VMA and the
    /// PTE table). True when the faulting address got mapped.
    ///
    /// # Locking
    /// Takes the PTE lock; trylocks each page it maps.
    fn do_fault_around(&self, vmf: &mut VmFault<E>, file: FileId) -> bool {
        let _f = self.func("do_fault_around");
        let g = self.k.geo;
        let ps = g.page_size();
        let vma = vmf.vma.clone();
        let address = vmf.address;
        let ptrs = g.ptrs(Level::Pte) as u64;
        // fault_around_bytes is at most a PTE table's span
        // (fault_around_bytes_set()): the tiny geometry's tables are 4 pages.
        let nr_pages = FAULT_AROUND_PAGES.min(ptrs);
        let mask = !(nr_pages * ps - 1) & !(ps - 1);
        let start_addr = VirtAddr((address.0 & mask).max(vma.vm_start().0));
        let start_pgoff = vma.linear_page_index(start_addr, g.page_shift);
        let end_pgoff = (start_pgoff - ((start_addr.0 >> g.page_shift) & (ptrs - 1)) + ptrs - 1)
            .min(((vma.vm_end().0 - vma.vm_start().0) >> g.page_shift) + vma.vm_pgoff() - 1)
            .min(start_pgoff + nr_pages - 1);
        let Some(pmd) = vmf.pmd else { return false };
        if !self.pte_alloc(pmd) {
            return false;
        }
        let Some(_) = self.pte_offset(self.pmd_read(pmd), address) else {
            return false;
        };
        let inode = self.k.file(file);
        let max_idx = inode.i_size_bytes.load(SeqCst).div_ceil(ps);
        // filemap_map_pages(): an RCU walk of the cache; each page checked
        // and locked as it is met.
        let cached: Vec<(u64, Pfn)> = inode
            .cached()
            .range(start_pgoff..=end_pgoff)
            .map(|(&i, &p)| (i, p))
            .collect();
        let mut ptl = None;
        for (idx, page) in cached {
            let p = self.page(page);
            if p.is_locked() || !self.get_page_unless_zero(page) {
                continue;
            }
            let ok = p.test_flag(pg::UPTODATE) && self.trylock_page(page);
            if !ok {
                self.put_page(page);
                continue;
            }
            if self.page_file(page) != Some(file) || idx >= max_idx {
                self.unlock_page(page);
                self.put_page(page);
                continue;
            }
            let a = vma.vm_start().add_bytes((idx - vma.vm_pgoff()) * ps);
            let Some(pte) = self.pte_offset(self.pmd_read(pmd), a) else {
                self.unlock_page(page);
                self.put_page(page);
                break;
            };
            if ptl.is_none() {
                ptl = Some(self.pte_lockptr(pte.table).lock(self));
            }
            let at = VmFault::new(vmf.mm.clone(), vma.clone(), a, vmf.flags);
            if self.alloc_set_pte(pte, &at, page) != VmFaultT::NONE {
                self.unlock_page(page);
                self.put_page(page);
                continue;
            }
            self.unlock_page(page);
        }
        // check if the page fault is solved
        let solved = self
            .pte_offset(self.pmd_read(pmd), address)
            .is_some_and(|pte| !self.pte_read(pte).is_none());
        drop(ptl);
        solved
    }
}
