//! Files and their page cache: `struct inode` and `struct address_space`
//! (include/linux/fs.h) and the page-cache functions of mm/filemap.c (v5.8)
//! that hugetlbfs uses.
//!
//! Models: a file's size (`i_size`), its page cache (`i_pages`, an index →
//! page map under the `i_pages` lock; a cached page holds one reference and
//! has `page->mapping`/`page->index` set), its `i_mmap` tree (the VMAs that
//! map it, under `i_mmap_rwsem`), and, for hugetlbfs, the inode's
//! reservation map (`inode->i_mapping->private_data`). Files live in the
//! kernel's arena by [`FileId`].
//!
//! Leaves out: every file system but hugetlbfs and shmem,
//! the xarray's own structure (a sorted map), writeback, truncation by
//! ftruncate(2) after creation, readahead and the LRU of file pages (hugetlb
//! pages are never on it). The i_mmap interval tree is a list filtered by
//! pgoff on a walk, as the anon_vma tree is.

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::errno::Errno;
use crate::mm_types::{Vma, VmaCopies};
use crate::page::file_mapping;
use crate::sync::{LockClass, RwSem, SpinLock};
use crate::types::{FileId, Pfn, ResvMapId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

/// `struct address_space` of a file.
pub struct AddressSpace<E: Engine> {
    /// `mapping->i_mmap_rwsem`.
    pub i_mmap_rwsem: RwSem<E>,
    /// `mapping->i_mmap`: the VMAs mapping the file. Changed with
    /// `i_mmap_rwsem` held for write, read with it held.
    pub i_mmap: Mutex<Vec<Arc<Vma>>>,
    /// The xa_lock of `mapping->i_pages`.
    pub i_pages_lock: SpinLock<E>,
    /// `mapping->i_pages`: page index (in the file's page size) → head page.
    /// Changed under `i_pages_lock`.
    pub pages: Mutex<BTreeMap<u64, Pfn>>,
}

/// A file: `struct inode` with its mapping.
pub struct Inode<E: Engine> {
    pub id: FileId,
    /// The scenario's name for a memfd file; None for the unlinked file of
    /// a mmap(MAP_ANONYMOUS|MAP_HUGETLB).
    pub name: Option<String>,
    /// `i_size` in bytes (a multiple of the huge page size for hugetlbfs).
    pub i_size_bytes: AtomicU64,
    pub mapping: AddressSpace<E>,
    /// The hugetlbfs inode's reservation map (`inode_resv_map()`), used by
    /// shared mappings.
    pub resv_map: ResvMapId,
    /// Open references (`struct file` count): one per VMA mapping it, plus
    /// one for a memfd's descriptor. When the last goes, the inode is
    /// evicted (hugetlbfs_evict_inode(), shmem_evict_inode()).
    pub refs: AtomicUsize,
    /// A shmem file (shmem.rs), not a hugetlbfs one.
    pub shmem: bool,
}

impl<E: Engine> Inode<E> {
    pub fn new(id: FileId, name: Option<String>, size: u64, resv_map: ResvMapId) -> Self {
        Inode {
            id,
            name,
            i_size_bytes: AtomicU64::new(size),
            mapping: AddressSpace {
                i_mmap_rwsem: RwSem::new(LockClass::IMmapRwsem),
                i_mmap: Mutex::new(Vec::new()),
                i_pages_lock: SpinLock::new(LockClass::IPagesLock),
                pages: Mutex::new(BTreeMap::new()),
            },
            resv_map,
            refs: AtomicUsize::new(0),
            shmem: false,
        }
    }

    /// A copy for a copy of the machine (`Kernel::snapshot`): id, name,
    /// size, the locks (free at a quiescent point), the VMAs of `i_mmap`
    /// (through `vmas`, shared with the mms' lists), the page cache, the
    /// reservation map's id and the reference count.
    pub fn snapshot(&self, vmas: &mut VmaCopies) -> Self {
        let i_mmap_rwsem = self.mapping.i_mmap_rwsem.snapshot();
        let i_pages_lock = self.mapping.i_pages_lock.snapshot();
        let i_mmap = self
            .mapping
            .i_mmap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|v| vmas.get(v))
            .collect();
        Inode {
            id: self.id,
            name: self.name.clone(),
            i_size_bytes: AtomicU64::new(self.i_size_bytes.load(SeqCst)),
            mapping: AddressSpace {
                i_mmap_rwsem,
                i_mmap: Mutex::new(i_mmap),
                i_pages_lock,
                pages: Mutex::new(self.cached()),
            },
            resv_map: self.resv_map,
            refs: AtomicUsize::new(self.refs.load(SeqCst)),
            shmem: self.shmem,
        }
    }

    /// The page cache, for checkers (no scheduling point).
    pub fn cached(&self) -> BTreeMap<u64, Pfn> {
        self.mapping
            .pages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The VMAs mapping the file, for checkers (no scheduling point).
    pub fn mappers(&self) -> Vec<Arc<Vma>> {
        self.mapping
            .i_mmap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl<E: Engine> Cpu<E> {
    /// Models find_get_page(), mm/filemap.c, v5.8: the cached page at
    /// `index` with a reference, if any.
    ///
    /// # Locking
    /// Takes the `i_pages` lock (DIVERGENCE: 5.8 looks up under RCU with a
    /// speculative reference; the model's lookup is one locked step).
    pub fn find_get_page(&self, file: FileId, index: u64) -> Option<Pfn> {
        let inode = self.k.file(file);
        let _x = inode.mapping.i_pages_lock.lock(self);
        let page = inode
            .mapping
            .pages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .copied()?;
        self.get_page(page);
        Some(page)
    }

    /// Models find_lock_page(), mm/filemap.c, v5.8: the cached page at
    /// `index`, referenced and locked; a page truncated while we waited for
    /// its lock is looked up again.
    ///
    /// # Locking
    /// Takes the `i_pages` lock, then PG_locked of the page.
    pub fn find_lock_page(&self, file: FileId, index: u64) -> Option<Pfn> {
        loop {
            let page = self.find_get_page(file, index)?;
            self.lock_page(page);
            if self.page_file(page) == Some(file) {
                return Some(page);
            }
            self.unlock_page(page);
            self.put_page(page);
        }
    }

    /// Models add_to_page_cache() (__add_to_page_cache_locked()),
    /// mm/filemap.c, v5.8: insert a locked new page at `index`; EEXIST if a
    /// page is there. The cache holds a reference.
    ///
    /// # Locking
    /// Takes the `i_pages` lock; the page's lock is taken before it is
    /// visible (__SetPageLocked on a page no one else can reach).
    pub fn add_to_page_cache(&self, page: Pfn, file: FileId, index: u64) -> Result<(), Errno> {
        let inode = self.k.file(file);
        // __SetPageLocked(page): the new page is this CPU's alone.
        self.lock_page(page);
        self.get_page(page);
        let p = self.page(page);
        p.mapping.store(file_mapping(file));
        p.index.store(index);
        let _x = inode.mapping.i_pages_lock.lock(self);
        let mut pages = inode
            .mapping
            .pages
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if pages.contains_key(&index) {
            drop(pages);
            drop(_x);
            p.mapping.store(0);
            self.unlock_page(page);
            self.put_page(page);
            return Err(Errno::Eexist);
        }
        pages.insert(index, page);
        Ok(())
    }

    /// Models delete_from_page_cache() (__delete_from_page_cache() and the
    /// cache's put_page()), mm/filemap.c, v5.8, of a locked page.
    ///
    /// # Locking
    /// Takes the `i_pages` lock.
    pub fn delete_from_page_cache(&self, page: Pfn) {
        let Some(file) = self.page_file(page) else {
            return;
        };
        let inode = self.k.file(file);
        {
            let _x = inode.mapping.i_pages_lock.lock(self);
            let index = self.page(page).index.load();
            inode
                .mapping
                .pages
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&index);
            self.page(page).mapping.store(0);
        }
        self.put_page(page);
    }

    /// Models i_mmap_lock_read()/vma_interval_tree_foreach() for a walk: the
    /// VMAs of `file` whose range covers the file page `pgoff` (in base
    /// pages), read with `i_mmap_rwsem` held by the caller.
    pub fn vma_interval_tree_foreach(&self, file: FileId, pgoff: u64) -> Vec<Arc<Vma>> {
        let ps = self.k.geo.page_shift;
        self.k
            .file(file)
            .mappers()
            .into_iter()
            .filter(|v| {
                let start = v.vm_pgoff();
                let pages = (v.vm_end().0 - v.vm_start().0) >> ps;
                start <= pgoff && pgoff < start + pages
            })
            .collect()
    }

    /// Models __vma_link_file()/vma_interval_tree_insert(): `vma` maps its
    /// file from now on.
    ///
    /// # Locking
    /// Takes the file's `i_mmap_rwsem` for write.
    pub fn vma_link_file(&self, vma: &Arc<Vma>) {
        self.i_mmap_change(vma, |list| list.push(vma.clone()));
    }

    /// Models unlink_file_vma(), mm/mmap.c, v5.8: take `vma` out of its
    /// file's `i_mmap`.
    ///
    /// # Locking
    /// Takes the file's `i_mmap_rwsem` for write.
    pub fn unlink_file_vma(&self, vma: &Arc<Vma>) {
        self.i_mmap_change(vma, |list| list.retain(|v| !Arc::ptr_eq(v, vma)));
    }

    /// `change` of the `i_mmap` of `vma`'s file (if it maps one) under
    /// `i_mmap_lock_write()`.
    ///
    /// # Locking
    /// Takes the file's `i_mmap_rwsem` for write.
    fn i_mmap_change(&self, vma: &Vma, change: impl FnOnce(&mut Vec<Arc<Vma>>)) {
        let Some(file) = vma.vm_file else { return };
        let inode = self.k.file(file);
        let _w = inode.mapping.i_mmap_rwsem.write(self);
        change(
            &mut inode
                .mapping
                .i_mmap
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
    }
}
