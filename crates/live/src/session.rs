//! The machine-wide state of a live run: THP sysfs knobs (and, for a
//! scenario that uses hugetlb, the 2 MiB hugetlb pool: `hugetlb`; for one
//! with a `swap` line, a swap device: `swap`) set for the run and always put
//! back, one run at a time, and cleanup on SIGINT/SIGTERM/SIGHUP.
//!
//! - One run at a time, across threads and processes: an exclusive `flock` on
//!   `/run/thpsim-live/lock`. The directory is made root's and closed to
//!   group and others (mode 0700), and refused if it is anything else (a
//!   symlink, another owner, writable by others): a run acts on what it finds
//!   there. Never under /tmp.
//! - Before changing a knob, the original values are written to
//!   `.../saved`, and before adding a swap device, the steps that remove it
//!   (`swap::Undo`: swapoff, zram reset and hot_remove, unlink of the swap
//!   file) to `.../saved-swap`; a run that was killed outright (SIGKILL,
//!   power loss) leaves those files behind and the next run, or
//!   [`restore_leftovers`] (`thpsim live restore`), undoes them first: only
//!   the knobs a run sets ([`known_knob`]) and the steps
//!   `swap::Undo::from_line` accepts; any other line is refused and reported.
//! - Signals and settings, one state machine (`STATE`): from the lock on,
//!   SIGINT, SIGTERM and SIGHUP go to [`on_signal`]. While a thread writes or
//!   restores settings (`BUSY`: [`Session::start`], [`Session::restore`]) the
//!   signals are blocked in that thread, so no system call of the restore is
//!   cut short (a swapoff interrupted by a signal gives up and leaves the
//!   device on), and a handler that runs on another thread only records the
//!   signal (`DEFERRED`): the busy thread raises it when it is done. While a
//!   run holds the machine (`ARMED`), the handler (async-signal-safe: kill,
//!   poll, waitpid, open, write, close, swapoff, unlink, sigaction, raise, all
//!   on data prepared beforehand) takes the restore over (`HANDLING`): it
//!   kills every agent, removes the swap device, restores the knobs, removes
//!   the saved files, and passes the signal on to the previous disposition
//!   (by default the process dies of it). A thread that comes to restore
//!   meanwhile waits for it (`HANDLED`) instead of restoring alongside:
//!   two restores at once race (one's unlink fails while the other's swapoff
//!   runs, and the process dies before either unlinks again). The run then
//!   fails with [`LiveError::Interrupted`] if the process survives.
//! - On every other exit path (success, error, panic) the [`Session`]'s Drop
//!   restores, `BUSY` as above.

use crate::swap::{self, SwapRequest, Undo};
use crate::LiveError;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, Ordering};
use thpsim_scenario::KhugepagedLimits;

pub const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// Agents to kill from the signal handler (pids and pidfds; 0 = free slot).
const MAX_AGENTS: usize = 1024;
static AGENTS: [AtomicI32; MAX_AGENTS] = [const { AtomicI32::new(0) }; MAX_AGENTS];
static AGENT_PIDFDS: [AtomicI32; MAX_AGENTS] = [const { AtomicI32::new(-1) }; MAX_AGENTS];
/// The keeper: the controller's only child, ancestor and reaper of all agents.
static KEEPER: AtomicI32 = AtomicI32::new(0);
/// The signal that interrupted the run (0 if none).
pub static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// Who may change the machine's settings now: `IDLE`, `ARMED`, `BUSY`,
/// `HANDLING` or `HANDLED` (see the module header).
static STATE: AtomicU8 = AtomicU8::new(IDLE);
/// No session holds the machine (or its settings are back).
const IDLE: u8 = 0;
/// A run holds the machine: a signal's handler restores it.
const ARMED: u8 = 1;
/// A thread writes or restores settings, with the signals blocked in it: a
/// signal handled on another thread is deferred until it is done.
const BUSY: u8 = 2;
/// A signal handler is restoring the machine.
const HANDLING: u8 = 3;
/// A signal handler has restored the machine (and passed its signal on).
const HANDLED: u8 = 4;
/// A signal that arrived while a thread was `BUSY`: raised by that thread
/// once it is done (0 if none).
static DEFERRED: AtomicI32 = AtomicI32::new(0);

