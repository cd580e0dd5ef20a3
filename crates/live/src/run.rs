//! The controller: interprets a scenario on the live kernel, one agent per
//! scenario process, with the same semantics as the model's runner
//! (crates/thpsim/src/run.rs) so that records compare one to one by line.

use crate::agent::{self, NO_EXPECT};
use crate::hugetlb::{self, HPAGE};
use crate::observe::{Observer, PageObs, ProcFiles, PAGE};
use crate::pins::{self, DeviceFile, LivePin};
use crate::session::{self, Session, Settings, INTERRUPTED};
use crate::swap::SwapRequest;
use crate::vmstat::{Allowed, Snapshot};
use crate::{LiveError, LiveOptions, LiveRecord, LiveReport};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use thpsim_scenario::{
    Advice, Backing, Context, Expectation, Feature, Geometry, Item, Name, Op, Outcome, PageKind,
    Protection, Scenario, Selector, Show, Span, Step, Target, ThpPolicy, UnitSizes,
};

const SPLIT_HUGE_PAGES: &str = "/sys/kernel/debug/split_huge_pages";
/// MADV_COLLAPSE (Linux >= 6.1, include/uapi/asm-generic/mman-common.h).
const MADV_COLLAPSE: i32 = 25;
const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";
/// How long an agent may take for one step.
const STEP_TIMEOUT_MS: i32 = 300_000;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LiveError {
    let context = context.into();
    move |source| LiveError::Io { context, source }
}

fn last_err(context: impl Into<String>) -> LiveError {
    io_err(context)(io::Error::last_os_error())
}

/// Why a scenario cannot run live, found before anything is changed.
fn preflight(scn: &Scenario) -> Result<Vec<String>, LiveError> {
    let mut notes = Vec::new();
    let unsupported = |span: Span, what: String| LiveError::Unsupported {
        line: span.line,
        what,
    };
    if let Some(g) = &scn.header.geometry {
        if g.value != Geometry::X86_64 {
            return Err(unsupported(
                g.span,
                format!(
                    "geometry `{}`: the live kernel has the x86_64 geometry only",
                    g.value
                ),
            ));
        }
    }
    for (f, span) in scn.features() {
        if f == Feature::Nodes {
            // The scenario's machine has more nodes than one: this one must
            // have them too.
            let (want, live) = (scn.header.nodes(), crate::migrate::online_nodes());
            if want > live {
                return Err(unsupported(
                    span,
                    format!(
                        "`nodes {want}`: this machine has {live} NUMA node{}",
                        if live == 1 { "" } else { "s" }
                    ),
                ));
            }
            continue;
        }
        if f == Feature::Hugetlb {
            hugetlb::available().map_err(|why| unsupported(span, why))?;
            continue;
        }
        if f == Feature::Swap {
            crate::swap::available().map_err(|why| unsupported(span, why))?;
            continue;
        }
        if f == Feature::Kernel316 {
            return Err(unsupported(
                span,
                "`kernel 3.16` is not supported by the live runner: the live kernel runs the \
                 5.8+ THP design (PTE-mapped THPs, PMD splits without page splits), so a 3.16 \
                 scenario has nothing to compare with; `thpsim run` and `thpsim explore` run it \
                 on the model"
                    .into(),
            ));
        }
        if f == Feature::KhugepagedLimits {
            return Err(unsupported(
                span,
                "`khugepaged max_ptes_...` is not supported by the live runner: its `kernel: \
                 khugepaged` is MADV_COLLAPSE, which ignores these limits (a run writes the \
                 kernel's defaults, 511/64/256, to sysfs for khugepaged itself)"
                    .into(),
            ));
        }
        if !matches!(
            f,
            Feature::Core
                | Feature::Pin
                | Feature::PinFast
                | Feature::PinReadOnly
                | Feature::Device
                | Feature::Mlock
                | Feature::MovePages
                | Feature::MovePagesAll
                | Feature::Hugetlb
                | Feature::Memfd
                | Feature::Reclaim
                | Feature::Khugepaged
                | Feature::Collapse
                | Feature::Pageout
                | Feature::Free
        ) {
            return Err(unsupported(
                span,
                format!("`{f}` is not supported by the live runner yet"),
            ));
        }
    }
    if let Some(m) = &scn.header.memory {
        notes.push(format!(
            "`memory` (line {}) applies to the model only; the live kernel has the machine's memory",
            m.span.line
        ));
    }
    if !scn.header.reverts.is_empty() {
        notes.push(
            "`revert` lines apply to the model only: the live kernel runs with its fixes".into(),
        );
    }
    let mut split = None;
    let mut deferred = None;
    let mut first_pin = None;
    let mut first_swap_out = None;
    for step in scn.steps() {
        match &step.op {
            Op::Mmap { .. } | Op::Memfd { .. } => {}
            Op::Madvise { advice, .. } => match advice.value {
                Advice::Hugepage | Advice::Nohugepage | Advice::Dontneed | Advice::Free => {}
                Advice::Pageout => {
                    first_swap_out.get_or_insert(step.span);
                }
                Advice::Collapse => notes.push(format!(
                    "line {}: `madvise ... collapse` is MADV_COLLAPSE (Linux >= 6.1), and its \
                     outcome is the kernel's (EAGAIN reported as ebusy); 5.8 has no \
                     MADV_COLLAPSE and fails it with EINVAL (a declared divergence)",
                    step.span.line
                )),
            },
            Op::Reclaim { .. } => {
                first_swap_out.get_or_insert(step.span);
                notes.push(format!(
                    "line {}: `kernel: reclaim` runs as MADV_PAGEOUT issued by the process's \
                     own agent over the range (outcome ok; an errno is noted): it reclaims \
                     only pages that process alone maps (6.x and 5.8 skip shared pages in \
                     MADV_PAGEOUT), where the kernel's reclaim would unmap them everywhere",
                    step.span.line
                ));
            }
            Op::Khugepaged { .. } => notes.push(format!(
                "line {}: `kernel: khugepaged` runs as MADV_COLLAPSE issued by the process's own \
                 agent over the range (outcome ok; an errno is noted): a declared divergence \
                 of mechanism, since MADV_COLLAPSE ignores khugepaged's max_ptes_none, \
                 max_ptes_swap and max_ptes_shared limits (and 5.8 has no MADV_COLLAPSE)",
                step.span.line
            )),
            Op::SplitHugePage { .. } => {
                split.get_or_insert(step.span);
            }
            Op::DeferredSplit => {
                deferred.get_or_insert(step.span);
            }
            Op::Pin { write, fast, .. } => {
                first_pin.get_or_insert(step.span);
                if !*write {
                    notes.push(format!(
                        "line {}: a read-only pin runs as io_uring's buffer registration, which \
                         pins with FOLL_WRITE|FOLL_LONGTERM (docs/CONFORMANCE.md D11)",
                        step.span.line
                    ));
                }
                if *fast {
                    notes.push(format!(
                        "line {}: `fast` changes nothing live: io_uring always pins with \
                         pin_user_pages_fast()",
                        step.span.line
                    ));
                }
            }
            Op::MovePages { node, .. } => {
                let live = crate::migrate::online_nodes();
                if node.value >= live {
                    return Err(unsupported(
                        node.span,
                        format!(
                            "move-pages to node {}: this machine has {live} NUMA node{}",
                            node.value,
                            if live == 1 { "" } else { "s" }
                        ),
                    ));
                }
            }
            Op::Fork { .. }
            | Op::Exit
            | Op::Munmap { .. }
            | Op::Mprotect { .. }
            | Op::Write { .. }
            | Op::Read { .. }
            | Op::Unpin { .. }
            | Op::DeviceWrite { .. }
            | Op::DeviceRead { .. }
            | Op::Mlock { .. }
            | Op::Munlock { .. } => {}
            other => {
                return Err(unsupported(
                    step.op_span,
                    format!(
                        "`{}` is not supported by the live runner yet",
                        other.keyword()
                    ),
                ))
            }
        }
    }
    if let Some(span) = first_pin {
        pins::available().map_err(|why| unsupported(span, why))?;
    }
    if let (Some(span), None) = (first_swap_out, &scn.header.swap) {
        notes.push(format!(
            "line {}: pages out without a `swap` line: the run adds no swap device, so \
             anonymous pages stay in memory unless this machine has swap of its own",
            span.line
        ));
    }
    if let Some(span) = split {
        check_writable(SPLIT_HUGE_PAGES).map_err(|why| {
            unsupported(
                span,
                format!("`kernel: split-huge-page` needs {SPLIT_HUGE_PAGES}: {why}"),
            )
        })?;
    }
    if let Some(span) = deferred {
        check_writable(DROP_CACHES).map_err(|why| {
            unsupported(
                span,
                format!("`kernel: deferred-split` runs the shrinkers through {DROP_CACHES}: {why}"),
            )
        })?;
    }
    Ok(notes)
}

