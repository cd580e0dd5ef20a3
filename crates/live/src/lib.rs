//! Runs thpsim scenarios on the running Linux kernel and observes its pages
//! (`thpsim conform`, issue 4).
//!
//! [`run_live`] runs a scenario for real: one process (an *agent*) per
//! scenario process, driven step by step by the caller (the *controller*) over
//! a Unix socket; `P: fork C` makes P's agent call fork(); mmap, munmap,
//! mprotect, madvise and exit are the real syscalls and reads and writes real
//! memory accesses (a SIGSEGV/SIGBUS is caught and becomes the step's
//! outcome). `expect` and `show` observe pages from outside through
//! /proc/PID/pagemap, PAGEMAP_SCAN, /proc/kpageflags and /proc/kpagecount.
//! The records follow the model's runner one to one by line: a
//! [`LiveRecord::Step`] per step (`together` blocks run in the model's fixed
//! round-robin order), a [`LiveRecord::Expect`] per `expect`, a
//! [`LiveRecord::Page`] per 4 KiB page of a `show`; frames are labelled `#1`,
//! `#2`, ... by first appearance, a THP's subpages sharing their head's label.
//!
//! Machine settings for the run (put back on every exit path, including
//! Ctrl-C; see `session`):
//! - `enabled` and `use_zero_page` from the header (default `always`, `on`, the
//!   model's defaults);
//! - `defrag=always`, so a THP fault compacts rather than falls back to base
//!   pages, in every VMA;
//! - mTHP sizes other than 2 MiB `never`, 2 MiB `inherit` (5.8 has PMD THPs only);
//! - `shrink_underused=0` (Linux >= 6.12 splits mostly-zero THPs in the
//!   deferred-split shrinker; 5.8 does not);
//! - khugepaged paused: one PMD per scan and the `max_ptes_none`,
//!   `max_ptes_swap`, `max_ptes_shared` limits (the kernel's defaults,
//!   511/64/256, which are 5.8's too), then 24 h between scans (written in
//!   that order: writing a sleep knob wakes khugepaged for one scan). The
//!   keeper registers its mm with khugepaged first, with an empty region that
//!   has an anon_vma (6.x skips VMAs without one), so that no agent's
//!   registration wakes khugepaged (it wakes when its first mm registers)
//!   and the one wake-up scan finds nothing to collapse. `thp_collapse_alloc`
//!   and khugepaged's `pages_collapsed` are compared around every step
//!   (`vmstat`): a collapse the scenario did not ask for is reported as
//!   interference, never as a difference.
//!
//! Kernel work: `kernel: split-huge-page P A[off]` writes
//! `PID,0xADDR,0xADDR+4096` to /sys/kernel/debug/split_huge_pages (unsupported
//! when debugfs is missing or locked down); `kernel: deferred-split` writes 2
//! to /proc/sys/vm/drop_caches, whose drop_slab() runs every shrinker of every
//! memcg, the deferred-split one included.
//!
//! Pins and the device (issue 9; `pins`): `P: pin R = A[range] [write]
//! [fast]` creates an io_uring instance in the controller (one per pin) and
//! has P's agent register the range as buffer 0 (IORING_REGISTER_BUFFERS,
//! which pins P's pages with FOLL_WRITE|FOLL_LONGTERM through
//! pin_user_pages_fast(), all or nothing; an EFAULT is the step's `efault`).
//! An io_uring fd cannot travel over a Unix socket, so the agent takes a copy
//! of the controller's with pidfd_getfd() and closes it once registered: the
//! ring, and the pin, are the controller's, and outlive P as the language
//! says. `unpin R` is IORING_UNREGISTER_BUFFERS (any process may unpin; a pin
//! whose step failed holds nothing). `device: write R[range] = V` is an
//! IORING_OP_READ_FIXED from a memfd holding V into the buffer, `device: read
//! R[off]` an IORING_OP_WRITE_FIXED from the buffer into the memfd, read back
//! by the controller: both reach the pinned frames through the buffer's
//! bio_vecs, not through any page table, the model's DMA. Live, every pin is
//! a write pin and a fast one (io_uring's flags): a read-only pin is noted
//! per line, and differs where the write flag decides (docs/CONFORMANCE.md
//! D11); `fast` is noted as changing nothing. Where io_uring cannot be used
//! (io_uring_setup() fails: ENOSYS, or EPERM with kernel.io_uring_disabled 2
//! or 1), a scenario with a pin is refused before anything runs, naming the
//! first pin's line and the reason; the sysctl is never changed.
//!
//! hugetlb (`hugetlb`): a scenario that uses hugetlb runs with exactly
//! `hugetlb-pool N` free 2 MiB hugetlb pages (0 when the line is absent) and
//! no surplus pages: `nr_hugepages` and `nr_overcommit_hugepages` are set for
//! the run and restored like the THP knobs, and a run the kernel cannot give
//! N pages fails before it starts (`Unsupported`, naming the line). `mmap A
//! SIZE hugetlb [shared]` is MAP_ANONYMOUS|MAP_HUGETLB, private or shared,
//! of SIZE rounded up to 2 MiB, placed PUD-aligned from 1 GiB on, else
//! PMD-aligned; `memfd F SIZE hugetlb` is a memfd_create(MFD_HUGETLB) of
//! the controller's (file names are the scenario's), passed to the agent
//! that maps it (`mmap A SIZE file=F shared`, SCM_RIGHTS). munmap, mprotect,
//! madvise are passed to the kernel as they are, so their errnos are its.
//! shmem (`mmap ... shared` without `hugetlb`, `memfd` without `hugetlb`)
//! runs as the kernel's own shared anonymous memory and memfd files.
//!
//! Swap (`swap`, issue 11): a scenario with a `swap SIZE` line runs with a
//! swap device of its own, SIZE rounded up to a page: zram (`/dev/zram0`
//! when it is unused, else one hot-added through
//! /sys/class/zram-control/hot_add) or, where zram cannot be had, a swap
//! file in the root-only directory /var/lib/thpsim-live (`THPSIM_LIVE_SWAP`
//! or [`LiveOptions`] choose). The runner writes the swap header itself
//! (mkswap's format) and calls swapon(2) with the highest priority; the
//! device is removed (swapoff; zram reset and hot_remove; the file deleted)
//! through the session's restore, on every exit path including Ctrl-C and,
//! after SIGKILL, by the next run. Swap that was active before the run is
//! left alone and named in the notes. [`LiveReport::swap`] and a note say
//! which kind was used: zram is a synchronous-IO device
//! (SWP_SYNCHRONOUS_IO), so a swap-in of a page only one page table maps
//! skips the swap cache, while a swap file's swap-ins go through it (with
//! readahead); a THP is swapped out whole only into a free 2 MiB cluster of
//! the device (`thp_swpout`; measured on 6.18: zram yes, a swap file on a
//! rotational disk no, `thp_swpout_fallback`, split first). Without a `swap`
//! line no device is added.
//! - `P: madvise A[range] pageout | free` are MADV_PAGEOUT and MADV_FREE in
//!   P's agent (the errno is the outcome, as for the other advice), each
//!   after draining every CPU's LRU batches (as `kernel: reclaim` below), so
//!   that no page is passed over for sitting in another CPU's batch;
//!   `collapse` is MADV_COLLAPSE with the kernel's real outcome (EAGAIN read
//!   as `ebusy`), where 5.8, without MADV_COLLAPSE, fails with `einval`: a
//!   declared divergence, noted per line.
//! - `kernel: reclaim P A[range]` is MADV_PAGEOUT issued by P's agent over the
//!   range, and `kernel: khugepaged P A[range]` MADV_COLLAPSE (a declared
//!   divergence of mechanism: MADV_COLLAPSE ignores the `max_ptes_*`
//!   limits, so the `khugepaged` header line is refused live). Their outcome
//!   is always `ok`, as for the model's kernel steps; an errno goes to the
//!   notes. MADV_PAGEOUT skips pages mapped by more than one process (5.8
//!   and 6.x alike), so a page shared after fork stays where it is. The
//!   collapses a step asks for (one per PMD-aligned 2 MiB of its range) are
//!   not interference; more than that, or any khugepaged `pages_collapsed`,
//!   is ("khugepaged ran"). What each such step did to the swap and
//!   collapse counters (`pswpout +512, thp_swpout +1`, ...) is noted.
//! - `expect P A[x] swap` and `show` report a swap entry as `swap`: pagemap
//!   bit 62 (PM_SWAP) set, bit 63 clear, and a swap type (bits 0-4) below
//!   `MAX_SWAPFILES`; the types above it are migration entries
//!   (`migration`; hwpoison and device-private entries too) and the PTE
//!   marker (`none`), decoded from the kernel's configuration
//!   (`decode::SwapTypes`).
//!
//! `mlock`/`munlock` are the syscalls in the agent (RLIMIT_MEMLOCK lifted;
//! root has CAP_IPC_LOCK anyway); `expect P A[x] mlocked` holds when the VMA's
//! smaps VmFlags has `lo` (VM_LOCKED) and /proc/kpageflags has KPF_MLOCKED
//! (bit 33) for the page (a THP's head), as the model's rule.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod agent;
pub mod bench;
pub mod decode;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod hugetlb;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod migrate;
mod observe;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod pins;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod run;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod session;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod swap;
pub mod vmstat;

