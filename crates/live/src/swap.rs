//! The swap device of a live run (`swap SIZE` in the header).
//!
//! A scenario with a `swap` line runs with a swap area of its own, SIZE
//! rounded up to a page, added for the run and removed afterwards through
//! the session's restore machinery (`session`): on success, error and panic
//! (the session's Drop), on SIGINT/SIGTERM/SIGHUP (the signal handler), and,
//! after SIGKILL or a crash, at the start of the next run (the undo steps are
//! written to `.../saved-swap` before anything is changed). Runs hold the
//! live runner's machine-wide lock throughout. Without a `swap` line nothing
//! is added.
//!
//! The device, in order of preference (`THPSIM_LIVE_SWAP=zram|file` or
//! [`crate::LiveOptions`] force one):
//!
//! - **zram**: `/dev/zram0` when it exists and is not initialised (its
//!   `initstate` is 0: nobody uses it), else a new device from
//!   `/sys/class/zram-control/hot_add` (after `modprobe zram` if neither
//!   exists). It is reset (`reset`), sized (`disksize`), given a swap header
//!   and swapon'ed; afterwards swapoff'ed, reset (its memory freed, disksize
//!   back to 0) and, if hot-added, removed (`hot_remove`).
//! - **a swap file**, `/var/lib/thpsim-live/swapfile`: the directory is made
//!   0700 and must be a real directory owned by root and closed to group and
//!   others (an unprivileged user cannot plant it: /var/lib is root's), the
//!   file is created O_EXCL|O_NOFOLLOW, mode 0600, filled with zeros (no
//!   holes: swapon refuses them), given a swap header and swapon'ed;
//!   afterwards swapoff'ed and deleted.
//!
//! The swap header is written here, as mkswap(8) writes it
//! (`union swap_header`, include/linux/swap.h): page 0 holds 1024 bytes of
//! boot block, then version 1, `last_page` (the last usable page: the area
//! has that many swap slots, page 0 being the header), `nr_badpages` 0, a
//! random UUID and an empty label, and the magic `SWAPSPACE2` in its last 10
//! bytes. swapon(2) is called directly with the highest priority
//! (`SWAP_FLAG_PREFER | 32767`), so that the scenario's pages go to this
//! device first even when the machine has swap of its own: such swap (any
//! area active before the run) is left alone, and named in the report's
//! notes.
//!
//! The device kind changes how pages swap (in 5.8 as in 6.18): zram is a
//! synchronous-IO device (SWP_SYNCHRONOUS_IO), so a fault on a swap entry
//! that a single page table holds reads the page straight into a new page
//! without the swap cache and frees the slot at once, while a swap file's
//! swap-ins go through the swap cache (with readahead) and a swapped-in page
//! can stay in it; a THP is swapped out whole only when the device can give
//! it a free 2 MiB cluster of slots (`thp_swpout`), else it is split first
//! (`thp_swpout_fallback`).

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use crate::{SwapKind, SwapPreference};

/// The directory of the swap file (see the module docs).
pub const SWAP_DIR: &str = "/var/lib/thpsim-live";
/// The swap file's name in [`SWAP_DIR`].
pub const SWAP_FILE: &str = "swapfile";
const ZRAM_CONTROL: &str = "/sys/class/zram-control";
/// swapon(2) flags (include/linux/swap.h).
const SWAP_FLAG_PREFER: i32 = 0x8000;
const SWAP_FLAG_PRIO_MASK: i32 = 0x7fff;
/// The priority the run's device gets: the highest.
pub const PRIORITY: i32 = 32767;
const PAGE: u64 = 4096;

/// The swap a run asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapRequest {
    /// The size, in bytes (rounded up to a page here).
    pub bytes: u64,
    pub prefer: SwapPreference,
    /// The `swap` line (for errors).
    pub line: usize,
}

/// One step that puts the machine back, recorded before the change it undoes
/// (the session runs them in reverse order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// Write `value` to the sysfs file `path`.
    Write { path: PathBuf, value: String },
    /// swapoff(2) of `path`.
    Swapoff(PathBuf),
    /// unlink(2) of `path`.
    Unlink(PathBuf),
}