/// One step of the signal handler's restore, prepared as C data.
enum Step {
    /// Write the bytes to the file.
    Write(CString, Vec<u8>),
    Swapoff(CString),
    Unlink(CString),
}

/// What the signal handler restores: prepared before the handler is installed.
struct Emergency {
    /// In the order to run them.
    steps: Vec<Step>,
    saved: CString,
    saved_swap: CString,
    old: Vec<(libc::c_int, libc::sigaction)>,
}

static EMERGENCY: AtomicPtr<Emergency> = AtomicPtr::new(std::ptr::null_mut());

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Registers the keeper for the signal handler (0: none).
pub fn set_keeper(pid: i32) {
    KEEPER.store(pid, Ordering::SeqCst);
}

/// Registers an agent for the signal handler.
pub fn register_agent(pid: i32, pidfd: i32) -> Result<(), LiveError> {
    for (i, slot) in AGENTS.iter().enumerate() {
        if slot
            .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            AGENT_PIDFDS[i].store(pidfd, Ordering::SeqCst);
            return Ok(());
        }
    }
    Err(LiveError::Environment(format!(
        "more than {MAX_AGENTS} live processes in one run"
    )))
}

/// Forgets an agent (it exited or was killed and reaped).
pub fn unregister_agent(pid: i32) {
    for (i, slot) in AGENTS.iter().enumerate() {
        if slot
            .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            AGENT_PIDFDS[i].store(-1, Ordering::SeqCst);
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
    // Kill the agents, wait (up to a second each) until they are gone (their
    // parents, agents or the keeper, reap them), then kill and reap the keeper.
    // SAFETY: kill, poll and waitpid are async-signal-safe.
    unsafe {
        for slot in AGENTS.iter() {
            let pid = slot.load(Ordering::SeqCst);
            if pid > 0 {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for (i, slot) in AGENTS.iter().enumerate() {
            let fd = AGENT_PIDFDS[i].load(Ordering::SeqCst);
            if slot.swap(0, Ordering::SeqCst) > 0 && fd >= 0 {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                libc::poll(&mut p, 1, 1000);
            }
        }
        let keeper = KEEPER.swap(0, Ordering::SeqCst);
        if keeper > 0 {
            libc::kill(keeper, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(keeper, &mut status, 0);
        }
    }
    loop {
        match STATE.compare_exchange(ARMED, HANDLING, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => break,
            Err(BUSY) => {
                // The busy thread raises it when done, unless it was done
                // before it could see it: then it is ours again.
                DEFERRED.store(sig, Ordering::SeqCst);
                if STATE.load(Ordering::SeqCst) == BUSY || DEFERRED.swap(0, Ordering::SeqCst) == 0 {
                    return;
                }
            }
            // Another thread's handler restores, and passes its signal on.
            Err(HANDLING) | Err(HANDLED) => return,
            Err(_) => {
                // No session: whoever owns the signal now gets it.
                // SAFETY: sigaction and raise are async-signal-safe.
                unsafe {
                    let mut cur: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(sig, std::ptr::null(), &mut cur);
                    if cur.sa_sigaction != on_signal as *const () as usize {
                        libc::raise(sig);
                    }
                }
                return;
            }
        }
    }
    let e = EMERGENCY.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: `e` was leaked by Session::start before it set ARMED, and is
    // freed only by a restore that took it back while BUSY (never while a
    // handler is HANDLING); the handler that takes it owns it (then leaks it).
    // Only async-signal-safe calls below.
    unsafe {
        if !e.is_null() {
            let e = &*e;
            for step in &e.steps {
                match step {
                    Step::Write(path, value) => {
                        let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                        if fd >= 0 {
                            libc::write(fd, value.as_ptr() as *const libc::c_void, value.len());
                            libc::close(fd);
                        }
                    }
                    Step::Swapoff(path) => {
                        libc::swapoff(path.as_ptr());
                    }
                    Step::Unlink(path) => {
                        libc::unlink(path.as_ptr());
                    }
                }
            }
            libc::unlink(e.saved_swap.as_ptr());
            libc::unlink(e.saved.as_ptr());
            for (s, old) in &e.old {
                libc::sigaction(*s, old, std::ptr::null_mut());
            }
        }
        STATE.store(HANDLED, Ordering::SeqCst);
        // Delivered to the previous disposition once this handler returns.
        libc::raise(sig);
    }
}

/// A thread's hold on the settings while it writes or restores them
/// (`BUSY`): the run's signals blocked in this thread, the handlers
/// installed, and what to put back when it is done.
struct Busy {
    /// This thread's signal mask before.
    mask: libc::sigset_t,
    /// The dispositions the handlers replaced (none replaced: empty).
    old: Vec<(libc::c_int, libc::sigaction)>,
    done: bool,
}

/// The run's signals as a set.
fn signal_set() -> libc::sigset_t {
    // SAFETY: initialising a sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

impl Busy {
    /// Blocks the run's signals in this thread.
    fn block() -> Busy {
        let set = signal_set();
        // SAFETY: changing this thread's signal mask.
        let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut mask) };
        Busy {
            mask,
            old: Vec::new(),
            done: false,
        }
    }

    /// Installs [`on_signal`] for each run signal that is not ignored,
    /// keeping the dispositions it replaces.
    fn install_handlers(&mut self) {
        for &sig in &SIGNALS {
            // SAFETY: querying a disposition.
            let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
            unsafe { libc::sigaction(sig, std::ptr::null(), &mut cur) };
            if cur.sa_sigaction != libc::SIG_IGN {
                self.old.push((sig, cur));
            }
        }
        for (sig, _) in &self.old {
            // SAFETY: installing a handler that only makes async-signal-safe calls.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_mask = signal_set();
                libc::sigaction(*sig, &sa, std::ptr::null_mut());
            }
        }
    }

    /// Puts the dispositions back (before the state leaves `BUSY`).
    fn uninstall_handlers(&self) {
        for (sig, old) in &self.old {
            // SAFETY: restoring a disposition saved by install_handlers().
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }

    /// Done: the state becomes `state`, this thread's mask is put back, and
    /// a deferred signal is raised (to the handler when `ARMED`, which then
    /// restores everything; to the previous disposition when `IDLE`).
    fn finish(mut self, state: u8) {
        self.release(Some(state));
    }

    /// Done without having changed the state: only the mask is put back.
    fn finish_mask_only(mut self) {
        self.release(None);
    }

    fn release(&mut self, state: Option<u8>) {
        self.done = true;
        if let Some(state) = state {
            STATE.store(state, Ordering::SeqCst);
        }
        // SAFETY: restoring this thread's mask; raising a signal.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.mask, std::ptr::null_mut());
            if state.is_some() {
                let sig = DEFERRED.swap(0, Ordering::SeqCst);
                if sig > 0 {
                    libc::raise(sig);
                }
            }
        }
    }
}

impl Drop for Busy {
    /// An early return of [`Session::start`]: nothing is left to restore
    /// (or the session's Drop has restored it): the handlers go, `IDLE`.
    fn drop(&mut self) {
        if !self.done {
            self.uninstall_handlers();
            self.release(Some(IDLE));
        }
    }
}

/// A knob and the value a run gives it.
#[derive(Clone, Debug)]
pub struct Knob {
    pub path: PathBuf,
    pub value: String,
}

/// The THP settings of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `enabled`: always | madvise | never.
    pub enabled: String,
    /// `use_zero_page`: true = 1.
    pub zero_page: bool,
    /// The scenario uses hugetlb: the free 2 MiB hugetlb pages it starts
    /// with (`hugetlb-pool`, 0 when absent). `None`: the hugetlb pool is
    /// left alone.
    pub hugetlb_pool: Option<u64>,
    /// khugepaged's `max_ptes_*` limits for the run
    /// (`Scenario::khugepaged_limits`: the header's `khugepaged` line, else
    /// the defaults, which are also 6.18's on x86_64: 511, 64, 256).
    pub khugepaged: KhugepagedLimits,
    /// The swap device the scenario runs with (`swap` line), or `None`: no
    /// device is added.
    pub swap: Option<SwapRequest>,
}

/// The knobs a run sets, in the order they are set (restored in reverse).
/// Knobs this kernel does not have are left out.
pub fn knobs(s: &Settings) -> Vec<Knob> {
    let thp = Path::new(THP);
    let mut out = Vec::new();
    let mut add = |rel: &str, value: &str| {
        let path = thp.join(rel);
        if path.exists() {
            out.push(Knob {
                path,
                value: value.to_string(),
            });
        }
    };
    // khugepaged first, so it is asleep before THPs can appear: sleep a day
    // between scans (and after allocation failures), one PMD a scan.
    // pages_to_scan and the limits first: writing a sleep knob wakes
    // khugepaged for one scan (sleep_store() -> wake_up_interruptible()),
    // which should then cover a single PMD under the run's limits.
    add("khugepaged/pages_to_scan", "1");
    let k = &s.khugepaged;
    add("khugepaged/max_ptes_none", &k.max_ptes_none.to_string());
    add("khugepaged/max_ptes_swap", &k.max_ptes_swap.to_string());
    add("khugepaged/max_ptes_shared", &k.max_ptes_shared.to_string());
    add("khugepaged/scan_sleep_millisecs", "86400000");
    add("khugepaged/alloc_sleep_millisecs", "86400000");
    // Linux >= 6.12: the deferred-split shrinker also splits "underused" THPs
    // (mostly zero-filled); 5.8 does not.
    add("shrink_underused", "0");
    // Linux >= 6.8 (mTHP): only PMD-size THPs, following the global policy.
    if let Ok(dir) = fs::read_dir(thp) {
        let mut sizes: Vec<_> = dir
            .filter_map(|d| d.ok())
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hugepages-") && n.ends_with("kB"))
            .collect();
        sizes.sort();
        for n in sizes {
            let v = if n == "hugepages-2048kB" {
                "inherit"
            } else {
                "never"
            };
            add(&format!("{n}/enabled"), v);
        }
    }
    // Direct compaction on every THP fault: a fault gets a huge page whenever
    // one can be made, as in the model, not only in madvised regions.
    add("defrag", "always");
    add("use_zero_page", if s.zero_page { "1" } else { "0" });
    add("enabled", &s.enabled);
    // hugetlb last: allocating the pool may compact memory, and nothing
    // should fault THPs meanwhile (THP knobs are already in place).
    if let Some(n) = s.hugetlb_pool {
        out.extend(crate::hugetlb::knobs(n));
    }
    out
}

/// The directory of the lock and the saved-state files.
const STATE_DIR: &str = "/run/thpsim-live";

/// [`STATE_DIR`], made (mode 0700) if it is not there, as long as it is a
/// real directory of root's that group and others cannot write; then closed
/// to group and others altogether (a directory of an earlier version was
/// 0755). A run writes sysfs files, swapoffs and unlinks as its saved files
/// say.
fn state_dir() -> Result<PathBuf, LiveError> {
    let d = PathBuf::from(STATE_DIR);
    let _ = fs::DirBuilder::new().mode(0o700).create(&d);
    let refuse = |why: String| {
        LiveError::Environment(format!(
            "no safe directory for the live runner's lock and saved settings: {} {why} (it \
             must be a directory of root's that group and others cannot write)",
            d.display()
        ))
    };
    let m = fs::symlink_metadata(&d).map_err(|e| refuse(format!(": {e}")))?;
    if !m.file_type().is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "is uid {}, mode {:o}{}",
            m.uid(),
            m.mode() & 0o7777,
            if m.file_type().is_dir() {
                ""
            } else {
                ", not a directory"
            }
        )));
    }
    if m.mode() & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
            .map_err(|e| refuse(format!(": making it 0700: {e}")))?;
    }
    Ok(d)
}