/// Opens a file for writing (without writing) to see whether a step could.
fn check_writable(path: &str) -> Result<(), String> {
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(if path.starts_with("/sys/kernel/debug") {
                "missing (debugfs not mounted at /sys/kernel/debug, or a kernel without CONFIG_DEBUG_FS / CONFIG_TRANSPARENT_HUGEPAGE)".into()
            } else {
                "missing".into()
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
                .map(|s| format!(" (lockdown: {})", s.trim()))
                .unwrap_or_default();
            Err(format!(
                "not permitted: debugfs access is restricted by kernel lockdown{lockdown}"
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A scenario process: its agent and its regions.
struct Proc {
    pid: i32,
    sock: OwnedFd,
    pidfd: OwnedFd,
    /// The keeper (the controller's child, reaped with waitpid).
    keeper: bool,
    /// Creation order (children are killed before their parents).
    seq: u64,
    regions: BTreeMap<String, (u64, u64)>,
    alive: bool,
}

static NEXT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An agent's reply.
enum Reply {
    /// `extra`: for a read, 1 + the offset of the first byte that differs
    /// from the asserted value (0 if none). Not in the records yet (the
    /// Step record carries the first byte only).
    Ok {
        value: u64,
        #[allow(dead_code)]
        extra: u64,
    },
    Errno(i32),
    Signal(i32),
}

fn socketpair() -> Result<(OwnedFd, OwnedFd), LiveError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(last_err("socketpair"));
    }
    // SAFETY: both were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, LiveError> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(last_err(format!("pidfd_open({pid})")));
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Proc {
    fn send(&self, req: [u64; 4], pass: Option<RawFd>) -> Result<(), LiveError> {
        // SAFETY: msghdr built over live buffers; cmsg buffer sized for one fd.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: req.as_ptr() as *mut libc::c_void,
                iov_len: size_of::<[u64; 4]>(),
            };
            let mut msg: libc::msghdr = zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            let mut cbuf = [0u64; 8];
            if let Some(fd) = pass {
                let space = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
                msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
                *(libc::CMSG_DATA(c) as *mut RawFd) = fd;
            }
            if libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
                return Err(last_err(format!("sending to agent {}", self.pid)));
            }
        }
        Ok(())
    }

    fn recv(&self) -> Result<Reply, LiveError> {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, STEP_TIMEOUT_MS) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted && INTERRUPTED.load(Ordering::SeqCst) == 0
                {
                    continue;
                }
                return Err(interrupted_or(io_err(format!(
                    "waiting for agent {}",
                    self.pid
                ))(e)));
            }
            if n == 0 {
                return Err(LiveError::Io {
                    context: format!("agent {}", self.pid),
                    source: io::Error::new(io::ErrorKind::TimedOut, "no reply within 300 s"),
                });
            }
            if fds[0].revents & libc::POLLIN == 0 {
                return Err(interrupted_or(LiveError::Io {
                    context: format!("agent {}", self.pid),
                    source: io::Error::new(io::ErrorKind::BrokenPipe, "the agent died"),
                }));
            }
            let mut r = [0u64; 4];
            // SAFETY: reading into a local buffer.
            let got = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    r.as_mut_ptr() as *mut libc::c_void,
                    size_of::<[u64; 4]>(),
                    0,
                )
            };
            if got != size_of::<[u64; 4]>() as isize {
                return Err(interrupted_or(LiveError::Io {
                    context: format!("agent {}", self.pid),
                    source: io::Error::new(io::ErrorKind::BrokenPipe, "short reply"),
                }));
            }
            return Ok(match r[0] {
                agent::REPLY_OK => Reply::Ok {
                    value: r[2],
                    extra: r[3],
                },
                agent::REPLY_ERRNO => Reply::Errno(r[1] as i32),
                _ => Reply::Signal(r[1] as i32),
            });
        }
    }

    fn call(&self, req: [u64; 4]) -> Result<Reply, LiveError> {
        self.send(req, None)?;
        self.recv()
    }

    /// Waits until the agent has exited (its mm is gone), reaping it if it is
    /// our child.
    fn wait_exit(&self) -> Result<(), LiveError> {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, STEP_TIMEOUT_MS) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                if INTERRUPTED.load(Ordering::SeqCst) != 0 {
                    return Err(interrupted_or(last_err("waiting for an agent")));
                }
                continue;
            }
            if n <= 0 {
                return Err(last_err(format!("waiting for agent {} to exit", self.pid)));
            }
            break;
        }
        if self.keeper {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
            session::set_keeper(0);
        } else {
            session::unregister_agent(self.pid);
        }
        Ok(())
    }

    fn kill(&mut self) {
        if !self.alive {
            return;
        }
        // SAFETY: signalling through our pidfd (no pid reuse race).
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        let _ = self.wait_exit();
        self.alive = false;
    }
}

/// A Ctrl-C turns whatever failed into `Interrupted`.
fn interrupted_or(e: LiveError) -> LiveError {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => e,
        sig => LiveError::Interrupted(sig),
    }
}

