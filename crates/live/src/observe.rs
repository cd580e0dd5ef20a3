//! Observing a process's pages from outside, without changing them.
//!
//! Per 4 KiB page: /proc/PID/pagemap (present, swapped, PFN), /proc/kpageflags
//! of the frame (zero page, hugetlb, THP, compound head/tail), the compound
//! head (the nearest COMPOUND_HEAD frame at or below, within the PMD-aligned
//! window of frames), /proc/kpagecount (the mapcount), the node (from the
//! memory block of the frame in /sys/devices/system/memory), and whether a
//! huge PMD maps it:
//!
//! - PAGEMAP_SCAN (Linux >= 6.7) on /proc/PID/pagemap with PAGE_IS_HUGE, which
//!   is set for PMD-mapped THPs (and the huge zero page) and not for
//!   PTE-mapped ones; flags 0, so the ioctl never write-protects or splits;
//! - fallback on older kernels (or with `THPSIM_LIVE_NO_PAGEMAP_SCAN=1`): the
//!   VMA's `AnonHugePages` in /proc/PID/smaps counts PMD-mapped THP bytes. A
//!   THP page is called PMD-mapped when its PMD-aligned 2 MiB range lies in one
//!   VMA, all 512 entries map the 512 frames of one aligned THP in order, and
//!   the VMA's AnonHugePages is nonzero. Exact when a VMA holds only PMD-mapped
//!   THPs or only PTE-mapped ones; when it holds both, a PTE-mapped THP whose
//!   PTEs map it whole and in order is misreported as PMD-mapped.
//!
//! A page that is not present but has PM_SWAP (bit 62) holds a swap-format
//! entry: its type (bits 0-4 of the entry, with the offset above them) is a
//! swap device's index below `MAX_SWAPFILES` (`swap`), or one of the top
//! type numbers the kernel uses for migration entries (`migration`) and PTE
//! markers (`none`); `decode::SwapTypes` has the layout, from the kernel's
//! configuration (/boot/config-RELEASE or /proc/config.gz). pagemap reports
//! a swap entry's type and offset only to CAP_SYS_ADMIN, which the live
//! runner has (it needs the PFNs anyway).
//!
//! The first byte of a page is read through /proc/PID/mem only when pagemap
//! says it is present: a read of a non-present page through /proc/PID/mem
//! would fault it in (the zero page, or a new THP with the zero page off), so
//! a non-present page reads as 0, as the model's `peek_byte` does.

use crate::decode::{
    classify, compound_head, smaps_anon_huge, KFlags, Kind, PagemapEntry, SwapTypes,
};
use crate::LiveError;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

pub const PAGE: u64 = 4096;
pub const PMD: u64 = 2 << 20;
const PMD_PAGES: u64 = PMD / PAGE;

/// `struct page_region` (include/uapi/linux/fs.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const PAGE_IS_HUGE: u64 = 1 << 6;
/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;

/// PAGEMAP_SCAN over `[start, end)` of an open pagemap: the ranges a huge PMD
/// maps. `Err` when the kernel lacks the ioctl.
fn scan_huge(pagemap: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut cur = start;
    let mut vec = [PageRegion::default(); 64];
    while cur < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: cur,
            end,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            category_anyof_mask: PAGE_IS_HUGE,
            return_mask: PAGE_IS_HUGE,
            ..Default::default()
        };
        // SAFETY: arg and vec outlive the call; the kernel writes at most
        // vec_len regions and arg.walk_end.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for r in &vec[..n as usize] {
            out.push((r.start, r.end));
        }
        if arg.walk_end <= cur {
            break;
        }
        cur = arg.walk_end;
    }
    Ok(out)
}

/// Whether this kernel has PAGEMAP_SCAN (tried on our own pagemap).
pub fn have_pagemap_scan() -> bool {
    if std::env::var_os("THPSIM_LIVE_NO_PAGEMAP_SCAN").is_some_and(|v| v != "0") {
        return false;
    }
    let Ok(f) = File::open("/proc/self/pagemap") else {
        return false;
    };
    let probe = [0u8; 1];
    let a = probe.as_ptr() as u64 & !(PAGE - 1);
    scan_huge(&f, a, a + PAGE).is_ok()
}