fn zram_index(name: &str) -> Option<u32> {
    let n = name.strip_prefix("zram")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

fn swap_file() -> PathBuf {
    Path::new(SWAP_DIR).join(SWAP_FILE)
}

impl Undo {
    /// The line of the saved-state file.
    pub fn to_line(&self) -> String {
        match self {
            Undo::Write { path, value } => format!("write\t{}\t{value}", path.display()),
            Undo::Swapoff(p) => format!("swapoff\t{}", p.display()),
            Undo::Unlink(p) => format!("unlink\t{}", p.display()),
        }
    }

    /// Parses a line of the saved-state file. Only the steps this module
    /// records are accepted (the file is root's, but a run acts on it as
    /// root): swapoff of a zram device or of the swap file, unlink of the
    /// swap file, `1` to a zram device's `reset`, a number to `hot_remove`.
    pub fn from_line(line: &str) -> Result<Undo, String> {
        let bad = || format!("not a swap undo step of the live runner: `{line}`");
        let mut f = line.split('\t');
        let (verb, path) = (f.next().ok_or_else(bad)?, f.next().ok_or_else(bad)?);
        let value = f.next();
        if f.next().is_some() {
            return Err(bad());
        }
        let p = Path::new(path);
        let is_zram_dev = p
            .strip_prefix("/dev")
            .ok()
            .and_then(|r| r.to_str())
            .and_then(zram_index)
            .is_some();
        let undo = match (verb, value) {
            ("swapoff", None) if is_zram_dev || p == swap_file() => Undo::Swapoff(p.into()),
            ("unlink", None) if p == swap_file() => Undo::Unlink(p.into()),
            ("write", Some(v)) => {
                let reset = p
                    .strip_prefix("/sys/block")
                    .ok()
                    .and_then(|r| {
                        let mut c = r.components();
                        let dev = c.next()?.as_os_str().to_str()?;
                        let file = c.next()?.as_os_str().to_str()?;
                        (c.next().is_none() && file == "reset").then(|| zram_index(dev))?
                    })
                    .is_some();
                let hot_remove = p == Path::new(ZRAM_CONTROL).join("hot_remove")
                    && !v.is_empty()
                    && v.bytes().all(|b| b.is_ascii_digit());
                if !((reset && v == "1") || hot_remove) {
                    return Err(bad());
                }
                Undo::Write {
                    path: p.into(),
                    value: v.to_string(),
                }
            }
            _ => return Err(bad()),
        };
        Ok(undo)
    }

    /// Does it (errors are expected when the change never happened: a
    /// swapoff of what is not swap, an unlink of what is not there).
    pub fn run(&self) -> io::Result<()> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
        };
        match self {
            Undo::Write { path, value } => {
                let mut f = fs::OpenOptions::new().write(true).open(path)?;
                f.write_all(value.as_bytes())
            }
            Undo::Swapoff(p) => {
                let p = c(p)?;
                // SAFETY: a NUL-terminated path.
                if unsafe { libc::swapoff(p.as_ptr()) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            Undo::Unlink(p) => fs::remove_file(p),
        }
    }

    /// Whether an error of [`Undo::run`] only says the change never
    /// happened (or was undone already).
    pub fn harmless(&self, e: &io::Error) -> bool {
        match self {
            // Not swap (EINVAL), or gone (ENOENT).
            Undo::Swapoff(_) => matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)),
            Undo::Unlink(_) => e.kind() == io::ErrorKind::NotFound,
            // A device that is gone.
            Undo::Write { .. } => matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)),
        }
    }
}

/// The swap areas active now (/proc/swaps): their file names.
pub fn active() -> Vec<String> {
    fs::read_to_string("/proc/swaps")
        .map(|s| parse_swaps(&s))
        .unwrap_or_default()
}

/// The file names of /proc/swaps (octal escapes such as `\040` decoded).
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether this kernel can swap at all (CONFIG_SWAP: /proc/swaps exists).
pub fn available() -> Result<(), String> {
    if Path::new("/proc/swaps").exists() {
        Ok(())
    } else {
        Err("`swap` needs a kernel with swap (CONFIG_SWAP): there is no /proc/swaps".into())
    }
}

