//! hugetlbfs files: fs/hugetlbfs/inode.c (v5.8), with the callers in
//! mm/mmap.c (`ksys_mmap_pgoff()` of MAP_HUGETLB) and mm/memfd.c
//! (`memfd_create()` with MFD_HUGETLB).
//!
//! Models: `hugetlb_file_setup()` (an unlinked file; MAP_HUGETLB and memfd
//! pass VM_NORESERVE, so it reserves nothing), `hugetlbfs_file_mmap()` (the
//! VMA becomes VM_HUGETLB, its pgoff must be huge-page aligned, the pages
//! are reserved by `hugetlb_reserve_pages()`, a writable mapping past the
//! end grows the file), the file's references (`get_file()`/`fput()`) and
//! the eviction of the last one (`hugetlbfs_evict_inode()` →
//! `remove_inode_hugepages()`: the cached pages are freed and the
//! reservations given back).
//!
//! Leaves out: mounts and their subpools (size limits), fallocate, hole
//! punching, ftruncate after creation (a memfd is sized once, when it is
//! made), seals, and closing a memfd's descriptor (DIVERGENCE: a memfd
//! stays open to the end of the scenario, as its name does: any process
//! may map it by name).

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::filemap::Inode;
use crate::mm_types::{vm, Vma};
use crate::types::FileId;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

impl<E: Engine> Cpu<E> {
    /// The size of a huge page (`huge_page_size(default_hstate)`).
    pub fn huge_page_size(&self) -> u64 {
        self.k.geo.pmd_size()
    }

    /// Models hugetlb_file_setup(), fs/hugetlbfs/inode.c, v5.8, with
    /// VM_NORESERVE (as both callers pass it): a new unlinked file of `size`
    /// bytes with its reservation map and no reservation. `name` is a
    /// memfd's name; a memfd holds one reference for its descriptor.
    pub fn hugetlb_file_setup(&self, name: Option<String>, size: u64) -> FileId {
        let _f = self.func("hugetlb_file_setup");
        let map = self.k.hstate.resv_map_alloc();
        let memfd = name.is_some();
        let inode = self.k.register_file(|id| Inode::new(id, name, size, map));
        if memfd {
            inode.refs.fetch_add(1, SeqCst);
        }
        inode.id
    }

    /// Models memfd_create(name, MFD_HUGETLB) followed by ftruncate(fd,
    /// size), mm/memfd.c and hugetlbfs_setattr(), v5.8: a hugetlbfs file of
    /// `size` bytes, which must be a multiple of the huge page size
    /// (EINVAL otherwise, as hugetlbfs_setattr() says).
    pub fn memfd_create_hugetlb(&self, name: &str, size: u64) -> Result<FileId, Errno> {
        let _f = self.func("memfd_create");
        if size & (self.huge_page_size() - 1) != 0 {
            return Err(Errno::Einval);
        }
        Ok(self.hugetlb_file_setup(Some(name.to_string()), size))
    }

    /// Models hugetlbfs_file_mmap(), fs/hugetlbfs/inode.c, v5.8: `vma`
    /// (VM_HUGETLB set by the caller, as `vma->vm_flags |= VM_HUGETLB |
    /// VM_DONTEXPAND` is here) maps `file` from its pgoff; reserve its pages.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write (inode_lock() is not
    /// modelled: files are sized once).
    pub fn hugetlbfs_file_mmap(&self, file: FileId, vma: &Vma) -> Result<(), Errno> {
        let _f = self.func("hugetlbfs_file_mmap");
        let order = self.k.geo.pmd_shift() - self.k.geo.page_shift;
        // must be huge page aligned
        if vma.vm_pgoff() & ((1 << order) - 1) != 0 {
            return Err(Errno::Einval);
        }
        let vma_len = vma.vm_end().0 - vma.vm_start().0;
        let len = vma_len + (vma.vm_pgoff() << self.k.geo.page_shift);
        let shift = self.k.geo.pmd_shift();
        self.hugetlb_reserve_pages(file, vma.vm_pgoff() >> order, len >> shift, vma)?;
        let inode = self.k.file(file);
        if vma.vm_flags() & vm::WRITE != 0 && inode.i_size_bytes.load(SeqCst) < len {
            inode.i_size_bytes.store(len, SeqCst); // i_size_write()
        }
        Ok(())
    }

    /// Models get_file(): one more reference to the file (a VMA made by
    /// mmap, split or fork).
    pub fn get_file(&self, file: FileId) {
        self.k.file(file).refs.fetch_add(1, SeqCst);
    }

    /// Models fput() of a hugetlbfs file: the last reference evicts the
    /// inode (hugetlbfs_evict_inode()).
    pub fn fput(&self, file: FileId) {
        let inode = self.k.file(file);
        if inode.refs.fetch_sub(1, SeqCst) == 1 {
            if inode.shmem {
                self.shmem_evict_inode(&inode);
            } else {
                self.hugetlbfs_evict_inode(&inode);
            }
        }
    }

    /// Models hugetlbfs_evict_inode() → remove_inode_hugepages(inode, 0,
    /// LLONG_MAX), fs/hugetlbfs/inode.c, v5.8: every cached page leaves the
    /// cache (and is freed when unreferenced), and the file's reservations
    /// are given back (hugetlb_unreserve_pages()).
    ///
    /// # Locking
    /// Takes, per cached page, the fault mutex of its index, then the page
    /// lock.
    fn hugetlbfs_evict_inode(&self, inode: &Arc<Inode<E>>) {
        let _f = self.func("hugetlbfs_evict_inode");
        let mut freed = 0;
        for (_, page) in inode.cached() {
            // The inode is unreachable: no fault can race (the fault mutex
            // that 5.8 takes here serialises nothing in the model).
            self.get_page(page);
            self.lock_page(page);
            self.delete_from_page_cache(page);
            freed += 1;
            self.unlock_page(page);
            self.put_page(page);
        }
        self.hugetlb_unreserve_pages(inode.id, 0, u64::MAX >> 1, freed);
    }
}