fn errno_outcome(line: usize, what: &str, e: i32) -> Result<Outcome, LiveError> {
    match e {
        libc::EINVAL | libc::EACCES => Ok(Outcome::Einval),
        libc::ENOMEM => Ok(Outcome::Enomem),
        libc::EBUSY => Ok(Outcome::Ebusy),
        libc::EFAULT => Ok(Outcome::Efault),
        _ => Err(LiveError::Failed {
            line,
            what: format!(
                "{what} failed with {} (not an outcome of the scenario language)",
                io::Error::from_raw_os_error(e)
            ),
        }),
    }
}

fn signal_outcome(sig: i32) -> Outcome {
    if sig == libc::SIGBUS {
        Outcome::Sigbus
    } else {
        Outcome::Segv
    }
}

/// The state of a live run.
struct Runner<'a> {
    scn: &'a Scenario,
    keeper: Proc,
    units: UnitSizes,
    procs: BTreeMap<String, Proc>,
    obs: Observer,
    labels: HashMap<u64, usize>,
    records: Vec<LiveRecord>,
    /// The event counters when last looked at.
    last: Snapshot,
    /// Background events seen during the run (see `vmstat`).
    interference: Vec<String>,
    /// The pins held, by name (see `pins`): the controller's, so they
    /// outlive their process.
    pins: HashMap<String, LivePin>,
    /// The device's file, made at the first `device:` step.
    device: Option<DeviceFile>,
    /// The scenario's files (`memfd`), by name: the controller's, so that
    /// any process can map them (see `hugetlb`).
    files: HashMap<String, OwnedFd>,
    /// The shmem ones among them (`memfd F SIZE` without `hugetlb`).
    shmem_files: HashSet<String>,
    /// What the steps did that the records do not say (errnos of kernel
    /// steps, swap and collapse counters), for the report's notes.
    notes: Vec<String>,
}

/// The PMD-aligned 2 MiB blocks that `[s, e)` holds whole: what
/// MADV_COLLAPSE works on (madvise_collapse(): hstart rounded up, hend down).
fn whole_pmds(s: u64, e: u64) -> u64 {
    let hs = s.next_multiple_of(HPAGE);
    let he = e & !(HPAGE - 1);
    he.saturating_sub(hs) / HPAGE
}

/// What a step may do to the event counters itself (see `vmstat`).
fn allowed(step: &Step, range: Option<(u64, u64)>) -> Allowed {
    let collapses = range.map_or(0, |(s, e)| whole_pmds(s, e));
    match (&step.context, &step.op) {
        (Context::Kernel, Op::SplitHugePage { .. } | Op::DeferredSplit) => Allowed {
            splits: true,
            ..Allowed::default()
        },
        (Context::Kernel, Op::Reclaim { .. }) => Allowed {
            splits: true,
            swap_out: true,
            ..Allowed::default()
        },
        (Context::Kernel, Op::Khugepaged { .. }) => Allowed {
            collapses,
            ..Allowed::default()
        },
        (Context::Process(_), Op::Madvise { advice, .. }) => match advice.value {
            // A THP partly in the range is split (madvise_cold_or_pageout_pte_range(),
            // madvise_free_pte_range()), and one that cannot get a 2 MiB
            // cluster of swap is split to be swapped out.
            Advice::Pageout => Allowed {
                splits: true,
                swap_out: true,
                ..Allowed::default()
            },
            Advice::Free => Allowed {
                splits: true,
                ..Allowed::default()
            },
            Advice::Collapse => Allowed {
                collapses,
                ..Allowed::default()
            },
            _ => Allowed::default(),
        },
        _ => Allowed::default(),
    }
}

impl<'a> Runner<'a> {
    fn label(&mut self, pfn: u64) -> String {
        let n = self.labels.len() + 1;
        format!("#{}", self.labels.entry(pfn).or_insert(n))
    }

    fn invalid(&self, span: Span, message: impl Into<String>) -> LiveError {
        LiveError::Invalid {
            line: span.line,
            message: message.into(),
        }
    }

    fn proc(&self, name: &Name) -> Result<&Proc, LiveError> {
        match self.procs.get(&name.text) {
            Some(p) if p.alive => Ok(p),
            Some(_) => Err(self.invalid(name.span, format!("process `{}` has exited", name.text))),
            None => Err(self.invalid(name.span, format!("process `{}` does not exist", name.text))),
        }
    }

    fn resolve(&self, q: &thpsim_scenario::Quantity) -> Result<u64, LiveError> {
        q.resolve(&self.units).map_err(|e| LiveError::Invalid {
            line: q.span.line,
            message: e.to_string(),
        })
    }

    /// `[start, end)` of a target in a process's address space (as the model).
    fn range(&self, process: &str, t: &Target) -> Result<(u64, u64), LiveError> {
        let region = self
            .procs
            .get(process)
            .and_then(|p| p.regions.get(&t.region.text).copied());
        let Some((start, len)) = region else {
            return Err(self.invalid(
                t.region.span,
                format!("region `{}` is not mapped in this process", t.region.text),
            ));
        };
        let (s, e) = self.selector(t, len)?;
        Ok((start + s, start + e))
    }

    /// `[start, end)` of a target's selector, as offsets in something of
    /// `len` bytes (a region, or a pin for `device:` steps).
    fn selector(&self, t: &Target, len: u64) -> Result<(u64, u64), LiveError> {
        let (s, e) = match &t.selector {
            Selector::At(q) => {
                let off = self.resolve(q)?;
                (off, off + 1)
            }
            Selector::Range { start: s, end: e } => {
                let s = s
                    .as_ref()
                    .map(|q| self.resolve(q))
                    .transpose()?
                    .unwrap_or(0);
                let e = e
                    .as_ref()
                    .map(|q| self.resolve(q))
                    .transpose()?
                    .unwrap_or(len);
                (s, e)
            }
        };
        if s >= e {
            return Err(self.invalid(
                t.selector_span,
                format!(
                    "empty range {}: the end must be after the start",
                    t.selector
                ),
            ));
        }
        if e > len {
            return Err(self.invalid(
                t.selector_span,
                format!(
                    "{} reaches past the end of `{}` ({} bytes)",
                    t.selector, t.region.text, len
                ),
            ));
        }
        Ok((s, e))
    }

    /// The pin a `device:` step names and the step's range in it.
    fn device_target(&mut self, t: &Target) -> Result<(u64, u64), LiveError> {
        let name = &t.region.text;
        let Some(len) = self.pins.get(name).map(|p| p.len) else {
            return Err(self.invalid(
                t.region.span,
                format!("pin `{name}` is not held: its `pin` step did not succeed"),
            ));
        };
        let r = self.selector(t, len)?;
        if self.device.is_none() {
            self.device = Some(DeviceFile::new()?);
        }
        Ok(r)
    }