/// Page 0 of a swap area of `pages` pages (mkswap's format, see the module
/// docs).
pub fn header(pages: u64, uuid: [u8; 16]) -> Result<Vec<u8>, String> {
    if pages < 2 {
        return Err(format!(
            "a swap area needs 2 pages at least (the header and one slot), not {pages}"
        ));
    }
    let last = u32::try_from(pages - 1)
        .map_err(|_| format!("{pages} pages: too large for a swap header"))?;
    let mut h = vec![0u8; PAGE as usize];
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&last.to_ne_bytes());
    // nr_badpages (1032..1036) stays 0.
    h[1036..1052].copy_from_slice(&uuid);
    let magic = PAGE as usize - 10;
    h[magic..].copy_from_slice(b"SWAPSPACE2");
    Ok(h)
}

/// A random UUID (version 4).
fn uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    // SAFETY: getrandom into a local buffer; a short or failed read leaves
    // zeros, which is a valid (if unremarkable) UUID.
    unsafe { libc::getrandom(u.as_mut_ptr().cast(), u.len(), 0) };
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn read_trim(p: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(p)?.trim().to_string())
}

fn write_sys(p: &Path, v: &str) -> Result<(), String> {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|mut f| f.write_all(v.as_bytes()))
        .map_err(|e| format!("writing `{v}` to {}: {e}", p.display()))
}

/// A swap device made ready for a run: the zram device exists (hot-added if
/// need be) or the swap file's directory is there; nothing is active yet.
#[derive(Debug)]
pub struct Plan {
    pub kind: SwapKind,
    /// What swapon is given: `/dev/zramN` or the swap file.
    pub path: PathBuf,
    /// The size, a multiple of the page size.
    pub bytes: u64,
    /// The zram device's index and whether this run hot-added it.
    zram: Option<(u32, bool)>,
    /// Why the preferred kind was not used, and the like.
    pub notes: Vec<String>,
}

/// Makes a swap device ready for `req` (see [`Plan`]). Call with the live
/// runner's lock held.
pub fn prepare(req: &SwapRequest) -> Result<Plan, String> {
    available()?;
    let bytes = req
        .bytes
        .checked_next_multiple_of(PAGE)
        .ok_or_else(|| format!("swap size {} is too large", req.bytes))?;
    header(bytes / PAGE, [0; 16])?;
    match req.prefer {
        SwapPreference::Zram => prepare_zram(bytes),
        SwapPreference::File => prepare_file(bytes),
        SwapPreference::Auto => match prepare_zram(bytes) {
            Ok(p) => Ok(p),
            Err(why) => {
                let mut p = prepare_file(bytes)
                    .map_err(|e| format!("no zram device ({why}) and no swap file ({e})"))?;
                p.notes.push(format!("zram was not used: {why}"));
                Ok(p)
            }
        },
    }
}

