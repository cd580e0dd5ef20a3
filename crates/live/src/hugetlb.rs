//! hugetlb on the live kernel: the 2 MiB pool a run sets, and the hugetlbfs
//! files (`memfd F SIZE hugetlb`) the controller holds for the scenario.
//!
//! The pool. A scenario that uses hugetlb (a `hugetlb-pool N` line with N > 0,
//! a `mmap ... hugetlb`, a `memfd ... hugetlb`) runs with exactly N free,
//! unreserved 2 MiB pages (`hugetlb-pool` absent: 0, so that a hugetlb mmap
//! fails as the model's does, whatever the host's pool): the session
//! (`session::knobs`) sets `nr_overcommit_hugepages` to 0 (the model has no
//! surplus pages) and `nr_hugepages` to what leaves N pages free after the
//! pages other users of the machine hold or have reserved, saving and
//! restoring both as it does the THP knobs (Drop, SIGINT/SIGTERM/SIGHUP, and
//! the saved file a killed run leaves). [`settle_pool`] then checks
//! `free_hugepages - resv_hugepages` and, if the kernel could not make N
//! pages (fragmented memory), fails the run before it starts. The knobs are
//! global, not per node: the live runner refuses hugetlb on a machine with
//! more than one online node (see [`available`]).
//!
//! Files. `memfd F SIZE hugetlb` is memfd_create(MFD_HUGETLB) plus ftruncate
//! to SIZE rounded up to 2 MiB (hugetlbfs refuses a size that is not a
//! multiple of the huge page size), done by the controller, which keeps the
//! fd for the whole run: file names are global to the scenario, and a
//! mapping (`P: mmap A SIZE file=F shared`) is made by P's agent from a copy
//! of that fd the controller passes with the request (SCM_RIGHTS); the agent
//! closes its copy once mapped (the mapping holds the file). At the end of a
//! run the controller closes the files (and unregisters pins) before the
//! session shrinks the pool back; when a signal interrupts the run, the
//! handler restores `nr_hugepages` while the controller still holds its
//! files, and the kernel turns the pages it cannot free into surplus pages,
//! freed when the files close (at the latest when the controller exits).
//!
//! What the kernel reports for hugetlb pages (measured on 6.18; 5.8 reads
//! the same through page_mapcount() -> __page_mapcount(), which returns the
//! compound mapcount for PageHuge):
//! - /proc/kpageflags: KPF_HUGE on every subpage, KPF_COMPOUND_HEAD on the
//!   first, KPF_COMPOUND_TAIL on the others; KPF_ANON for a private
//!   mapping's pages (not for a shared or memfd mapping's), so the kind is
//!   `hugetlb` (`decode::classify`) and the head is the 2 MiB-aligned frame.
//! - /proc/kpagecount: the same for every subpage of a huge page: the number
//!   of page tables that map the huge page (its entire mapcount, one per
//!   huge PTE), e.g. 1 after the first write, 2 in parent and child after a
//!   fork of a private mapping until one of them writes (COW copies the whole
//!   2 MiB page), 2 for a shared page both processes have touched.
//! - The live kernel does not copy a *shared* hugetlb mapping's page tables
//!   at fork (vma_needs_copy(): no anon_vma, so the child faults them in;
//!   since "hugetlb: lazy page table copies in fork()"); 5.8's
//!   copy_page_range() copies every VM_HUGETLB VMA. So live, a child's
//!   page of a shared hugetlb region reads `none` (and the parent's
//!   mapcount 1) until the child touches it.
//! - Linux >= 5.18 accepts MADV_DONTNEED on hugetlb VMAs (the range's end is
//!   aligned down to the huge page size, so a 4 KiB range succeeds and drops
//!   nothing); 5.8 fails it with EINVAL. munmap and mprotect of a range not
//!   2 MiB-aligned fail with EINVAL on both.

use crate::session::Knob;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The 2 MiB hstate's sysfs directory.
pub const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";
/// The hugetlb page size (x86_64 PMD).
pub const HPAGE: u64 = 2 << 20;
/// From this length on a hugetlb or file mapping is placed PUD-aligned.
pub const PUD: u64 = 1 << 30;

fn knob(name: &str) -> PathBuf {
    Path::new(HUGEPAGES_2M).join(name)
}

fn read_count(name: &str) -> io::Result<u64> {
    let p = knob(name);
    let s = fs::read_to_string(&p)?;
    s.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: `{}` is not a number", p.display(), s.trim()),
        )
    })
}

/// The 2 MiB pool's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// `nr_hugepages` (persistent and surplus pages).
    pub nr: u64,
    /// `free_hugepages` (reserved ones included).
    pub free: u64,
    /// `resv_hugepages`: free pages promised to mappings already made.
    pub resv: u64,
    /// `surplus_hugepages`.
    pub surplus: u64,
}