use serde::Serialize;
use thpsim_scenario::{Outcome, Scenario};

/// The result of a live run.
#[derive(Clone, Debug, Serialize)]
pub struct LiveReport {
    /// `uname -r`.
    pub kernel: String,
    /// How the run was done: settings applied, detection methods, header
    /// lines that apply to the model only.
    pub notes: Vec<String>,
    pub records: Vec<LiveRecord>,
    /// Background work that ran during the run and may have changed what it
    /// observed (a khugepaged collapse, a split by reclaim or compaction),
    /// each with the line it happened at. When this is not empty the records
    /// do not describe the scenario alone: compare nothing, run it again.
    pub interference: Vec<String>,
    /// The swap device the run added (`swap` line); removed again when the
    /// run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<LiveSwap>,
}

/// Which kind of swap device a run uses (see [`LiveSwap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapKind {
    /// A zram device: compressed RAM, a synchronous-IO device
    /// (SWP_SYNCHRONOUS_IO).
    Zram,
    /// A swap file on a disk file system.
    File,
}

impl SwapKind {
    pub fn keyword(self) -> &'static str {
        match self {
            SwapKind::Zram => "zram",
            SwapKind::File => "file",
        }
    }
}

/// Which device kind a `swap` line gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SwapPreference {
    /// zram when it can be had, else a swap file.
    #[default]
    Auto,
    /// zram only (the run fails, `Unsupported`, when zram cannot be had).
    Zram,
    /// A swap file only.
    File,
}