/// Whether `path` is a knob a run sets ([`knobs`]: THP's, khugepaged's, an
/// mTHP size's `enabled`, the 2 MiB hugetlb pool's): the only paths a
/// leftover restore writes.
pub fn known_knob(path: &Path) -> bool {
    const THP_KNOBS: [&str; 10] = [
        "khugepaged/pages_to_scan",
        "khugepaged/max_ptes_none",
        "khugepaged/max_ptes_swap",
        "khugepaged/max_ptes_shared",
        "khugepaged/scan_sleep_millisecs",
        "khugepaged/alloc_sleep_millisecs",
        "shrink_underused",
        "defrag",
        "use_zero_page",
        "enabled",
    ];
    let Some(s) = path.to_str() else {
        return false;
    };
    if let Some(rel) = s.strip_prefix(THP).and_then(|r| r.strip_prefix('/')) {
        if THP_KNOBS.contains(&rel) {
            return true;
        }
        // hugepages-<size>kB/enabled
        return rel
            .strip_prefix("hugepages-")
            .and_then(|r| r.strip_suffix("kB/enabled"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    }
    crate::hugetlb::knobs(0).iter().any(|k| k.path == path)
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LiveError {
    let context = context.into();
    move |source| LiveError::Io { context, source }
}

fn write_knob(path: &Path, value: &str) -> Result<(), LiveError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    f.write_all(value.as_bytes())
        .map_err(io_err(format!("writing `{value}` to {}", path.display())))
}

fn read_knob(path: &Path) -> Result<String, LiveError> {
    let s = fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
    Ok(crate::decode::sysfs_value(&s))
}

/// Restores the knobs listed in a saved-state file (`path\tvalue` lines).
fn restore_saved_file(saved: &Path) -> Result<Vec<String>, LiveError> {
    let text = match fs::read_to_string(saved) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("reading {}", saved.display()))(e)),
    };
    let mut restored = Vec::new();
    for line in text.lines().rev().filter(|l| !l.is_empty()) {
        match line.split_once('\t') {
            Some((p, v)) if known_knob(Path::new(p)) && !v.contains(['\t', '\n']) => {
                write_knob(Path::new(p), v)?;
                restored.push(format!("{p}={v}"));
            }
            _ => restored.push(format!(
                "ignored `{}`: not a knob the live runner sets",
                line.escape_default()
            )),
        }
    }
    fs::remove_file(saved).map_err(io_err(format!("removing {}", saved.display())))?;
    Ok(restored)
}

