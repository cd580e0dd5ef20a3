//! The live kernel's side of `thpsim bench kernel` (issue 13): each workload
//! done by a real process, timed inside it.
//!
//! A workload runs in a process started for it (this program executed again
//! with [`WORKLOAD_ENV`] set, so a small address space of its own, as the
//! model's process has; `main` hands it to [`serve_if_asked`]), which maps
//! and prepares its memory untimed, reads CLOCK_MONOTONIC around the timed
//! part, prints the nanoseconds and exits. The forks of a workload only make
//! system calls and touch the memory mapped before: no allocation, no lock.
//!
//! The THP settings are a [`Session`]'s (the live runner's lock, every knob
//! put back when the bench ends or is interrupted): `enabled` as the
//! workload needs, `defrag=always`, khugepaged paused, as for `thpsim
//! conform`.

/// What a workload's process does; only the part named *timed* is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Maps `len_bytes` of anonymous memory (2 MiB-aligned) and, timed,
    /// writes every byte of it: one fault a 4 KiB page (`enabled=never`) or
    /// a 2 MiB THP (`always`).
    Fill { len_bytes: u64 },
    /// Writes every byte of `len_bytes` (THPs), then, timed: fork(); the
    /// child writes one byte every 2 MiB (each a COW fault) and exits; the
    /// parent waits for it.
    ForkCow { len_bytes: u64 },
    /// Writes every byte of `len_bytes`, then, timed: a chain of `procs`
    /// processes, each forking the next (all alive at once), the last
    /// exiting first, each waited for by its parent.
    ForkChain { procs: u32, len_bytes: u64 },
    /// Writes every byte of `len_bytes` (THPs), then, timed: munmap() of the
    /// 4 KiB page in its middle.
    MunmapOne { len_bytes: u64 },
}

const HPAGE_BYTES: u64 = 2 << 20;
const PAGE_BYTES: u64 = 4096;

impl Workload {
    /// The size of the region the workload maps.
    pub fn len_bytes(self) -> u64 {
        match self {
            Workload::Fill { len_bytes }
            | Workload::ForkCow { len_bytes }
            | Workload::ForkChain { len_bytes, .. }
            | Workload::MunmapOne { len_bytes } => len_bytes,
        }
    }

    /// The workload as [`WORKLOAD_ENV`] carries it.
    fn encode(self) -> String {
        match self {
            Workload::Fill { len_bytes } => format!("fill {len_bytes}"),
            Workload::ForkCow { len_bytes } => format!("fork-cow {len_bytes}"),
            Workload::ForkChain { procs, len_bytes } => format!("fork-chain {procs} {len_bytes}"),
            Workload::MunmapOne { len_bytes } => format!("munmap-one {len_bytes}"),
        }
    }

    fn decode(s: &str) -> Option<Workload> {
        let w: Vec<&str> = s.split(' ').collect();
        let n = |i: usize| w.get(i).and_then(|x| x.parse::<u64>().ok());
        Some(match *w.first()? {
            "fill" => Workload::Fill { len_bytes: n(1)? },
            "fork-cow" => Workload::ForkCow { len_bytes: n(1)? },
            "fork-chain" => Workload::ForkChain {
                procs: u32::try_from(n(1)?).ok()?,
                len_bytes: n(2)?,
            },
            "munmap-one" => Workload::MunmapOne { len_bytes: n(1)? },
            _ => return None,
        })
    }
}