impl SwapPreference {
    /// From `THPSIM_LIVE_SWAP` (`zram`, `file`; anything else: auto).
    pub fn from_env() -> SwapPreference {
        match std::env::var("THPSIM_LIVE_SWAP").as_deref() {
            Ok("zram") => SwapPreference::Zram,
            Ok("file") => SwapPreference::File,
            _ => SwapPreference::Auto,
        }
    }
}

/// The swap device of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveSwap {
    pub kind: SwapKind,
    /// What was swapon'ed: `/dev/zramN` or the swap file.
    pub path: String,
    /// Its size (the `swap` line rounded up to a page).
    pub bytes: u64,
    /// Its swap priority (the highest).
    pub priority: i32,
    /// The swap areas that were active before the run (left alone).
    pub host_swap: Vec<String>,
}

/// How [`run_live_with`] runs a scenario.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveOptions {
    /// The swap device kind for a `swap` line.
    pub swap: SwapPreference,
}

/// One line of a live run's report (compare with the model's records by line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LiveRecord {
    /// A step and what it did.
    Step {
        line: usize,
        text: String,
        outcome: Outcome,
        /// The first byte a `read` returned.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<u8>,
    },
    /// An `expect` line, evaluated as the model does.
    Expect {
        line: usize,
        text: String,
        ok: bool,
        /// What was found: a kind (`thp-pmd`), `mapcount 2`, `node 0`, or the
        /// two labels of a `same`/`other` (`#1 and #2`, `nothing`).
        found: String,
    },
    /// One 4 KiB page of a `show`.
    Page {
        line: usize,
        process: String,
        region: String,
        /// Page index in the region.
        offset: u64,
        /// none | zero | base | thp-pmd | thp-pte | swap | migration | hugetlb
        kind: String,
        /// The frame's label (none for `none` and `zero`); a THP's subpages
        /// share the head frame's label.
        #[serde(skip_serializing_if = "Option::is_none")]
        page: Option<String>,
        /// Index of the subpage in its compound page.
        #[serde(skip_serializing_if = "Option::is_none")]
        subpage: Option<u64>,
        /// /proc/kpagecount of the frame (0 when nothing is mapped).
        mapcount: i64,
        /// The page's first byte as the process would read it (0 when not
        /// present: it would be zero-filled on demand).
        value: u8,
    },
}