/// `uname -r`.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The running kernel's configuration: /boot/config-RELEASE, else
/// /proc/config.gz (CONFIG_IKCONFIG_PROC) through `gzip -dc`. `None` when
/// neither can be read.
pub fn kernel_config() -> Option<String> {
    if let Ok(s) = std::fs::read_to_string(format!("/boot/config-{}", release())) {
        return Some(s);
    }
    let out = std::process::Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    (out.status.success() && !out.stdout.is_empty())
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a base page of a process looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageObs {
    pub kind: Kind,
    pub pfn: Option<u64>,
    /// The compound head frame, for compound pages (THP, huge zero page).
    pub head: Option<u64>,
    /// /proc/kpagecount.
    pub mapcount: i64,
    pub node: Option<u32>,
    /// The first byte of the page (0 when not present).
    pub value: u8,
}

/// Reads /proc for one process at a time; the kpage files stay open.
pub struct Observer {
    kflags: File,
    kcount: File,
    pub pagemap_scan: bool,
    /// What a swapped entry's type means here (swap, migration, marker).
    pub swap_types: SwapTypes,
    /// Whether `swap_types` comes from the kernel's configuration.
    pub swap_types_exact: bool,
    block_bytes: u64,
    block_node: HashMap<u64, Option<u32>>,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LiveError {
    let context = context.into();
    move |source| LiveError::Io { context, source }
}

fn read_u64(f: &File, index: u64, what: &str) -> Result<u64, LiveError> {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, index * 8)
        .map_err(io_err(format!("reading {what} entry {index:#x}")))?;
    Ok(u64::from_le_bytes(b))
}

/// One process's files, open for one observation.
pub struct ProcFiles {
    pid: i32,
    pagemap: File,
    mem: File,
    smaps: Option<Vec<(u64, u64, u64)>>,
}

impl ProcFiles {
    pub fn open(pid: i32) -> Result<ProcFiles, LiveError> {
        let pm = format!("/proc/{pid}/pagemap");
        let mem = format!("/proc/{pid}/mem");
        Ok(ProcFiles {
            pid,
            pagemap: File::open(&pm).map_err(io_err(format!("opening {pm}")))?,
            mem: File::open(&mem).map_err(io_err(format!("opening {mem}")))?,
            smaps: None,
        })
    }

    fn entry(&self, addr: u64) -> Result<PagemapEntry, LiveError> {
        let mut b = [0u8; 8];
        self.pagemap
            .read_exact_at(&mut b, addr / PAGE * 8)
            .map_err(io_err(format!(
                "reading /proc/{}/pagemap at {addr:#x}",
                self.pid
            )))?;
        Ok(PagemapEntry(u64::from_le_bytes(b)))
    }

    /// Whether the VMA holding `addr` is VM_LOCKED.
    pub fn vm_locked(&self, addr: u64) -> Result<bool, LiveError> {
        let p = format!("/proc/{}/smaps", self.pid);
        let s = std::fs::read_to_string(&p).map_err(io_err(format!("reading {p}")))?;
        Ok(crate::decode::smaps_vm_locked(&s, addr))
    }

    fn smaps(&mut self) -> Result<&[(u64, u64, u64)], LiveError> {
        if self.smaps.is_none() {
            let p = format!("/proc/{}/smaps", self.pid);
            let s = std::fs::read_to_string(&p).map_err(io_err(format!("reading {p}")))?;
            self.smaps = Some(smaps_anon_huge(&s));
        }
        Ok(self.smaps.as_deref().unwrap_or(&[]))
    }
}

impl Observer {
    pub fn new() -> Result<Observer, LiveError> {
        let kflags = File::open("/proc/kpageflags").map_err(io_err("opening /proc/kpageflags"))?;
        let kcount = File::open("/proc/kpagecount").map_err(io_err("opening /proc/kpagecount"))?;
        let config = kernel_config();
        let swap_types = SwapTypes::for_kernel(&release(), config.as_deref());
        let block_bytes = std::fs::read_to_string("/sys/devices/system/memory/block_size_bytes")
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        Ok(Observer {
            kflags,
            kcount,
            pagemap_scan: have_pagemap_scan(),
            swap_types,
            swap_types_exact: config.is_some(),
            block_bytes,
            block_node: HashMap::new(),
        })
    }

    fn flags(&self, pfn: u64) -> Result<KFlags, LiveError> {
        Ok(KFlags(read_u64(&self.kflags, pfn, "/proc/kpageflags")?))
    }

    /// Whether a frame is PageMlocked (/proc/kpageflags KPF_MLOCKED).
    pub fn frame_mlocked(&self, pfn: u64) -> Result<bool, LiveError> {
        Ok(self.flags(pfn)?.has(crate::decode::kpf::MLOCKED))
    }

    /// The node of a frame, from the memory block holding it.
    fn node(&mut self, pfn: u64) -> Option<u32> {
        if self.block_bytes == 0 {
            return Some(0);
        }
        let block = pfn * PAGE / self.block_bytes;
        *self.block_node.entry(block).or_insert_with(|| {
            let dir = format!("/sys/devices/system/memory/memory{block}");
            let rd = std::fs::read_dir(dir).ok()?;
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("node")?
                        .parse::<u32>()
                        .ok()
                })
                .next()
        })
    }

    /// The compound head of a compound frame.
    fn head(&self, pfn: u64, flags: KFlags) -> Result<Option<u64>, LiveError> {
        if !flags.compound() {
            return Ok(None);
        }
        let base = pfn & !(PMD_PAGES - 1);
        let n = (pfn - base + 1) as usize;
        let mut buf = vec![0u8; n * 8];
        self.kflags
            .read_exact_at(&mut buf, base * 8)
            .map_err(io_err(format!("reading /proc/kpageflags at {base:#x}")))?;
        let window: Vec<KFlags> = buf
            .chunks_exact(8)
            .map(|c| KFlags(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect();
        Ok(compound_head(pfn, base, &window))
    }

    /// Whether a huge PMD maps `addr` (see the module docs).
    fn pmd_mapped(
        &self,
        pf: &mut ProcFiles,
        addr: u64,
        head: Option<u64>,
    ) -> Result<bool, LiveError> {
        let page = addr & !(PAGE - 1);
        if self.pagemap_scan {
            let r = scan_huge(&pf.pagemap, page, page + PAGE)
                .map_err(io_err(format!("PAGEMAP_SCAN of process {}", pf.pid)))?;
            return Ok(r.iter().any(|&(s, e)| s <= page && page < e));
        }
        // Fallback: smaps AnonHugePages.
        let Some(head) = head else { return Ok(false) };
        let hstart = addr & !(PMD - 1);
        let vma = pf
            .smaps()?
            .iter()
            .find(|&&(s, e, _)| s <= addr && addr < e)
            .copied();
        let Some((vs, ve, huge)) = vma else {
            return Ok(false);
        };
        if huge == 0 || hstart < vs || hstart + PMD > ve || head % PMD_PAGES != 0 {
            return Ok(false);
        }
        for i in 0..PMD_PAGES {
            if pf.entry(hstart + i * PAGE)?.pfn() != Some(head + i) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Observes the page of process `pf` holding `addr`.
    pub fn page(&mut self, pf: &mut ProcFiles, addr: u64) -> Result<PageObs, LiveError> {
        let page = addr & !(PAGE - 1);
        let e = pf.entry(page)?;
        let Some(pfn) = e.pfn() else {
            return Ok(PageObs {
                kind: classify(e, KFlags(0), false, &self.swap_types),
                pfn: None,
                head: None,
                mapcount: 0,
                node: None,
                value: 0,
            });
        };
        let flags = self.flags(pfn)?;
        let head = self.head(pfn, flags)?;
        let huge = flags.compound() && !flags.hugetlb() && self.pmd_mapped(pf, addr, head)?;
        let kind = classify(e, flags, huge, &self.swap_types);
        let mapcount = read_u64(&self.kcount, pfn, "/proc/kpagecount")? as i64;
        let mut b = [0u8; 1];
        // A present page: GUP through /proc/PID/mem follows it without faulting.
        let value = match pf.mem.read_exact_at(&mut b, page) {
            Ok(()) => b[0],
            Err(_) => 0,
        };
        Ok(PageObs {
            kind,
            pfn: Some(pfn),
            head,
            mapcount,
            node: self.node(pfn),
            value,
        })
    }
}