    /// Forks the keeper from this process: an agent that maps nothing, forks
    /// every scenario process's agent (`process P`), and, as a child
    /// subreaper that ignores SIGCHLD, reaps every agent whose parent is gone
    /// (otherwise an orphan would depend on init to reap it).
    fn spawn_keeper() -> Result<Proc, LiveError> {
        let (ours, theirs) = socketpair()?;
        let theirs_raw = theirs.as_raw_fd();
        // Signals stay blocked across the fork until the agent has reset the
        // controller's handlers (see agent_main).
        // SAFETY: sigset operations on local sets; the child runs only
        // async-signal-safe code (agent_main) and never returns.
        let pid = unsafe {
            let mut all: libc::sigset_t = zeroed();
            let mut old: libc::sigset_t = zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::fork();
            if pid == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
                agent::register_with_khugepaged();
                agent::agent_main(theirs_raw)
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            pid
        };
        if pid < 0 {
            return Err(last_err("fork"));
        }
        drop(theirs);
        session::set_keeper(pid);
        let p = Proc {
            pid,
            sock: ours,
            pidfd: pidfd_open(pid)?,
            keeper: true,
            seq: 0,
            regions: BTreeMap::new(),
            alive: true,
        };
        hello(&p)?;
        Ok(p)
    }

    /// Makes `parent`'s agent fork; the child gets a channel of its own and
    /// `regions`. `Ok(Err(errno))` when fork() failed.
    fn fork_from(
        parent: &Proc,
        regions: BTreeMap<String, (u64, u64)>,
    ) -> Result<Result<Proc, i32>, LiveError> {
        let (ours, theirs) = socketpair()?;
        parent.send([agent::OP_FORK, 0, 0, 0], Some(theirs.as_raw_fd()))?;
        let r = parent.recv()?;
        drop(theirs);
        let pid = match r {
            Reply::Ok { value, .. } => value as i32,
            Reply::Errno(e) => return Ok(Err(e)),
            Reply::Signal(_) => {
                return Err(LiveError::Io {
                    context: format!("agent {}", parent.pid),
                    source: io::Error::new(io::ErrorKind::InvalidData, "bad fork reply"),
                })
            }
        };
        let pidfd = pidfd_open(pid)?;
        session::register_agent(pid, pidfd.as_raw_fd())?;
        let c = Proc {
            pid,
            sock: ours,
            pidfd,
            keeper: false,
            seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
            regions,
            alive: true,
        };
        hello(&c)?;
        Ok(Ok(c))
    }

    /// `process P`: a fresh agent, forked by the keeper.
    fn spawn(&mut self, name: &str) -> Result<(), LiveError> {
        match Self::fork_from(&self.keeper, BTreeMap::new())? {
            Ok(p) => {
                self.procs.insert(name.to_string(), p);
                Ok(())
            }
            Err(e) => Err(LiveError::Io {
                context: format!("creating process `{name}`"),
                source: io::Error::from_raw_os_error(e),
            }),
        }
    }