/// Why a live run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// This machine cannot run scenarios live at all (exit 2).
    #[error("cannot run on the live kernel: {0}")]
    Environment(String),
    /// A step or header line this kernel (or the live runner) cannot do.
    #[error("line {line}: {what}")]
    Unsupported { line: usize, what: String },
    /// The scenario is wrong at run time (a range past a region's end, ...),
    /// as the model would report it.
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    /// The kernel did something the scenario language cannot express (an
    /// errno other than EINVAL/EACCES/ENOMEM/EBUSY), or an agent misbehaved.
    #[error("line {line}: {what}")]
    Failed { line: usize, what: String },
    /// A system call of the controller failed (or an agent died).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The run was stopped by this signal (SIGINT, SIGTERM, SIGHUP); the THP
    /// settings were restored and the agents killed.
    #[error("interrupted by signal {0}; THP settings restored")]
    Interrupted(i32),
}

/// Whether this machine can run scenarios live; the error says exactly why not.
pub fn environment() -> Result<(), LiveError> {
    imp::environment()
}

/// The environment variable that lets tests run on the live kernel.
pub const LIVE_TESTS_VAR: &str = "THPSIM_LIVE";

/// Whether the test suite may run scenarios on this machine's kernel: only
/// when asked (`THPSIM_LIVE=1`; a live run changes the machine's THP and
/// khugepaged settings for its duration, adds a swap device for a `swap`
/// line and drops caches for `kernel: deferred-split`, putting everything
/// back afterwards) and when
/// [`environment`] allows it. The error says which.
pub fn live_tests_enabled() -> Result<(), String> {
    match std::env::var(LIVE_TESTS_VAR).as_deref() {
        Ok("1") => environment().map_err(|e| e.to_string()),
        _ => Err(format!(
            "live-kernel tests are opt-in: set {LIVE_TESTS_VAR}=1 to run them (they change THP \
             and khugepaged settings for each run and put them back)"
        )),
    }
}

/// Whether pins can run live here: an io_uring instance can be created (a
/// container's seccomp profile or `kernel.io_uring_disabled` may forbid it).
pub fn io_uring_available() -> Result<(), String> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        pins::available()
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        Err("pins run live on Linux x86_64 only".to_string())
    }
}

/// Runs a scenario on the live kernel.
///
/// Fails with [`LiveError::Environment`] when [`environment`] does, with
/// [`LiveError::Unsupported`] before touching anything when the scenario uses
/// what the live runner cannot do (mirrors, `kernel 3.16`, the `khugepaged`
/// header line, hugetlb without 2 MiB hugetlb pages or on a machine of
/// several NUMA nodes, a non-x86_64 geometry, `split-huge-page` without a
/// writable debugfs, pins where io_uring is unavailable), and when a `swap`
/// line's device cannot be made (no zram and no swap file). Runs are
/// serialised machine-wide (a lock file), since THP settings and swap
/// devices are global. The swap device kind comes from `THPSIM_LIVE_SWAP`
/// (`zram`, `file`; default: zram when it can be had).
pub fn run_live(scn: &Scenario) -> Result<LiveReport, LiveError> {
    imp::run_live(
        scn,
        &LiveOptions {
            swap: SwapPreference::from_env(),
        },
    )
}