/// Undoes the swap steps listed in a saved-state file (`swap::Undo` lines,
/// undone last first) and removes the file. Lines that are not the runner's
/// own steps are left alone (and reported).
fn restore_saved_swap(saved: &Path) -> Result<Vec<String>, LiveError> {
    let text = match fs::read_to_string(saved) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("reading {}", saved.display()))(e)),
    };
    let mut done = Vec::new();
    for line in text.lines().rev().filter(|l| !l.is_empty()) {
        match Undo::from_line(line) {
            Ok(u) => match u.run() {
                Ok(()) => done.push(u.to_line().replace('\t', " ")),
                Err(e) if u.harmless(&e) => {}
                Err(e) => done.push(format!("{} failed: {e}", u.to_line().replace('\t', " "))),
            },
            Err(why) => done.push(format!("ignored: {why}")),
        }
    }
    fs::remove_file(saved).map_err(io_err(format!("removing {}", saved.display())))?;
    Ok(done)
}

/// Runs undo steps last first, reporting failures on stderr (the restore of
/// a run must go on).
fn undo_all(steps: &[Undo]) {
    for u in steps.iter().rev() {
        if let Err(e) = u.run() {
            if !u.harmless(&e) {
                eprintln!("thpsim-live: could not undo `{}`: {e}", u.to_line());
            }
        }
    }
}