    fn run_items(&mut self) -> Result<(), LiveError> {
        for item in &self.scn.items {
            if let sig @ 1.. = INTERRUPTED.load(Ordering::SeqCst) {
                return Err(LiveError::Interrupted(sig));
            }
            match item {
                Item::Process(p) => self.spawn(&p.value.text)?,
                Item::Step(step) => self.step(step)?,
                Item::Together(t) => {
                    // The model's fixed interleaving: round robin, one step
                    // of each thread at a time.
                    let longest = t.threads.iter().map(|th| th.steps.len()).max().unwrap_or(0);
                    for round in 0..longest {
                        for th in &t.threads {
                            if let Some(step) = th.steps.get(round) {
                                self.step(step)?;
                            }
                        }
                    }
                }
                Item::Expect(x) => self.expect(x)?,
                Item::Show(s) => self.show(s)?,
            }
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), LiveError> {
        // The range a collapse works on, resolved before the step (an
        // invalid one fails in exec() as it would anyway).
        let range = match (&step.context, &step.op) {
            (Context::Process(p), Op::Madvise { target, .. }) => self.range(&p.text, target).ok(),
            (Context::Kernel, Op::Khugepaged { process, target }) => {
                self.range(&process.text, target).ok()
            }
            _ => None,
        };
        let before = Snapshot::now();
        self.watch(
            step.span.line,
            "before the step",
            &before,
            Allowed::default(),
        );
        let (outcome, value) = self.exec(step)?;
        let after = Snapshot::now();
        let allowed = allowed(step, range);
        self.watch(step.span.line, "during the step", &after, allowed);
        let moved = before.activity(&after);
        let swap_step = allowed.swap_out || allowed.collapses > 0;
        if !moved.is_empty() && (swap_step || after.pswpin > before.pswpin) {
            self.notes.push(format!(
                "line {} (`{}`): {}",
                step.span.line,
                self.scn.text(step.span),
                moved.join(", ")
            ));
        }
        self.records.push(LiveRecord::Step {
            line: step.span.line,
            text: self.scn.text(step.span).to_string(),
            outcome,
            value,
        });
        Ok(())
    }

    /// Records the background events since the last snapshot (see
    /// `vmstat`) and moves the snapshot on to `now`.
    fn watch(&mut self, line: usize, when: &str, now: &Snapshot, allowed: Allowed) {
        for what in self.last.interference(now, allowed) {
            self.interference
                .push(format!("line {line}, {when}: {what}"));
        }
        self.last = *now;
    }

    fn exec(&mut self, step: &Step) -> Result<(Outcome, Option<u8>), LiveError> {
        let line = step.span.line;
        let ok = Ok((Outcome::Ok, None));
        match (&step.context, &step.op) {
            (Context::Process(pn), op) => {
                let name = pn.text.clone();
                let p = self.proc(pn)?;
                match op {
                    Op::Fork { child } => match Self::fork_from(p, p.regions.clone())? {
                        Ok(c) => {
                            self.procs.insert(child.text.clone(), c);
                            ok
                        }
                        Err(e) => Ok((errno_outcome(line, "fork", e)?, None)),
                    },
                    Op::Exit => {
                        p.send([agent::OP_EXIT, 0, 0, 0], None)?;
                        p.wait_exit()?;
                        if let Some(p) = self.procs.get_mut(&name) {
                            p.alive = false;
                        }
                        ok
                    }
                    Op::Mmap {
                        region,
                        size,
                        backing,
                        shared,
                    } => {
                        let len = self.resolve(size)?;
                        if len == 0 {
                            return Ok((Outcome::Einval, None));
                        }
                        let share = if *shared {
                            libc::MAP_SHARED
                        } else {
                            libc::MAP_PRIVATE
                        };
                        // hugetlb: the length rounded up to the huge page
                        // size, as ksys_mmap_pgoff() rounds it (every file is
                        // a hugetlbfs one: preflight refuses shmem files).
                        let huge = |len: u64| {
                            len.checked_next_multiple_of(HPAGE)
                                .ok_or_else(|| self.invalid(size.span, "size too large"))
                        };
                        let (len, req, fd) = match &backing.value {
                            Backing::Anon if *shared => {
                                // shmem_zero_setup(): placed as anonymous
                                // memory is (PMD-aligned), as the model does.
                                let len = len.div_ceil(PAGE) * PAGE;
                                let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
                                (len, [agent::OP_MMAP, len, flags as u64, HPAGE], None)
                            }
                            Backing::Anon => {
                                let len = len.div_ceil(PAGE) * PAGE;
                                (len, [agent::OP_MMAP, len, 0, 0], None)
                            }
                            Backing::Hugetlb => {
                                let len = huge(len)?;
                                let flags = share | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB;
                                let align = hugetlb::alignment(len);
                                (len, [agent::OP_MMAP, len, flags as u64, align], None)
                            }
                            Backing::File(f) => {
                                let Some(fd) = self.files.get(&f.text) else {
                                    return Err(self.invalid(
                                        f.span,
                                        format!(
                                            "file `{f}` does not exist: its `memfd` step did \
                                             not succeed"
                                        ),
                                    ));
                                };
                                // A hugetlb file's length is rounded up to
                                // the huge page size (ksys_mmap_pgoff()), a
                                // shmem file's to a page.
                                let len = if self.shmem_files.contains(&f.text) {
                                    len.div_ceil(PAGE) * PAGE
                                } else {
                                    huge(len)?
                                };
                                let align = hugetlb::alignment(len);
                                let req = [agent::OP_MMAP, len, share as u64, align];
                                (len, req, Some(fd.as_raw_fd()))
                            }
                        };
                        p.send(req, fd)?;
                        match p.recv()? {
                            Reply::Ok { value, .. } => {
                                if let Some(p) = self.procs.get_mut(&name) {
                                    p.regions.insert(region.text.clone(), (value, len));
                                }
                                ok
                            }
                            Reply::Errno(e) => Ok((errno_outcome(line, "mmap", e)?, None)),
                            Reply::Signal(_) => unreachable_reply(line),
                        }
                    }
                    Op::Memfd {
                        file,
                        size,
                        hugetlb,
                    } => {
                        // Made by the controller, which keeps it for every
                        // process (see `hugetlb`): sized to a huge page
                        // (hugetlb) or a page (shmem).
                        let unit = if *hugetlb { HPAGE } else { PAGE };
                        let len = self
                            .resolve(size)?
                            .checked_next_multiple_of(unit)
                            .ok_or_else(|| self.invalid(size.span, "size too large"))?;
                        match hugetlb::memfd(&file.text, len, *hugetlb) {
                            Ok(fd) => {
                                self.files.insert(file.text.clone(), fd);
                                if !*hugetlb {
                                    self.shmem_files.insert(file.text.clone());
                                }
                                ok
                            }
                            Err(e) => Ok((
                                errno_outcome(
                                    line,
                                    "memfd_create(MFD_HUGETLB) + ftruncate",
                                    e.raw_os_error().unwrap_or(libc::EIO),
                                )?,
                                None,
                            )),
                        }
                    }
                    Op::Munmap { target } => {
                        let (s, e) = self.range(&name, target)?;
                        self.syscall(line, "munmap", &name, [agent::OP_MUNMAP, s, e - s, 0])
                    }
                    Op::Mprotect { target, prot } => {
                        let (s, e) = self.range(&name, target)?;
                        let prot = match prot.value {
                            Protection::R => libc::PROT_READ,
                            Protection::Rw => libc::PROT_READ | libc::PROT_WRITE,
                            Protection::None => libc::PROT_NONE,
                        };
                        self.syscall(
                            line,
                            "mprotect",
                            &name,
                            [agent::OP_MPROTECT, s, e - s, prot as u64],
                        )
                    }
                    Op::Madvise { target, advice } => {
                        let (s, e) = self.range(&name, target)?;
                        let adv = match advice.value {
                            Advice::Hugepage => libc::MADV_HUGEPAGE,
                            Advice::Nohugepage => libc::MADV_NOHUGEPAGE,
                            Advice::Dontneed => libc::MADV_DONTNEED,
                            Advice::Pageout => libc::MADV_PAGEOUT,
                            Advice::Free => libc::MADV_FREE,
                            Advice::Collapse => MADV_COLLAPSE,
                        };
                        let req = [agent::OP_MADVISE, s, e - s, adv as u64];
                        if advice.value == Advice::Collapse {
                            // MADV_COLLAPSE's EAGAIN (a page that could not
                            // be locked or isolated just now) has no outcome
                            // of its own in the language.
                            let p = &self.procs[&name];
                            return match p.call(req)? {
                                Reply::Ok { .. } => ok,
                                Reply::Errno(libc::EAGAIN) => {
                                    self.notes.push(format!(
                                        "line {line}: MADV_COLLAPSE failed with EAGAIN \
                                         (reported as ebusy)"
                                    ));
                                    Ok((Outcome::Ebusy, None))
                                }
                                Reply::Errno(e) => {
                                    Ok((errno_outcome(line, "madvise(MADV_COLLAPSE)", e)?, None))
                                }
                                Reply::Signal(_) => unreachable_reply(line),
                            };
                        }
                        self.syscall(line, "madvise", &name, req)
                    }
                    Op::Write { target, value } => {
                        let (s, e) = self.range(&name, target)?;
                        let p = self.proc(pn)?;
                        match p.call([agent::OP_FILL, s, e - s, value.value as u64])? {
                            Reply::Ok { .. } => ok,
                            Reply::Signal(sig) => Ok((signal_outcome(sig), None)),
                            Reply::Errno(_) => unreachable_reply(line),
                        }
                    }
                    Op::Read { target, expect } => {
                        let (s, e) = self.range(&name, target)?;
                        let want = expect.as_ref().map_or(NO_EXPECT, |x| x.value as u64);
                        let p = self.proc(pn)?;
                        match p.call([agent::OP_READ, s, e - s, want])? {
                            Reply::Ok { value, extra: _ } => Ok((Outcome::Ok, Some(value as u8))),
                            Reply::Signal(sig) => Ok((signal_outcome(sig), None)),
                            Reply::Errno(_) => unreachable_reply(line),
                        }
                    }
                    Op::Pin { pin, target, .. } => {
                        let (s, e) = self.range(&name, target)?;
                        let ring = pins::new_ring()
                            .map_err(|what| LiveError::Unsupported { line, what })?;
                        let me = pidfd_open(std::process::id() as i32)?;
                        let p = self.proc(pn)?;
                        let req = [agent::OP_PIN, s, e - s, ring.as_raw_fd() as u64];
                        p.send(req, Some(me.as_raw_fd()))?;
                        match p.recv()? {
                            Reply::Ok { .. } => {
                                self.pins
                                    .insert(pin.text.clone(), LivePin::new(ring, s, e - s));
                                ok
                            }
                            Reply::Errno(e) => Ok((
                                errno_outcome(line, "io_uring buffer registration", e)?,
                                None,
                            )),
                            // pidfd_getfd() of the controller's ring failed.
                            Reply::Signal(e) => Err(LiveError::Failed {
                                line,
                                what: format!(
                                    "the agent could not take the controller's io_uring fd \
                                     (pidfd_getfd: {})",
                                    io::Error::from_raw_os_error(e)
                                ),
                            }),
                        }
                    }
                    Op::Unpin { pin } => {
                        // A pin whose `pin` step failed holds nothing (as the
                        // model: nothing to unpin).
                        if let Some(held) = self.pins.remove(&pin.text) {
                            held.unpin().map_err(|e| LiveError::Failed {
                                line,
                                what: format!("IORING_UNREGISTER_BUFFERS failed: {e}"),
                            })?;
                        }
                        ok
                    }
                    Op::Mlock { target } => {
                        let (s, e) = self.range(&name, target)?;
                        self.syscall(line, "mlock", &name, [agent::OP_MLOCK, s, e - s, 0])
                    }
                    Op::Munlock { target } => {
                        let (s, e) = self.range(&name, target)?;
                        self.syscall(line, "munlock", &name, [agent::OP_MUNLOCK, s, e - s, 0])
                    }
                    Op::MovePages { target, node, all } => {
                        // The call succeeds when some pages stay (its return
                        // counts them), as on the model.
                        let (s, e) = self.range(&name, target)?;
                        let c = u64::from(node.value) | u64::from(*all) << 32;
                        self.syscall(
                            line,
                            "move_pages",
                            &name,
                            [agent::OP_MOVE_PAGES, s, e - s, c],
                        )
                    }
                    other => Err(LiveError::Unsupported {
                        line,
                        what: format!(
                            "`{}` is not supported by the live runner yet",
                            other.keyword()
                        ),
                    }),
                }
            }
            (Context::Device, Op::DeviceWrite { target, value }) => {
                let (s, e) = self.device_target(target)?;
                let (Some(pin), Some(dev)) = (self.pins.get_mut(&target.region.text), &self.device)
                else {
                    return unreachable_reply(line);
                };
                pin.device_write(dev, s, e, value.value)
                    .map_err(|e| LiveError::Failed {
                        line,
                        what: format!("the device's IORING_OP_READ_FIXED failed: {e}"),
                    })?;
                ok
            }
            (Context::Device, Op::DeviceRead { target, .. }) => {
                let (s, e) = self.device_target(target)?;
                let (Some(pin), Some(dev)) = (self.pins.get_mut(&target.region.text), &self.device)
                else {
                    return unreachable_reply(line);
                };
                let first = pin.device_read(dev, s, e).map_err(|e| LiveError::Failed {
                    line,
                    what: format!("the device's IORING_OP_WRITE_FIXED failed: {e}"),
                })?;
                Ok((Outcome::Ok, Some(first)))
            }
            (Context::Kernel, Op::SplitHugePage { process, target }) => {
                // As the model: the debugfs write succeeds whether or not the
                // THP could be split; `expect` shows the result.
                let pid = self.proc(process)?.pid;
                let (s, _) = self.range(&process.text, target)?;
                let page = s & !(PAGE - 1);
                let cmd = format!("{pid},{page:#x},{:#x}", page + PAGE);
                write_file(SPLIT_HUGE_PAGES, &cmd).map_err(|e| {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        LiveError::Unsupported {
                            line,
                            what: format!(
                                "{SPLIT_HUGE_PAGES}: debugfs access is restricted by kernel lockdown"
                            ),
                        }
                    } else {
                        io_err(format!("writing `{cmd}` to {SPLIT_HUGE_PAGES}"))(e)
                    }
                })?;
                ok
            }
            (Context::Kernel, Op::Reclaim { process, target }) => {
                // MADV_PAGEOUT from inside the process (see preflight's note).
                self.kernel_madvise(line, process, target, libc::MADV_PAGEOUT, "MADV_PAGEOUT")
            }
            (Context::Kernel, Op::Khugepaged { process, target }) => {
                // MADV_COLLAPSE from inside the process: a synchronous
                // collapse of every PMD-aligned 2 MiB the range holds.
                self.kernel_madvise(line, process, target, MADV_COLLAPSE, "MADV_COLLAPSE")
            }
            (Context::Kernel, Op::DeferredSplit) => {
                // drop_caches=2 runs drop_slab(): shrink_slab() over every
                // memcg and node at priority 0, which includes the
                // deferred-split shrinker (a SHRINKER_NONSLAB shrinker), and
                // frees reclaimable slab (dentries, inodes) but not the page
                // cache.
                write_file(DROP_CACHES, "2")
                    .map_err(io_err(format!("writing 2 to {DROP_CACHES}")))?;
                ok
            }
            (_, op) => Err(LiveError::Unsupported {
                line,
                what: format!("`{}` is not supported by the live runner yet", op.keyword()),
            }),
        }
    }