impl Pool {
    pub fn read() -> io::Result<Pool> {
        Ok(Pool {
            nr: read_count("nr_hugepages")?,
            free: read_count("free_hugepages")?,
            resv: read_count("resv_hugepages")?,
            surplus: read_count("surplus_hugepages")?,
        })
    }

    /// Pages a new mapping could reserve: free and not reserved.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.resv)
    }

    /// The `nr_hugepages` that leaves `want` pages available, keeping the
    /// pages others use or have reserved.
    pub fn target(&self, want: u64) -> u64 {
        self.nr.saturating_sub(self.available()) + want
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nr_hugepages {}, free_hugepages {}, resv_hugepages {}, surplus_hugepages {}",
            self.nr, self.free, self.resv, self.surplus
        )
    }
}

/// Whether hugetlb scenarios can run here; the error says why not.
pub fn available() -> Result<(), String> {
    let nr = knob("nr_hugepages");
    if !nr.exists() {
        return Err(format!(
            "hugetlb needs {}: this kernel has no 2 MiB hugetlb pages (CONFIG_HUGETLBFS)",
            nr.display()
        ));
    }
    for k in ["nr_hugepages", "nr_overcommit_hugepages"] {
        if let Err(e) = fs::OpenOptions::new().write(true).open(knob(k)) {
            return Err(format!(
                "hugetlb needs to set {} for the run: {e}",
                knob(k).display()
            ));
        }
    }
    let nodes = crate::migrate::online_nodes();
    if nodes > 1 {
        return Err(format!(
            "hugetlb runs live on one-node machines only (the pool is set through the global \
             nr_hugepages); this machine has {nodes} NUMA nodes"
        ));
    }
    Ok(())
}

/// The knobs a run with a pool of `want` free pages sets, in order:
/// no surplus pages, then the pool (computed from its state now; call with
/// the runner's lock held).
pub fn knobs(want: u64) -> Vec<Knob> {
    let nr = Pool::read().map_or(want, |p| p.target(want));
    vec![
        Knob {
            path: knob("nr_overcommit_hugepages"),
            value: "0".into(),
        },
        Knob {
            path: knob("nr_hugepages"),
            value: nr.to_string(),
        },
    ]
}

/// After the session set the knobs: makes `want` pages available exactly
/// (another try or two if the first setting missed, e.g. because a page
/// was released meanwhile), or says what the kernel could give. The
/// session restores `nr_hugepages` whatever happens here.
pub fn settle_pool(want: u64) -> Result<Pool, String> {
    let path = knob("nr_hugepages");
    let mut pool = Pool::read().map_err(|e| format!("reading {HUGEPAGES_2M}: {e}"))?;
    for _ in 0..3 {
        if pool.available() == want {
            return Ok(pool);
        }
        let t = pool.target(want);
        fs::write(&path, t.to_string())
            .map_err(|e| format!("writing {t} to {}: {e}", path.display()))?;
        pool = Pool::read().map_err(|e| format!("reading {HUGEPAGES_2M}: {e}"))?;
    }
    if pool.available() == want {
        return Ok(pool);
    }
    Err(format!(
        "`hugetlb-pool {want}`: the kernel could not provide {want} free 2 MiB hugetlb page{} \
         ({pool}: {} available; memory too fragmented or in use?)",
        if want == 1 { "" } else { "s" },
        pool.available()
    ))
}

/// `memfd F SIZE [hugetlb]`: a hugetlbfs memfd of `len` bytes (a multiple
/// of 2 MiB), or a shmem one. The error carries the errno of memfd_create or
/// ftruncate.
pub fn memfd(name: &str, len: u64, hugetlb: bool) -> io::Result<OwnedFd> {
    let cname = CString::new(format!("thpsim-{name}")).map_err(io::Error::other)?;
    let flags = libc::MFD_CLOEXEC | if hugetlb { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: a plain syscall with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: ftruncate on our own fd.
    if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The alignment of a hugetlb or file mapping of `len` bytes: PUD when it
/// holds one, else PMD.
pub fn alignment(len: u64) -> u64 {
    if len >= PUD {
        PUD
    } else {
        HPAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_targets() {
        let idle = Pool {
            nr: 0,
            free: 0,
            resv: 0,
            surplus: 0,
        };
        assert_eq!(idle.target(4), 4);
        assert_eq!(idle.target(0), 0);
        // Someone holds 3 pages and has 2 more reserved: keep those 5.
        let busy = Pool {
            nr: 10,
            free: 7,
            resv: 2,
            surplus: 0,
        };
        assert_eq!(busy.available(), 5);
        assert_eq!(busy.target(0), 5);
        assert_eq!(busy.target(4), 9);
    }

    #[test]
    fn placement() {
        assert_eq!(alignment(HPAGE), HPAGE);
        assert_eq!(alignment(PUD - HPAGE), HPAGE);
        assert_eq!(alignment(PUD), PUD);
        assert_eq!(alignment(3 * PUD), PUD);
    }
}