/// Undoes what a killed run left in `dir` (its swap device, then its
/// knobs), with the lock held; says what it did.
fn restore_leftovers_locked(dir: &Path) -> Result<Vec<String>, LiveError> {
    let mut notes = Vec::new();
    let swap_leftovers = restore_saved_swap(&dir.join("saved-swap"))?;
    if !swap_leftovers.is_empty() {
        notes.push(format!(
            "removed the swap device left behind by an interrupted run: {}",
            swap_leftovers.join(", ")
        ));
    }
    let leftovers = restore_saved_file(&dir.join("saved"))?;
    if !leftovers.is_empty() {
        notes.push(format!(
            "restored THP and hugetlb settings left behind by an interrupted run: {}",
            leftovers.join(", ")
        ));
    }
    Ok(notes)
}

/// Takes the live runner's lock (waiting for a run in progress) and puts
/// back what a killed run left behind (`thpsim live restore`); says what
/// it did (nothing: empty).
///
/// # Signals
/// SIGINT, SIGTERM and SIGHUP are blocked in this thread while it restores
/// (they are delivered after, to their dispositions).
pub fn restore_leftovers() -> Result<Vec<String>, LiveError> {
    let dir = state_dir()?;
    let _lock = lock_state_dir(&dir)?;
    let busy = Busy::block();
    let notes = restore_leftovers_locked(&dir);
    busy.finish_mask_only();
    notes
}