fn prepare_zram(bytes: u64) -> Result<Plan, String> {
    let zram0 = Path::new("/sys/block/zram0");
    if !zram0.exists() && !Path::new(ZRAM_CONTROL).exists() {
        // Best effort: a kernel with zram as a module.
        let _ = std::process::Command::new("modprobe")
            .arg("zram")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let active = active();
    let free = |i: u32| {
        let dir = PathBuf::from(format!("/sys/block/zram{i}"));
        read_trim(&dir.join("initstate")).is_ok_and(|s| s == "0")
            && !active.iter().any(|a| a == &format!("/dev/zram{i}"))
    };
    let (index, hot_added) = if free(0) {
        (0, false)
    } else {
        let add = Path::new(ZRAM_CONTROL).join("hot_add");
        if !add.exists() {
            return Err(if zram0.exists() {
                "/dev/zram0 is in use and there is no /sys/class/zram-control/hot_add".into()
            } else {
                "no zram device (CONFIG_ZRAM, or `modprobe zram`)".into()
            });
        }
        // Reading hot_add makes a new device and returns its index.
        let n = read_trim(&add)
            .map_err(|e| format!("reading {}: {e}", add.display()))?
            .parse::<u32>()
            .map_err(|e| format!("{}: {e}", add.display()))?;
        (n, true)
    };
    let path = PathBuf::from(format!("/dev/zram{index}"));
    let plan = Plan {
        kind: SwapKind::Zram,
        path,
        bytes,
        zram: Some((index, hot_added)),
        notes: Vec::new(),
    };
    // devtmpfs makes the node as the device is added; wait a little for it.
    let sys_dev = read_trim(Path::new(&format!("/sys/block/zram{index}/dev")));
    for _ in 0..100 {
        if let (Ok(m), Ok(want)) = (fs::metadata(&plan.path), &sys_dev) {
            use std::os::unix::fs::FileTypeExt;
            let rdev = format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev()));
            if m.file_type().is_block_device() && &rdev == want {
                return Ok(plan);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let why = format!(
        "{} is not the block device of zram{index} ({})",
        plan.path.display(),
        sys_dev.unwrap_or_else(|e| e.to_string())
    );
    if hot_added {
        let _ = write_sys(
            &Path::new(ZRAM_CONTROL).join("hot_remove"),
            &index.to_string(),
        );
    }
    Err(why)
}

fn prepare_file(bytes: u64) -> Result<Plan, String> {
    let dir = Path::new(SWAP_DIR);
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {SWAP_DIR}: {e}")),
    }
    let m = fs::symlink_metadata(dir).map_err(|e| format!("{SWAP_DIR}: {e}"))?;
    if !m.file_type().is_dir() || m.uid() != 0 || m.mode() & 0o077 != 0 {
        return Err(format!(
            "refusing {SWAP_DIR}: not a directory of root's closed to group and others \
             (uid {}, mode {:o})",
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    let path = swap_file();
    // A file left there is a killed run's (the directory is root's): swapoff
    // (in case) and remove it.
    if fs::symlink_metadata(&path).is_ok() {
        let _ = Undo::Swapoff(path.clone()).run();
        fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    Ok(Plan {
        kind: SwapKind::File,
        path,
        bytes,
        zram: None,
        notes: Vec::new(),
    })
}

impl Plan {
    /// The undo steps, in the order of the changes they undo.
    pub fn undo(&self) -> Vec<Undo> {
        let mut out = Vec::new();
        match self.zram {
            Some((i, hot_added)) => {
                if hot_added {
                    out.push(Undo::Write {
                        path: Path::new(ZRAM_CONTROL).join("hot_remove"),
                        value: i.to_string(),
                    });
                }
                out.push(Undo::Write {
                    path: PathBuf::from(format!("/sys/block/zram{i}/reset")),
                    value: "1".into(),
                });
            }
            None => out.push(Undo::Unlink(self.path.clone())),
        }
        out.push(Undo::Swapoff(self.path.clone()));
        out
    }

    /// Sets the device up and swaps on it.
    pub fn activate(&self) -> Result<(), String> {
        let header = header(self.bytes / PAGE, uuid())?;
        let f = match self.zram {
            Some((i, _)) => {
                let dir = PathBuf::from(format!("/sys/block/zram{i}"));
                write_sys(&dir.join("reset"), "1")?;
                write_sys(&dir.join("disksize"), &self.bytes.to_string())?;
                // O_EXCL on a block device: nobody else has it open.
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_EXCL)
                    .open(&self.path)
                    .map_err(|e| format!("opening {}: {e}", self.path.display()))?
            }
            None => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.path)
                    .map_err(|e| format!("creating {}: {e}", self.path.display()))?;
                let zeros = vec![0u8; 1 << 20];
                let mut at = 0;
                while at < self.bytes {
                    let n = (self.bytes - at).min(zeros.len() as u64) as usize;
                    f.write_all_at(&zeros[..n], at)
                        .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
                    at += n as u64;
                }
                f
            }
        };
        f.write_all_at(&header, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("writing the swap header to {}: {e}", self.path.display()))?;
        drop(f);
        let p =
            CString::new(self.path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let flags = SWAP_FLAG_PREFER | (PRIORITY & SWAP_FLAG_PRIO_MASK);
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::swapon(p.as_ptr(), flags) } != 0 {
            return Err(format!(
                "swapon({}): {}",
                self.path.display(),
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// What the report says about the device.
    pub fn describe(&self) -> String {
        let mib = self.bytes as f64 / (1 << 20) as f64;
        let slots = self.bytes / PAGE - 1;
        match self.zram {
            Some((i, hot_added)) => format!(
                "swap for the run: zram device {} ({mib} MiB disksize, {slots} swap slots, \
                 priority {PRIORITY}{}), removed afterwards (swapoff, reset{}). zram is a \
                 synchronous-IO device (SWP_SYNCHRONOUS_IO): a fault on a swap entry only one \
                 page table holds reads the page straight into a new page, skipping the swap \
                 cache, and frees the slot; a THP is swapped out whole only into a free 2 MiB \
                 cluster of slots (thp_swpout), else split first (thp_swpout_fallback), and \
                 comes back as base pages",
                self.path.display(),
                if hot_added {
                    format!(", hot-added as zram{i}")
                } else {
                    String::new()
                },
                if hot_added { ", hot_remove" } else { "" },
            ),
            None => format!(
                "swap for the run: swap file {} ({mib} MiB, {slots} swap slots, priority \
                 {PRIORITY}), removed afterwards (swapoff, unlink). A swap file is not a \
                 synchronous-IO device: swap-ins go through the swap cache (with readahead, \
                 vm.page-cluster), where a swapped-in page can stay; a THP is swapped out \
                 whole only into a free 2 MiB cluster of slots (thp_swpout), else split first \
                 (thp_swpout_fallback)",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_mkswaps() {
        let h = header(16384, [7; 16]).expect("header");
        assert_eq!(h.len(), 4096);
        assert!(h[..1024].iter().all(|&b| b == 0));
        assert_eq!(u32::from_ne_bytes(h[1024..1028].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(h[1028..1032].try_into().unwrap()), 16383);
        assert_eq!(u32::from_ne_bytes(h[1032..1036].try_into().unwrap()), 0);
        assert_eq!(&h[1036..1052], &[7; 16]);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert!(header(1, [0; 16]).is_err());
        assert!(header(1 << 40, [0; 16]).is_err());
        let u = uuid();
        assert_eq!(u[6] >> 4, 4);
    }

    #[test]
    fn undo_lines_round_trip_and_nothing_else_is_accepted() {
        let plan = Plan {
            kind: SwapKind::Zram,
            path: "/dev/zram3".into(),
            bytes: 1 << 26,
            zram: Some((3, true)),
            notes: Vec::new(),
        };
        let undo = plan.undo();
        assert_eq!(
            undo.iter().map(Undo::to_line).collect::<Vec<_>>(),
            vec![
                "write\t/sys/class/zram-control/hot_remove\t3",
                "write\t/sys/block/zram3/reset\t1",
                "swapoff\t/dev/zram3",
            ]
        );
        for u in &undo {
            assert_eq!(Undo::from_line(&u.to_line()).as_ref(), Ok(u));
        }
        let file = Plan {
            kind: SwapKind::File,
            path: swap_file(),
            bytes: 1 << 26,
            zram: None,
            notes: Vec::new(),
        };
        let undo = file.undo();
        assert_eq!(
            undo,
            vec![Undo::Unlink(swap_file()), Undo::Swapoff(swap_file())]
        );
        for u in &undo {
            assert_eq!(Undo::from_line(&u.to_line()).as_ref(), Ok(u));
        }
        for bad in [
            "unlink\t/etc/passwd",
            "swapoff\t/dev/sda1",
            "swapoff\t/dev/zram",
            "swapoff\t/dev/zram1x",
            "write\t/sys/block/zram0/disksize\t0",
            "write\t/sys/block/zram0/reset\t0",
            "write\t/sys/block/sda/reset\t1",
            "write\t/sys/block/zram0/../../../etc/reset\t1",
            "write\t/sys/class/zram-control/hot_remove\t1; rm",
            "write\t/proc/sys/vm/drop_caches\t3",
            "unlink\t/var/lib/thpsim-live/swapfile\textra",
            "rm\t/var/lib/thpsim-live/swapfile",
            "",
        ] {
            assert!(Undo::from_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proc_swaps_names() {
        let t = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                 /dev/zram0                              partition\t65532\t\t0\t\t32767\n\
                 /var/lib/my\\040swap                     file\t\t1024\t\t0\t\t-2\n";
        assert_eq!(parse_swaps(t), vec!["/dev/zram0", "/var/lib/my swap"]);
        assert!(parse_swaps("Filename\tType\tSize\tUsed\tPriority\n").is_empty());
    }
}