    /// A `kernel:` step done as a madvise of the process's own agent: the
    /// outcome is ok whatever the call returns (work the kernel does on its
    /// own has no errno), and an errno goes to the notes.
    fn kernel_madvise(
        &mut self,
        line: usize,
        process: &Name,
        target: &Target,
        advice: i32,
        what: &str,
    ) -> Result<(Outcome, Option<u8>), LiveError> {
        let (s, e) = self.range(&process.text, target)?;
        let p = self.proc(process)?;
        match p.call([agent::OP_MADVISE, s, e - s, advice as u64])? {
            Reply::Ok { .. } => {}
            Reply::Errno(err) => self.notes.push(format!(
                "line {line}: {what} over {:#x}..{:#x} failed with {} (the step's outcome is \
                 ok, as for all kernel work)",
                s,
                e,
                io::Error::from_raw_os_error(err)
            )),
            Reply::Signal(_) => return unreachable_reply(line),
        }
        Ok((Outcome::Ok, None))
    }

    fn syscall(
        &self,
        line: usize,
        what: &str,
        name: &str,
        req: [u64; 4],
    ) -> Result<(Outcome, Option<u8>), LiveError> {
        let p = &self.procs[name];
        match p.call(req)? {
            Reply::Ok { .. } => Ok((Outcome::Ok, None)),
            Reply::Errno(e) => Ok((errno_outcome(line, what, e)?, None)),
            Reply::Signal(_) => unreachable_reply(line),
        }
    }

    fn observe(&mut self, process: &Name, t: &Target) -> Result<PageObs, LiveError> {
        let pid = self.proc(process)?.pid;
        let (s, _) = self.range(&process.text, t)?;
        let mut pf = ProcFiles::open(pid)?;
        self.obs.page(&mut pf, s)
    }