/// [`run_live`] with explicit options (`THPSIM_LIVE_SWAP` is not read).
pub fn run_live_with(scn: &Scenario, opts: &LiveOptions) -> Result<LiveReport, LiveError> {
    imp::run_live(scn, opts)
}

/// Puts back what a killed live run left behind (`thpsim live restore`):
/// its swap device and its THP and hugetlb settings, from the saved files
/// in the live runner's root-only directory, under its lock (waiting for a
/// run in progress). Only the knobs and swap steps a run makes are
/// accepted; any other line is refused and named in the result. Returns
/// what was done, one note each (empty: nothing was left behind).
pub fn restore_leftovers() -> Result<Vec<String>, LiveError> {
    imp::restore_leftovers()
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use super::LiveError;
    use std::fs;
    use std::os::unix::fs::FileExt;

    pub use crate::run::run_live;
    pub use crate::session::restore_leftovers;

    fn env(msg: impl Into<String>) -> LiveError {
        LiveError::Environment(msg.into())
    }

    pub fn environment() -> Result<(), LiveError> {
        // SAFETY: plain libc queries.
        let (euid, page) = unsafe { (libc::geteuid(), libc::sysconf(libc::_SC_PAGESIZE)) };
        if euid != 0 {
            return Err(env(
                "not root: the PFNs in /proc/PID/pagemap, /proc/kpageflags, /proc/kpagecount \
                 and the THP settings in /sys need root",
            ));
        }
        if page != 4096 {
            return Err(env(format!(
                "the page size is {page} bytes; only the x86_64 geometry (4 KiB pages) runs live"
            )));
        }
        let thp = crate::session::THP;
        let enabled = format!("{thp}/enabled");
        if !std::path::Path::new(&enabled).exists() {
            return Err(env(format!(
                "no {enabled}: this kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)"
            )));
        }
        for knob in ["enabled", "defrag", "use_zero_page"] {
            let p = format!("{thp}/{knob}");
            if let Err(e) = fs::OpenOptions::new().write(true).open(&p) {
                return Err(env(format!("cannot write {p}: {e}")));
            }
        }
        let pmd = fs::read_to_string(format!("{thp}/hpage_pmd_size")).unwrap_or_default();
        if pmd.trim() != "2097152" {
            return Err(env(format!(
                "{thp}/hpage_pmd_size is `{}`, not 2097152: only the x86_64 geometry runs live",
                pmd.trim()
            )));
        }
        for f in ["/proc/kpageflags", "/proc/kpagecount"] {
            if let Err(e) = fs::File::open(f) {
                return Err(env(format!("cannot read {f}: {e}")));
            }
        }
        // Does pagemap show PFNs? Look at a page of our own stack.
        let probe = [1u8; 64];
        let addr = std::hint::black_box(&probe).as_ptr() as u64;
        let pm = fs::File::open("/proc/self/pagemap")
            .map_err(|e| env(format!("cannot read /proc/self/pagemap: {e}")))?;
        let mut b = [0u8; 8];
        pm.read_exact_at(&mut b, addr / 4096 * 8)
            .map_err(|e| env(format!("cannot read /proc/self/pagemap: {e}")))?;
        let e = crate::decode::PagemapEntry(u64::from_le_bytes(b));
        match e.pfn() {
            Some(0) | None => Err(env(
                "/proc/PID/pagemap does not show PFNs (it needs CAP_SYS_ADMIN in the initial \
                 user namespace)",
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod imp {
    use super::{LiveError, LiveReport};
    use thpsim_scenario::Scenario;

    pub fn environment() -> Result<(), LiveError> {
        if cfg!(target_os = "linux") {
            Err(LiveError::Environment(
                "the live runner supports x86_64 only".into(),
            ))
        } else {
            Err(LiveError::Environment(
                "not Linux: the live runner needs /proc/PID/pagemap, /proc/kpageflags and THP sysfs"
                    .into(),
            ))
        }
    }

    pub fn run_live(_: &Scenario, _: &super::LiveOptions) -> Result<LiveReport, LiveError> {
        Err(environment().unwrap_err())
    }

    pub fn restore_leftovers() -> Result<Vec<String>, LiveError> {
        Err(environment().unwrap_err())
    }
}