/// The environment variable that makes a `thpsim` process a workload's
/// process (see [`serve_if_asked`]).
pub const WORKLOAD_ENV: &str = "THPSIM_BENCH_WORKLOAD";

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod os {
    use super::{Workload, HPAGE_BYTES, PAGE_BYTES, WORKLOAD_ENV};
    use crate::session::{Session, Settings};
    use crate::LiveError;
    use std::time::Duration;
    use thpsim_scenario::KhugepagedLimits;

    /// The live kernel held for benchmarks: the THP settings applied, and put
    /// back on drop.
    pub struct KernelBench {
        _session: Session,
    }

    impl KernelBench {
        /// Takes the live runner's lock and sets THP `enabled` to `thp_enabled`
        /// (`always` | `never`).
        pub fn start(thp_enabled: &str) -> Result<KernelBench, LiveError> {
            crate::environment()?;
            let session = Session::start(&Settings {
                enabled: thp_enabled.to_string(),
                zero_page: true,
                hugetlb_pool: None,
                // The kernel's own defaults on x86_64 (HPAGE_PMD_NR 512).
                khugepaged: KhugepagedLimits {
                    max_ptes_none: 511,
                    max_ptes_swap: 64,
                    max_ptes_shared: 256,
                },
                swap: None,
            })?;
            Ok(KernelBench { _session: session })
        }

        /// Runs `w` once in a new process and returns its timed part.
        pub fn run(&self, w: Workload) -> Result<Duration, LiveError> {
            in_child(w)
        }
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Maps `len` bytes of private anonymous memory, 2 MiB-aligned (the slack
    /// stays mapped: the process exits soon). Null on failure.
    fn map_aligned(len: u64) -> *mut u8 {
        // SAFETY: a fresh anonymous mapping; nothing else uses the range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (len + HPAGE_BYTES) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let a = (p as u64).div_ceil(HPAGE_BYTES) * HPAGE_BYTES;
        a as *mut u8
    }

    /// Writes every byte of `[p, p + len)`.
    ///
    /// # Safety
    /// `p` maps `len` writable bytes.
    unsafe fn fill(p: *mut u8, len: u64) {
        std::ptr::write_bytes(p, 0x5a, len as usize);
        std::hint::black_box(p);
    }

    /// Forks the rest of a chain of `left` more processes and waits for it.
    ///
    /// # Safety
    /// Called in a process forked for the workload (it forks and exits).
    unsafe fn chain(left: u32) -> bool {
        if left == 0 {
            return true;
        }
        let pid = libc::fork();
        if pid < 0 {
            return false;
        }
        if pid == 0 {
            let ok = chain(left - 1);
            libc::_exit(if ok { 0 } else { 1 });
        }
        wait_ok(pid)
    }

    /// Waits for `pid`; whether it exited with status 0.
    fn wait_ok(pid: libc::pid_t) -> bool {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }

    /// The workload's timed part in nanoseconds, `u64::MAX` on failure: maps
    /// its region, writes it (but for a fill, whose writing is what is timed),
    /// then times the rest.
    ///
    /// # Safety
    /// Called in a process started for the workload ([`serve_if_asked`]): it
    /// forks and its children exit.
    unsafe fn workload(w: Workload) -> u64 {
        let len = w.len_bytes();
        let p = map_aligned(len);
        if p.is_null() {
            return u64::MAX;
        }
        if !matches!(w, Workload::Fill { .. }) {
            fill(p, len);
        }
        let t = now_ns();
        let ok = match w {
            Workload::Fill { .. } => {
                fill(p, len);
                true
            }
            Workload::ForkCow { .. } => {
                let pid = libc::fork();
                if pid == 0 {
                    let mut off = 0;
                    while off < len {
                        std::ptr::write_volatile(p.add(off as usize), 0x43);
                        off += HPAGE_BYTES;
                    }
                    libc::_exit(0);
                }
                pid > 0 && wait_ok(pid)
            }
            Workload::ForkChain { procs, .. } => chain(procs.saturating_sub(1)),
            Workload::MunmapOne { .. } => {
                let mid = p.add((len / 2 / PAGE_BYTES * PAGE_BYTES) as usize);
                libc::munmap(mid.cast(), PAGE_BYTES as usize) == 0
            }
        };
        let dt = now_ns() - t;
        if ok {
            dt
        } else {
            u64::MAX
        }
    }

    /// In a process started by [`KernelBench::run`] (the `thpsim` binary again,
    /// with [`WORKLOAD_ENV`] set): runs the workload, prints its time in
    /// nanoseconds and returns the exit code for `main` to exit with. `None` in
    /// every other process. `main` calls it first, before anything else runs.
    pub fn serve_if_asked() -> Option<u8> {
        let spec = std::env::var(WORKLOAD_ENV).ok()?;
        let Some(w) = Workload::decode(&spec) else {
            eprintln!("error: {WORKLOAD_ENV}=`{spec}` is not a benchmark workload");
            return Some(2);
        };
        // SAFETY: this process exists for the workload (single-threaded: main
        // calls this before anything else).
        let ns = unsafe { workload(w) };
        if ns == u64::MAX {
            eprintln!("error: the workload {w:?} failed (mmap, fork or munmap)");
            return Some(1);
        }
        println!("{ns}");
        Some(0)
    }

    /// Runs `w` in a new process and reads back its time. The process is this
    /// program started afresh (exec, not only fork): a fork of the benchmark
    /// itself would carry the model's memory into the workload's forks.
    fn in_child(w: Workload) -> Result<Duration, LiveError> {
        let exe = std::env::current_exe().map_err(|source| LiveError::Io {
            context: "finding this program to start a workload".into(),
            source,
        })?;
        let out = std::process::Command::new(exe)
            .env(WORKLOAD_ENV, w.encode())
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|source| LiveError::Io {
                context: format!("starting the benchmark process of {w:?}"),
                source,
            })?;
        let ns = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|_| out.status.success());
        match ns {
            Some(ns) => Ok(Duration::from_nanos(ns)),
            None => Err(LiveError::Io {
                context: format!("the benchmark process of {w:?}"),
                source: std::io::Error::other(format!("it ended with {}", out.status)),
            }),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The timed part of each workload, run in this (test) process's own
        /// forked child: no THP setting is changed, so it runs unprivileged.
        #[test]
        fn each_workload_runs_and_is_timed() {
            for w in [
                Workload::Fill { len_bytes: 4 << 20 },
                Workload::ForkCow { len_bytes: 4 << 20 },
                Workload::ForkChain {
                    procs: 3,
                    len_bytes: 2 << 20,
                },
                Workload::MunmapOne { len_bytes: 4 << 20 },
            ] {
                // SAFETY: the child runs the workload and exits.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0);
                if pid == 0 {
                    let ns = unsafe { workload(w) };
                    unsafe { libc::_exit(if ns == u64::MAX { 1 } else { 0 }) };
                }
                assert!(wait_ok(pid), "{w:?}");
            }
        }
    }
}

/// Where the live kernel cannot be benchmarked: the same calls, refused.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod os {
    use super::Workload;
    use crate::LiveError;
    use std::time::Duration;

    pub struct KernelBench;

    impl KernelBench {
        pub fn start(_thp_enabled: &str) -> Result<KernelBench, LiveError> {
            Err(crate::environment().unwrap_err())
        }

        pub fn run(&self, _w: Workload) -> Result<Duration, LiveError> {
            Err(crate::environment().unwrap_err())
        }
    }

    pub fn serve_if_asked() -> Option<u8> {
        None
    }
}

pub use os::{serve_if_asked, KernelBench};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_travels_in_its_variable() {
        for w in [
            Workload::Fill { len_bytes: 1 << 30 },
            Workload::ForkCow { len_bytes: 4096 },
            Workload::ForkChain {
                procs: 32,
                len_bytes: 64 << 20,
            },
            Workload::MunmapOne {
                len_bytes: 16 << 20,
            },
        ] {
            assert_eq!(Workload::decode(&w.encode()), Some(w));
        }
        assert_eq!(Workload::decode("fill"), None);
        assert_eq!(Workload::decode("fork-chain 99999999999 1"), None);
    }
}