/// An exclusive `flock` on `dir/lock` (held until the file is dropped).
fn lock_state_dir(dir: &Path) -> Result<fs::File, LiveError> {
    let lock_path = dir.join("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(format!("opening {}", lock_path.display())))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err(format!("locking {}", lock_path.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(lock)
}

/// A live run's hold on the machine. Drop restores everything.
pub struct Session {
    _lock: fs::File,
    saved: PathBuf,
    saved_swap: PathBuf,
    /// Original values, in the order they were set.
    original: Vec<(PathBuf, String)>,
    /// The swap device's undo steps, in the order of the changes.
    undo: Vec<Undo>,
    emergency: *mut Emergency,
    /// The signal dispositions the run's handlers replaced.
    old: Vec<(libc::c_int, libc::sigaction)>,
    /// What the session did, for the report.
    pub notes: Vec<String>,
    /// The run's swap device, when the scenario has one.
    pub swap: Option<crate::LiveSwap>,
}

impl Session {
    /// Takes the lock, installs the signal handlers, restores a crashed
    /// run's leftovers, saves the current knobs and applies `settings`.
    ///
    /// # Signals
    /// `BUSY` from the lock to the return (see the module header): a signal
    /// meanwhile is raised when the settings are in place (the handler then
    /// restores them) or, on an error, once they are back.
    pub fn start(settings: &Settings) -> Result<Session, LiveError> {
        let dir = state_dir()?;
        let lock = lock_state_dir(&dir)?;
        let mut busy = Busy::block();
        if STATE
            .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            busy.finish_mask_only();
            return Err(LiveError::Environment(
                "another live session of this process holds the machine".into(),
            ));
        }
        INTERRUPTED.store(0, Ordering::SeqCst);
        busy.install_handlers();
        let saved = dir.join("saved");
        let saved_swap = dir.join("saved-swap");
        let notes = restore_leftovers_locked(&dir)?;

        let knobs = knobs(settings);
        let mut original = Vec::new();
        for k in &knobs {
            original.push((k.path.clone(), read_knob(&k.path)?));
        }
        let mut text = String::new();
        for (p, v) in &original {
            text.push_str(&format!("{}\t{}\n", p.display(), v));
        }
        let tmp = dir.join("saved.tmp");
        fs::write(&tmp, text).map_err(io_err(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, &saved).map_err(io_err(format!("writing {}", saved.display())))?;

        // The swap device: made ready (a hot-added zram device exists from
        // here on), its undo steps saved before anything else changes.
        let host_swap = swap::active();
        let plan = match &settings.swap {
            Some(req) => {
                let plan = swap::prepare(req).map_err(|what| LiveError::Unsupported {
                    line: req.line,
                    what: format!("`swap`: {what}"),
                });
                match plan {
                    Ok(p) => Some((p, req.line)),
                    Err(e) => {
                        let _ = fs::remove_file(&saved);
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let undo = plan.as_ref().map(|(p, _)| p.undo()).unwrap_or_default();
        if !undo.is_empty() {
            let mut text = String::new();
            for u in &undo {
                text.push_str(&u.to_line());
                text.push('\n');
            }
            let tmp = dir.join("saved-swap.tmp");
            let written = fs::write(&tmp, text)
                .and_then(|()| fs::rename(&tmp, &saved_swap))
                .map_err(io_err(format!("writing {}", saved_swap.display())));
            if let Err(e) = written {
                undo_all(&undo);
                let _ = fs::remove_file(&saved);
                return Err(e);
            }
        }

        // What the signal handler restores, prepared now.
        let to_c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).ok();
        let swap_steps = undo.iter().rev().filter_map(|u| {
            Some(match u {
                Undo::Write { path, value } => Step::Write(to_c(path)?, value.clone().into()),
                Undo::Swapoff(p) => Step::Swapoff(to_c(p)?),
                Undo::Unlink(p) => Step::Unlink(to_c(p)?),
            })
        });
        let knob_steps = original
            .iter()
            .rev()
            .filter_map(|(p, v)| Some(Step::Write(to_c(p)?, v.clone().into_bytes())));
        let emergency = Box::into_raw(Box::new(Emergency {
            steps: swap_steps.chain(knob_steps).collect(),
            saved: to_c(&saved).unwrap_or_default(),
            saved_swap: to_c(&saved_swap).unwrap_or_default(),
            old: busy.old.clone(),
        }));
        EMERGENCY.store(emergency, Ordering::SeqCst);

        let session = Session {
            _lock: lock,
            saved,
            saved_swap,
            original,
            undo,
            emergency,
            old: busy.old.clone(),
            notes,
            swap: None,
        };
        for k in &knobs {
            write_knob(&k.path, &k.value)?;
        }
        let set = |under: &str| -> Vec<String> {
            knobs
                .iter()
                .filter_map(|k| {
                    let rel = k.path.strip_prefix(under).ok()?;
                    Some(format!("{}={}", rel.display(), k.value))
                })
                .collect()
        };
        let mut session = session;
        session.notes.push(format!(
            "THP settings for the run (restored afterwards): {}",
            set(THP).join(", ")
        ));
        let hugetlb = set(crate::hugetlb::HUGEPAGES_2M);
        if !hugetlb.is_empty() {
            session.notes.push(format!(
                "hugetlb settings for the run (restored afterwards): {}: {}",
                crate::hugetlb::HUGEPAGES_2M,
                hugetlb.join(", ")
            ));
        }
        if let Some((plan, line)) = plan {
            // On error the session (dropped) removes what was made.
            plan.activate().map_err(|what| LiveError::Unsupported {
                line,
                what: format!("`swap`: {what}"),
            })?;
            session.notes.append(&mut plan.notes.clone());
            session.notes.push(plan.describe());
            if !host_swap.is_empty() {
                session.notes.push(format!(
                    "this machine already had active swap, left alone: {} (the run's device \
                     has priority {}, so pages go to it first unless one of those has the \
                     same priority)",
                    host_swap.join(", "),
                    swap::PRIORITY
                ));
            }
            session.swap = Some(crate::LiveSwap {
                kind: plan.kind,
                path: plan.path.display().to_string(),
                bytes: plan.bytes,
                priority: swap::PRIORITY,
                host_swap: host_swap.clone(),
            });
        } else if !host_swap.is_empty() {
            session.notes.push(format!(
                "this machine has active swap ({}): a scenario without a `swap` line can still \
                 swap anonymous pages out there (MADV_PAGEOUT, reclaim)",
                host_swap.join(", ")
            ));
        }
        if fs::read_to_string("/sys/module/zswap/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
            && (session.swap.is_some() || !host_swap.is_empty())
        {
            session.notes.push(
                "zswap is enabled: swapped-out pages are compressed in memory first and reach \
                 the swap device only when zswap writes them back"
                    .into(),
            );
        }
        busy.finish(ARMED);
        Ok(session)
    }

    /// Puts everything back (idempotent).
    ///
    /// # Signals
    /// `BUSY` (the signals blocked in this thread) from `ARMED`, or within
    /// [`Session::start`]'s `BUSY` on its error path; a handler that is
    /// restoring (`HANDLING`) is waited for instead, and what it restored is
    /// not restored again.
    fn restore(&mut self) {
        let busy = Busy::block();
        match STATE.compare_exchange(ARMED, BUSY, Ordering::SeqCst, Ordering::SeqCst) {
            // BUSY: start() failed after building the session, on this thread.
            Ok(_) | Err(BUSY) => {}
            Err(HANDLING) | Err(HANDLED) => {
                // The handler restores everything, then passes its signal on
                // (by default the process dies of it before this returns).
                while STATE.load(Ordering::SeqCst) == HANDLING {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                self.undo.clear();
                self.original.clear();
                busy.finish(IDLE);
                return;
            }
            // Already restored.
            Err(_) => {
                busy.finish_mask_only();
                return;
            }
        }
        let e = EMERGENCY.swap(std::ptr::null_mut(), Ordering::SeqCst);
        undo_all(&self.undo);
        self.undo.clear();
        let _ = fs::remove_file(&self.saved_swap);
        for (p, v) in self.original.iter().rev() {
            if let Err(err) = write_knob(p, v) {
                eprintln!("thpsim-live: could not restore {}: {err}", p.display());
            }
        }
        let _ = fs::remove_file(&self.saved);
        self.original.clear();
        if !e.is_null() && e == self.emergency {
            // SAFETY: we took it back from the static while BUSY, so no
            // handler holds it (one that took it would have left HANDLING).
            drop(unsafe { Box::from_raw(e) });
        }
        // A deferred signal goes to the disposition the run found (by
        // default the process dies of it), now that the machine is back.
        for (sig, old) in &self.old {
            // SAFETY: restoring a disposition saved in start().
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        busy.finish(IDLE);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_runners_knobs_are_known() {
        let thp = Path::new(THP);
        for ok in [
            "enabled",
            "defrag",
            "khugepaged/max_ptes_none",
            "hugepages-64kB/enabled",
            "hugepages-2048kB/enabled",
        ] {
            assert!(known_knob(&thp.join(ok)), "{ok}");
        }
        for bad in [
            "/etc/passwd",
            "/sys/kernel/mm/transparent_hugepage/../../../../etc/passwd",
            "/sys/kernel/mm/transparent_hugepage/enabled/../../x",
            "/sys/kernel/mm/transparent_hugepage/hugepages-kB/enabled",
            "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/../enabled",
            "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag",
            "/tmp/enabled",
            "",
        ] {
            assert!(!known_knob(Path::new(bad)), "{bad}");
        }
        let pool = Path::new(crate::hugetlb::HUGEPAGES_2M);
        assert!(known_knob(&pool.join("nr_hugepages")));
        assert!(!known_knob(&pool.join("free_hugepages")));
    }

    /// A planted saved-state file (live, root): the line naming a file of
    /// its own is refused and named, the file is left as it was; the line
    /// naming a knob of the runner's is written (its current value, so the
    /// machine does not change); the saved file is removed.
    #[test]
    fn a_planted_saved_file_writes_only_the_runners_knobs() {
        if let Err(e) = crate::live_tests_enabled() {
            eprintln!("skipped: {e}");
            return;
        }
        let dir = state_dir().expect("state dir");
        let _lock = lock_state_dir(&dir).expect("lock");
        let target = std::env::temp_dir().join(format!("thpsim-planted-{}", std::process::id()));
        fs::write(&target, "untouched\n").expect("target");
        let knob = Path::new(THP).join("enabled");
        let current = read_knob(&knob).expect("enabled");
        let planted = dir.join(format!("planted-{}", std::process::id()));
        fs::write(
            &planted,
            format!(
                "{}\t{current}\n{}\tpwned\n",
                knob.display(),
                target.display()
            ),
        )
        .expect("plant");
        let done = restore_saved_file(&planted).expect("restore");
        assert_eq!(fs::read_to_string(&target).unwrap(), "untouched\n");
        assert!(
            done.iter()
                .any(|n| n.starts_with("ignored `") && n.contains("thpsim-planted")),
            "{done:?}"
        );
        assert!(
            done.contains(&format!("{}={current}", knob.display())),
            "{done:?}"
        );
        assert!(!planted.exists(), "the saved file is removed");
        assert_eq!(read_knob(&knob).unwrap(), current);
        let _ = fs::remove_file(&target);
    }
}