    fn expect(&mut self, x: &thpsim_scenario::Expect) -> Result<(), LiveError> {
        let info = self.observe(&x.process, &x.target)?;
        let (ok, found) = match &x.what {
            Expectation::Kind(k) if k.value == PageKind::Mlocked => {
                // As the model: the VMA is VM_LOCKED and the page (a THP's
                // head) is PageMlocked.
                let pid = self.proc(&x.process)?.pid;
                let (addr, _) = self.range(&x.process.text, &x.target)?;
                let vma_locked = ProcFiles::open(pid)?.vm_locked(addr)?;
                let page_locked = match info.head.or(info.pfn) {
                    Some(f) => self.obs.frame_mlocked(f)?,
                    None => false,
                };
                if vma_locked && page_locked {
                    (true, "mlocked".to_string())
                } else {
                    (false, format!("{}, not mlocked", info.kind.keyword()))
                }
            }
            Expectation::Kind(k) => {
                let kind = info.kind.keyword();
                (kind == k.value.keyword(), kind.to_string())
            }
            Expectation::Mapcount(n) => (
                info.mapcount == n.value as i64,
                format!("mapcount {}", info.mapcount),
            ),
            Expectation::Node(n) => (
                info.node == Some(n.value),
                format!("node {}", info.node.map_or("-".into(), |n| n.to_string())),
            ),
            Expectation::Same { process, target } | Expectation::Other { process, target } => {
                let other = self.observe(process, target)?;
                let same = info.pfn.is_some() && info.pfn == other.pfn;
                let want_same = matches!(x.what, Expectation::Same { .. });
                let a = match info.head.or(info.pfn) {
                    Some(f) => self.label(f),
                    None => "nothing".to_string(),
                };
                let b = match other.head.or(other.pfn) {
                    Some(f) => self.label(f),
                    None => "nothing".to_string(),
                };
                (same == want_same, format!("{a} and {b}"))
            }
        };
        self.records.push(LiveRecord::Expect {
            line: x.span.line,
            text: self.scn.text(x.span).to_string(),
            ok,
            found,
        });
        Ok(())
    }

    fn show(&mut self, s: &Show) -> Result<(), LiveError> {
        let pid = self.proc(&s.process)?.pid;
        let (start, end) = self.range(&s.process.text, &s.target)?;
        let region_start = self.procs[&s.process.text].regions[&s.target.region.text].0;
        let mut pf = ProcFiles::open(pid)?;
        let mut a = start & !(PAGE - 1);
        while a < end {
            let info = self.obs.page(&mut pf, a)?;
            let page = match info.kind {
                crate::decode::Kind::None | crate::decode::Kind::Zero => None,
                _ => info.head.or(info.pfn).map(|f| self.label(f)),
            };
            let subpage = match (info.head, info.pfn) {
                (Some(h), Some(f)) => Some(f - h),
                _ => None,
            };
            self.records.push(LiveRecord::Page {
                line: s.span.line,
                process: s.process.text.clone(),
                region: s.target.region.text.clone(),
                offset: (a - region_start) / PAGE,
                kind: info.kind.keyword().to_string(),
                page,
                subpage,
                mapcount: info.mapcount,
                value: info.value,
            });
            a += PAGE;
        }
        Ok(())
    }

    /// Kills every agent still alive, children before parents, then the
    /// keeper; waits until each is gone.
    fn shutdown(&mut self) {
        let mut order: Vec<&mut Proc> = self.procs.values_mut().collect();
        order.sort_by_key(|p| std::cmp::Reverse(p.seq));
        for p in order {
            p.kill();
        }
        self.keeper.kill();
        // Release the pinned and file pages now, so that the session can
        // shrink the hugetlb pool back (unregistering unpins at once; a
        // closed ring would unpin later, in its deferred teardown).
        for (_, pin) in self.pins.drain() {
            let _ = pin.unpin();
        }
        self.files.clear();
    }
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn hello(p: &Proc) -> Result<(), LiveError> {
    match p.call([agent::OP_HELLO, 0, 0, 0])? {
        Reply::Ok { value, .. } if value == p.pid as u64 => Ok(()),
        _ => Err(LiveError::Io {
            context: format!("agent {}", p.pid),
            source: io::Error::new(io::ErrorKind::InvalidData, "bad hello"),
        }),
    }
}

fn unreachable_reply<T>(line: usize) -> Result<T, LiveError> {
    Err(LiveError::Failed {
        line,
        what: "the agent sent a reply that does not fit the request".into(),
    })
}

fn write_file(path: &str, s: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(s.as_bytes())
}

fn kernel_release() -> String {
    // SAFETY: uname fills the struct.
    unsafe {
        let mut u: libc::utsname = zeroed();
        if libc::uname(&mut u) != 0 {
            return String::from("unknown");
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// How long a run waits, after setting the knobs and starting the keeper,
/// before it takes the first event-counter snapshot (see `vmstat`).
const SETTLE_MS: u64 = 30;

/// See [`crate::run_live_with`].
pub fn run_live(scn: &Scenario, opts: &LiveOptions) -> Result<LiveReport, LiveError> {
    crate::environment()?;
    let mut notes = preflight(scn)?;
    let khugepaged =
        scn.khugepaged_limits(Some(Geometry::X86_64))
            .map_err(|e| LiveError::Invalid {
                line: scn.header.khugepaged.as_ref().map_or(1, |k| k.span.line),
                message: e.to_string(),
            })?;
    let swap = match scn.header.swap() {
        Some(q) => Some(SwapRequest {
            bytes: q
                .resolve(&UnitSizes::X86_64)
                .map_err(|e| LiveError::Invalid {
                    line: q.span.line,
                    message: e.to_string(),
                })?,
            prefer: opts.swap,
            line: q.span.line,
        }),
        None => None,
    };
    // The first line that needs hugetlb (the pool line, or a step).
    let hugetlb_use = scn
        .features()
        .into_iter()
        .find(|(f, _)| *f == Feature::Hugetlb)
        .map(|(_, span)| span);
    let settings = Settings {
        enabled: scn
            .header
            .thp
            .as_ref()
            .map_or(ThpPolicy::Always, |t| t.value)
            .keyword()
            .to_string(),
        zero_page: scn
            .header
            .zero_page
            .as_ref()
            .map(|z| z.value)
            .unwrap_or(true),
        hugetlb_pool: hugetlb_use.map(|_| scn.header.hugetlb_pool()),
        khugepaged,
        swap,
    };
    let obs = Observer::new()?;
    if obs.pagemap_scan {
        notes.push("thp-pmd vs thp-pte: PAGEMAP_SCAN (PAGE_IS_HUGE)".into());
    } else {
        notes.push(
            "this kernel has no PAGEMAP_SCAN (Linux < 6.7, or THPSIM_LIVE_NO_PAGEMAP_SCAN set): \
             thp-pmd vs thp-pte comes from smaps AnonHugePages, exact unless a VMA holds both \
             PMD-mapped THPs and whole, in-order PTE-mapped ones"
                .into(),
        );
    }
    if !obs.swap_types_exact && settings.swap.is_some() {
        notes.push(format!(
            "this kernel's configuration is unreadable (/boot/config-*, /proc/config.gz): swap \
             entries of types below {} read as `swap`, the others as `migration`",
            obs.swap_types.max_swapfiles
        ));
    }
    let mut session = Session::start(&settings)?;
    notes.append(&mut session.notes);
    let swap_device = session.swap.clone();
    if let (Some(want), Some(span)) = (settings.hugetlb_pool, hugetlb_use) {
        // On error the session (dropped) restores the pool.
        let pool = hugetlb::settle_pool(want).map_err(|what| LiveError::Unsupported {
            line: span.line,
            what,
        })?;
        notes.push(format!(
            "hugetlb pool at the start: {pool} ({want} free for the scenario)"
        ));
    }
    let keeper = Runner::spawn_keeper()?;
    // Let the scans our own setting changes and the keeper's registration
    // woke khugepaged for (one PMD each) finish before counting events.
    std::thread::sleep(std::time::Duration::from_millis(SETTLE_MS));
    let mut runner = Runner {
        scn,
        keeper,
        units: UnitSizes::X86_64,
        procs: BTreeMap::new(),
        obs,
        labels: HashMap::new(),
        records: Vec::new(),
        last: Snapshot::now(),
        interference: Vec::new(),
        pins: HashMap::new(),
        device: None,
        files: HashMap::new(),
        shmem_files: HashSet::new(),
        notes: Vec::new(),
    };
    let result = runner.run_items();
    let end = Snapshot::now();
    let last_line = runner.scn.source.lines().count();
    runner.watch(last_line, "after the last step", &end, Allowed::default());
    let interference = std::mem::take(&mut runner.interference);
    notes.append(&mut runner.notes);
    runner.shutdown();
    let records = std::mem::take(&mut runner.records);
    drop(runner);
    drop(session);
    result.map_err(interrupted_or)?;
    if let sig @ 1.. = INTERRUPTED.load(Ordering::SeqCst) {
        return Err(LiveError::Interrupted(sig));
    }
    Ok(LiveReport {
        kernel: kernel_release(),
        notes,
        records,
        interference,
        swap: swap_device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The later language features are refused before anything is touched
    /// (preflight only reads the scenario for these).
    #[test]
    fn later_language_features_are_unsupported_in_preflight() {
        let p = "process P\nP: mmap A 1h\n";
        for (src, line) in [
            (format!("khugepaged max_ptes_none=0\n{p}"), 1),
            (format!("{p}P: mirror M = A[..]\nmirror: read M[0]\n"), 3),
        ] {
            let scn = thpsim_scenario::parse("t.thp", &src).expect("valid");
            match preflight(&scn) {
                Err(LiveError::Unsupported { line: l, what }) => {
                    assert_eq!(l, line, "{src}: {what}");
                    assert!(what.contains("not supported"), "{what}");
                }
                other => panic!("{src}: {other:?}"),
            }
        }
        let scn = thpsim_scenario::parse("t.thp", "kernel 3.16\nprocess P\n").expect("valid");
        match preflight(&scn) {
            Err(LiveError::Unsupported { line: 1, what }) => {
                assert!(what.contains("5.8+ THP design"), "{what}");
            }
            other => panic!("kernel 3.16: {other:?}"),
        }
        let scn = thpsim_scenario::parse("t.thp", &format!("kernel 5.8\n{p}")).expect("valid");
        assert!(preflight(&scn).is_ok());
    }

    /// hugetlb mappings and files pass preflight where this kernel has
    /// 2 MiB hugetlb pages; shmem files and shared anonymous memory pass.
    #[test]
    fn hugetlb_and_shmem_pass_preflight() {
        let src = "hugetlb-pool 2\nprocess P\nP: mmap A 1h hugetlb\nP: mmap B 1h hugetlb shared\n\
                   P: memfd F 1h hugetlb\nP: mmap C 1h file=F shared\nexpect P A[0] hugetlb\n";
        let scn = thpsim_scenario::parse("t.thp", src).expect("valid");
        match (preflight(&scn), hugetlb::available()) {
            (Ok(_), Ok(())) => {}
            (Err(LiveError::Unsupported { line: 1, what }), Err(why)) => assert_eq!(what, why),
            (got, avail) => panic!("{got:?} with hugetlb {avail:?}"),
        }
        for src in [
            "process P\nP: memfd F 1h\nP: mmap A 1h file=F shared\n",
            "process P\nP: mmap A 1h shared\n",
        ] {
            let scn = thpsim_scenario::parse("t.thp", src).expect("valid");
            assert!(preflight(&scn).is_ok(), "{src}");
        }
    }

    /// The swap constructs pass preflight, with a note for each line whose
    /// live mechanism differs from the model's (MADV_PAGEOUT for reclaim,
    /// MADV_COLLAPSE for khugepaged and for `madvise ... collapse`).
    #[test]
    fn swap_constructs_pass_preflight_with_notes() {
        let src = "swap 64m\nprocess P\nP: mmap A 1h\nP: madvise A[..] pageout\n\
                   P: madvise A[..] free\nP: madvise A[..] collapse => einval\n\
                   kernel: reclaim P A[..]\nkernel: khugepaged P A[..]\nexpect P A[0] swap\n";
        let scn = thpsim_scenario::parse("t.thp", src).expect("valid");
        let notes = preflight(&scn).expect("swap runs live");
        for (line, what) in [
            (6, "5.8 has no MADV_COLLAPSE"),
            (7, "MADV_PAGEOUT"),
            (8, "ignores khugepaged's max_ptes_none"),
        ] {
            assert!(
                notes
                    .iter()
                    .any(|n| n.starts_with(&format!("line {line}:")) && n.contains(what)),
                "line {line}: {notes:?}"
            );
        }
        assert!(!notes.iter().any(|n| n.contains("without a `swap` line")));
        // Without a `swap` line, paging out is noted as having nowhere to go.
        let scn = thpsim_scenario::parse(
            "t.thp",
            "process P\nP: mmap A 1h\nkernel: reclaim P A[..]\n",
        )
        .expect("valid");
        let notes = preflight(&scn).expect("runs live");
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("line 3: pages out without a `swap` line")),
            "{notes:?}"
        );
    }

    #[test]
    fn collapses_are_counted_per_whole_pmd() {
        assert_eq!(whole_pmds(0, HPAGE), 1);
        assert_eq!(whole_pmds(0, 2 * HPAGE), 2);
        assert_eq!(whole_pmds(PAGE, 2 * HPAGE), 1);
        assert_eq!(whole_pmds(0, HPAGE - PAGE), 0);
        assert_eq!(whole_pmds(HPAGE, HPAGE + 4 * PAGE), 0);
        assert_eq!(whole_pmds(HPAGE - PAGE, 3 * HPAGE + PAGE), 2);
    }

    /// Pins, device steps and mlock pass preflight where io_uring works; where
    /// it does not, the first pin's line is named with the reason.
    #[test]
    fn pins_pass_preflight_or_name_the_io_uring_problem() {
        let src = "process P\nP: mmap A 1h\nP: mlock A[..]\nexpect P A[0] mlocked\n\
                   P: pin R = A[..]\nP: pin S = A[..] write fast\ndevice: write R[0] = 1\n\
                   device: read S[0] == 1\nP: unpin R\nP: munlock A[..]\n";
        let scn = thpsim_scenario::parse("t.thp", src).expect("valid");
        match (preflight(&scn), pins::available()) {
            (Ok(notes), Ok(())) => {
                assert!(
                    notes
                        .iter()
                        .any(|n| n.contains("line 5") && n.contains("FOLL_WRITE")),
                    "{notes:?}"
                );
                assert!(
                    notes
                        .iter()
                        .any(|n| n.contains("line 6") && n.contains("fast")),
                    "{notes:?}"
                );
            }
            (Err(LiveError::Unsupported { line: 5, what }), Err(why)) => assert_eq!(what, why),
            (got, avail) => panic!("{got:?} with io_uring {avail:?}"),
        }
    }
}
