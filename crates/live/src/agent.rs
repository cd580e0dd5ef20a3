//! The agent: one real process per scenario process, driven by the controller.
//!
//! An agent is a fork of the controller (the first process of a scenario) or
//! of another agent (`P: fork C`). Because the controller may have other
//! threads, the agent runs only async-signal-safe code after the fork: raw
//! libc calls, fixed-size messages on the stack, no allocation, no locks.
//!
//! Protocol: a `SOCK_SEQPACKET` Unix socket per agent. A request is four u64
//! (`op`, three arguments); `fork` also carries the child's socket as
//! SCM_RIGHTS. A reply is four u64 (`kind`, `code`, `value`, `extra`): kind 0 =
//! success, 1 = the syscall failed with errno `code`, 2 = the access raised
//! signal `code`. `exit` has no reply: the controller watches the agent's pidfd.
//! An agent exits when its socket reaches end-of-file (the controller is gone).
//! `pin` carries the controller's pidfd: the agent takes a copy of the
//! controller's io_uring fd with pidfd_getfd(), registers its own memory
//! there (io_uring_register(2), which pins the calling process's pages) and
//! closes its copies, so the ring, and with it the pin, belongs to the
//! controller (see `crate::pins`).
//!
//! Memory accesses are real user accesses. A fault is caught soundly without
//! setjmp: the only instructions that touch scenario memory are two
//! hand-written ones (`rep stosb` for writes, `movzx` for reads, in
//! `global_asm!` below). The SIGSEGV/SIGBUS handler checks that the faulting
//! instruction is one of them, and if so resumes after it with the signal
//! number in a register, so the access returns an error. Any other fault
//! restores the default action and kills the agent (a bug, reported by the
//! controller as a dead agent).

use libc::{c_int, c_void};
use std::mem::{size_of, zeroed};
use std::ptr::{addr_of, null_mut};

pub const OP_HELLO: u64 = 0;
/// `mmap`: `a` bytes. `b` 0: private anonymous memory, PMD-aligned; else
/// `b` is the mmap flags (MAP_SHARED or MAP_PRIVATE, MAP_ANONYMOUS,
/// MAP_HUGETLB) and `c` the alignment, and a file mapping's fd comes with the
/// request (SCM_RIGHTS; mapped at offset 0, then closed). The reply's third
/// word is the address.
pub const OP_MMAP: u64 = 1;
pub const OP_MUNMAP: u64 = 2;
pub const OP_MPROTECT: u64 = 3;
/// `madvise`: advice `c` over `[a, a + b)`; MADV_PAGEOUT and MADV_FREE come
/// after [`drain_lru_batches`].
pub const OP_MADVISE: u64 = 4;
pub const OP_FILL: u64 = 5;
pub const OP_READ: u64 = 6;
pub const OP_FORK: u64 = 7;
pub const OP_EXIT: u64 = 8;
/// `pin`: register `[a, a + b)` as buffer 0 of the controller's io_uring
/// instance with fd number `c` in the controller, whose pidfd comes with the
/// request (SCM_RIGHTS; an io_uring fd itself cannot be sent over a socket,
/// so the agent takes a copy with pidfd_getfd()); the agent closes its copies.
pub const OP_PIN: u64 = 9;
pub const OP_MLOCK: u64 = 10;
pub const OP_MUNLOCK: u64 = 11;
/// `move-pages`: move_pages(2) of every 4 KiB page of `[a, a + b)` to node
/// `c & 0xffff_ffff`, with MPOL_MF_MOVE_ALL if bit 32 of `c` is set, else
/// MPOL_MF_MOVE. The reply's third word is the call's return (the pages not
/// migrated).
pub const OP_MOVE_PAGES: u64 = 12;

/// `IORING_REGISTER_BUFFERS` (include/uapi/linux/io_uring.h).
const IORING_REGISTER_BUFFERS: u32 = 0;

pub const REPLY_OK: u64 = 0;
pub const REPLY_ERRNO: u64 = 1;
pub const REPLY_SIGNAL: u64 = 2;

/// `OP_READ`'s third argument when the step asserts no value.
pub const NO_EXPECT: u64 = u64::MAX;

const PMD: u64 = 2 << 20;
const PAGE: u64 = 4096;

/// The fd every agent keeps its channel on.
const CHAN_FD: c_int = 3;

std::arch::global_asm!(
    ".pushsection .text.thpsim_live_probe,\"ax\",@progbits",
    ".p2align 4",
    // u32 thpsim_live_fill(u8 *dst /* rdi */, usize len /* rsi */, u32 byte /* edx */)
    // Returns 0, or the signal the store raised.
    ".globl thpsim_live_fill",
    ".hidden thpsim_live_fill",
    ".type thpsim_live_fill,@function",
    "thpsim_live_fill:",
    "    mov eax, edx",
    "    mov rcx, rsi",
    "    xor edx, edx",
    ".globl thpsim_live_fill_insn",
    ".hidden thpsim_live_fill_insn",
    "thpsim_live_fill_insn:",
    "    rep stosb",
    ".globl thpsim_live_fill_resume",
    ".hidden thpsim_live_fill_resume",
    "thpsim_live_fill_resume:",
    "    mov eax, edx",
    "    ret",
    ".p2align 4",
    // u32 thpsim_live_load(const u8 *src /* rdi */)
    // Returns the byte, or (signal << 8) if the load faulted.
    ".globl thpsim_live_load",
    ".hidden thpsim_live_load",
    ".type thpsim_live_load,@function",
    "thpsim_live_load:",
    "    xor edx, edx",
    ".globl thpsim_live_load_insn",
    ".hidden thpsim_live_load_insn",
    "thpsim_live_load_insn:",
    "    movzx eax, byte ptr [rdi]",
    ".globl thpsim_live_load_resume",
    ".hidden thpsim_live_load_resume",
    "thpsim_live_load_resume:",
    "    shl edx, 8",
    "    or eax, edx",
    "    ret",
    ".popsection",
);

extern "C" {
    fn thpsim_live_fill(dst: *mut u8, len: usize, byte: u32) -> u32;
    fn thpsim_live_load(src: *const u8) -> u32;
    static thpsim_live_fill_insn: u8;
    static thpsim_live_fill_resume: u8;
    static thpsim_live_load_insn: u8;
    static thpsim_live_load_resume: u8;
}

fn sym(p: *const u8) -> i64 {
    p as usize as i64
}

/// SIGSEGV/SIGBUS handler of the agent (see the module docs).
extern "C" fn on_fault(sig: c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers;
    // the symbols are addresses of instructions in this binary.
    unsafe {
        let uc = ctx as *mut libc::ucontext_t;
        let gregs = &mut (*uc).uc_mcontext.gregs;
        let rip = gregs[libc::REG_RIP as usize];
        if rip == sym(addr_of!(thpsim_live_fill_insn)) {
            gregs[libc::REG_RIP as usize] = sym(addr_of!(thpsim_live_fill_resume));
            gregs[libc::REG_RDX as usize] = sig as i64;
            return;
        }
        if rip == sym(addr_of!(thpsim_live_load_insn)) {
            gregs[libc::REG_RIP as usize] = sym(addr_of!(thpsim_live_load_resume));
            gregs[libc::REG_RAX as usize] = 0;
            gregs[libc::REG_RDX as usize] = sig as i64;
            return;
        }
        // Not an access of ours: die of this signal when the fault repeats.
        let mut sa: libc::sigaction = zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, null_mut());
    }
}

fn errno() -> u64 {
    // SAFETY: __errno_location is async-signal-safe and always valid.
    unsafe { *libc::__errno_location() as u64 }
}

/// Puts the channel on fd 3 and closes every other fd above 2, so that an
/// agent holds no other agent's socket (end-of-file then means the
/// controller is gone).
unsafe fn settle(chan: c_int) -> c_int {
    if chan != CHAN_FD && libc::dup3(chan, CHAN_FD, libc::O_CLOEXEC) < 0 {
        libc::_exit(121);
    }
    if libc::syscall(libc::SYS_close_range, CHAN_FD as u32 + 1, u32::MAX, 0u32) != 0 {
        for fd in CHAN_FD + 1..65536 {
            libc::close(fd);
        }
    }
    CHAN_FD
}

unsafe fn set_handler(sig: c_int, handler: libc::sighandler_t, flags: c_int) {
    let mut sa: libc::sigaction = zeroed();
    sa.sa_sigaction = handler;
    sa.sa_flags = flags;
    libc::sigemptyset(&mut sa.sa_mask);
    libc::sigaction(sig, &sa, null_mut());
}

/// Receives a request (and a passed fd, if any). `None` on end-of-file.
unsafe fn recv_req(chan: c_int, fd_out: &mut c_int) -> Option<[u64; 4]> {
    let mut req = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: req.as_mut_ptr() as *mut c_void,
        iov_len: size_of::<[u64; 4]>(),
    };
    let mut cbuf = [0u64; 8];
    loop {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut c_void;
        msg.msg_controllen = size_of::<[u64; 8]>() as _;
        let n = libc::recvmsg(chan, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 && errno() == libc::EINTR as u64 {
            continue;
        }
        if n <= 0 {
            return None;
        }
        *fd_out = -1;
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            *fd_out = *(libc::CMSG_DATA(c) as *const c_int);
        }
        if (n as usize) < size_of::<[u64; 4]>() {
            req = [u64::MAX; 4];
        }
        return Some(req);
    }
}

unsafe fn reply(chan: c_int, r: [u64; 4]) {
    libc::send(
        chan,
        r.as_ptr() as *const c_void,
        size_of::<[u64; 4]>(),
        libc::MSG_NOSIGNAL,
    );
}

/// Maps `len` bytes (a multiple of the page size) of private anonymous
/// read-write memory at a PMD-aligned address with at least a PMD of free
/// space on both sides (see [`map_placed`]).
unsafe fn map_region(len: u64) -> Result<u64, u64> {
    map_placed(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, PMD)
}

/// Maps `len` bytes read-write with mmap `flags` (MAP_FIXED added) of `fd`
/// at offset 0 (-1: anonymous) at an `align`-aligned address (a multiple of
/// the PMD) with at least a PMD of free space on both sides: reserve
/// `len + align + 2 PMD` as PROT_NONE (MAP_NORESERVE), map the region over
/// it with MAP_FIXED, unmap the slack. The errno is the real mapping's (for
/// hugetlb: hugetlb_reserve_pages()'s ENOMEM, hugetlbfs's EINVAL).
unsafe fn map_placed(len: u64, flags: c_int, fd: c_int, align: u64) -> Result<u64, u64> {
    let total = len
        .checked_add(align)
        .and_then(|t| t.checked_add(2 * PMD))
        .ok_or(libc::ENOMEM as u64)?;
    let res = libc::mmap(
        null_mut(),
        total as usize,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if res == libc::MAP_FAILED {
        return Err(errno());
    }
    let base = res as u64;
    let start = (base + PMD + align - 1) & !(align - 1);
    let got = libc::mmap(
        start as *mut c_void,
        len as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        flags | libc::MAP_FIXED,
        fd,
        0,
    );
    if got == libc::MAP_FAILED {
        let e = errno();
        libc::munmap(res, total as usize);
        return Err(e);
    }
    libc::munmap(res, (start - base) as usize);
    let end = start + len;
    libc::munmap(end as *mut c_void, (base + total - end) as usize);
    Ok(start)
}

/// Registers this process's mm with khugepaged (MMF_VM_HUGEPAGE): MADV_HUGEPAGE
/// on an empty PMD-aligned region that has an anon_vma (hugepage_madvise() ->
/// khugepaged_enter_vma()). The mm stays on khugepaged's list until it exits,
/// and every process it forks is registered at fork (khugepaged_fork()).
///
/// The keeper does this first, while khugepaged is asleep for the run: a
/// registration wakes khugepaged only when its list was empty
/// (__khugepaged_enter()), and that wake-up scan (`pages_to_scan` = 1, one
/// PMD) starts at the head of the list, the keeper's mm, at address 0. The
/// region is placed low (`LOW`, below the program and its heap), so that
/// one PMD is this empty region and the scan collapses nothing. No agent's
/// registration can wake khugepaged afterwards. Best effort: with THP
/// `never` no mm registers, and khugepaged does not run at all.
///
/// The region must have an anon_vma: since Linux 6.x
/// (__thp_vma_allowable_orders()) khugepaged neither registers nor scans an
/// anonymous VMA without one, so MADV_HUGEPAGE on a never-touched region
/// registers nothing, the first agent region to get MADV_HUGEPAGE (or a THP
/// fault) after its pages are written registers its mm, wakes khugepaged
/// if nobody else is on its list, and the wake-up scan collapses that
/// region behind the scenario's back (seen on 6.18 in about half the runs
/// of `mmap, write, madvise hugepage`). So one page is written (under
/// MADV_NOHUGEPAGE: a base page, no THP fault) and dropped again with
/// MADV_DONTNEED, which keeps the anon_vma and leaves 512 empty PTEs, more
/// than any `max_ptes_none` (at most 511) lets khugepaged collapse.
///
/// # Safety
/// Only syscalls and a store to the region just mapped; async-signal-safe,
/// so it may run in a forked child.
pub unsafe fn register_with_khugepaged() {
    const LOW: u64 = 1 << 33;
    let low = libc::mmap(
        LOW as *mut c_void,
        PMD as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
        -1,
        0,
    );
    let region = if low != libc::MAP_FAILED && low as u64 == LOW {
        low
    } else if let Ok(start) = map_region(PMD) {
        if low != libc::MAP_FAILED {
            libc::munmap(low, PMD as usize);
        }
        start as *mut c_void
    } else {
        return;
    };
    libc::madvise(region, PMD as usize, libc::MADV_NOHUGEPAGE);
    (region as *mut u8).write_volatile(1);
    libc::madvise(region, PMD as usize, libc::MADV_DONTNEED);
    libc::madvise(region, PMD as usize, libc::MADV_HUGEPAGE);
}

/// Moves every CPU's per-CPU folio batches (new pages on their way to the LRU
/// lists, MADV_FREE'd pages on their way to the lazyfree list) to the LRU
/// lists, as lru_add_drain_all() does: move_pages(2) of one unmapped address
/// (0) to node 0, whose do_pages_move() starts with lru_cache_disable() ->
/// __lru_add_drain_all() (migrate_prep() -> lru_add_drain_all() in 5.8) and
/// then moves nothing (the address's status is -EFAULT).
///
/// MADV_PAGEOUT and MADV_FREE drain only the calling CPU's batches
/// (lru_add_drain()) and pass over a page still in another CPU's: MADV_PAGEOUT
/// cannot isolate it from the LRU, MADV_FREE's lazyfree move skips it (the
/// page stays swap-backed and is later swapped out instead of discarded).
/// Which CPU faulted a page is up to the scheduler, so without this a
/// pageout of a page just written did nothing in about a third of the runs
/// on 6.18 (2 CPUs); the model has no per-CPU batches. Best effort: without
/// NUMA (no move_pages(2)) nothing is drained.
///
/// # Safety
/// A syscall on local buffers; async-signal-safe.
unsafe fn drain_lru_batches() {
    let pages = [null_mut::<c_void>()];
    let nodes = [0 as c_int];
    let mut status = [0 as c_int];
    const MPOL_MF_MOVE: c_int = 1 << 1;
    libc::syscall(
        libc::SYS_move_pages,
        0 as c_int,
        1 as libc::c_ulong,
        pages.as_ptr(),
        nodes.as_ptr(),
        status.as_mut_ptr(),
        MPOL_MF_MOVE,
    );
}

fn sys_result(r: c_int) -> [u64; 4] {
    if r == 0 {
        [REPLY_OK, 0, 0, 0]
    } else {
        [REPLY_ERRNO, errno(), 0, 0]
    }
}

/// move_pages(2) of the pages of `[start, start + len)` in chunks of a fixed
/// size (the agent allocates nothing): see [`OP_MOVE_PAGES`].
unsafe fn move_pages(start: u64, len: u64, c: u64) -> [u64; 4] {
    const CHUNK: usize = 512;
    const MPOL_MF_MOVE: c_int = 1 << 1;
    const MPOL_MF_MOVE_ALL: c_int = 1 << 2;
    let node = (c & 0xffff_ffff) as c_int;
    let flags = if c >> 32 & 1 != 0 {
        MPOL_MF_MOVE_ALL
    } else {
        MPOL_MF_MOVE
    };
    let first = start & !(PAGE - 1);
    let end = start + len;
    let mut not_migrated = 0u64;
    let mut addr = first;
    while addr < end {
        let mut pages = [null_mut::<c_void>(); CHUNK];
        let nodes = [node; CHUNK];
        let mut status = [0 as c_int; CHUNK];
        let mut n = 0;
        while n < CHUNK && addr < end {
            pages[n] = addr as *mut c_void;
            n += 1;
            addr += PAGE;
        }
        let r = libc::syscall(
            libc::SYS_move_pages,
            0 as c_int,
            n as libc::c_ulong,
            pages.as_mut_ptr(),
            nodes.as_ptr(),
            status.as_mut_ptr(),
            flags,
        );
        if r < 0 {
            return [REPLY_ERRNO, errno(), 0, 0];
        }
        not_migrated += r as u64;
    }
    [REPLY_OK, 0, not_migrated, 0]
}

/// The agent's life. Never returns.
///
/// # Safety
/// Call only in a freshly forked child, with `chan` its end of the channel.
pub unsafe fn agent_main(chan: c_int) -> ! {
    let mut chan = settle(chan);
    let fault = on_fault as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
    set_handler(libc::SIGSEGV, fault as libc::sighandler_t, libc::SA_SIGINFO);
    set_handler(libc::SIGBUS, fault as libc::sighandler_t, libc::SA_SIGINFO);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        set_handler(sig, libc::SIG_DFL, 0);
    }
    // Children of agents are reaped automatically; the controller watches
    // every agent through a pidfd.
    set_handler(libc::SIGCHLD, libc::SIG_IGN, 0);
    // mlock(2) counts against RLIMIT_MEMLOCK without CAP_IPC_LOCK; lift it
    // (best effort: root may, and root has CAP_IPC_LOCK anyway).
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited);
    // Only now unblock (the controller blocks everything across the fork).
    let mut empty: libc::sigset_t = zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, null_mut());

    loop {
        let mut passed: c_int = -1;
        let Some([op, a, b, c]) = recv_req(chan, &mut passed) else {
            libc::_exit(0);
        };
        if op != OP_FORK && op != OP_PIN && op != OP_MMAP && passed >= 0 {
            libc::close(passed);
        }
        let r = match op {
            OP_HELLO => [REPLY_OK, 0, libc::getpid() as u64, 0],
            OP_MMAP => {
                let r = if b == 0 {
                    map_region(a)
                } else if c == 0 || c % PMD != 0 || !c.is_power_of_two() {
                    Err(libc::EINVAL as u64)
                } else {
                    map_placed(a, b as c_int, passed, c)
                };
                if passed >= 0 {
                    libc::close(passed);
                }
                match r {
                    Ok(addr) => [REPLY_OK, 0, addr, 0],
                    Err(e) => [REPLY_ERRNO, e, 0, 0],
                }
            }
            OP_MUNMAP => sys_result(libc::munmap(a as *mut c_void, b as usize)),
            OP_MPROTECT => sys_result(libc::mprotect(a as *mut c_void, b as usize, c as c_int)),
            OP_MADVISE => {
                if c as c_int == libc::MADV_PAGEOUT || c as c_int == libc::MADV_FREE {
                    drain_lru_batches();
                }
                sys_result(libc::madvise(a as *mut c_void, b as usize, c as c_int))
            }
            OP_FILL => match thpsim_live_fill(a as *mut u8, b as usize, c as u32 & 0xff) {
                0 => [REPLY_OK, 0, 0, 0],
                sig => [REPLY_SIGNAL, sig as u64, 0, 0],
            },
            OP_READ => {
                let mut first = 0u64;
                let mut mismatch = 0u64;
                let mut fault = 0u64;
                for i in 0..b {
                    let v = thpsim_live_load((a + i) as *const u8);
                    if v > 0xff {
                        fault = (v >> 8) as u64;
                        break;
                    }
                    if i == 0 {
                        first = v as u64;
                    }
                    if c != NO_EXPECT && v as u64 != c && mismatch == 0 {
                        mismatch = i + 1;
                    }
                }
                if fault != 0 {
                    [REPLY_SIGNAL, fault, 0, 0]
                } else {
                    [REPLY_OK, 0, first, mismatch]
                }
            }
            OP_FORK => {
                if passed < 0 {
                    [REPLY_ERRNO, libc::EBADF as u64, 0, 0]
                } else {
                    let pid = libc::fork();
                    if pid == 0 {
                        // The child: its own channel, nothing else.
                        chan = settle(passed);
                        continue;
                    }
                    libc::close(passed);
                    if pid < 0 {
                        [REPLY_ERRNO, errno(), 0, 0]
                    } else {
                        [REPLY_OK, 0, pid as u64, 0]
                    }
                }
            }
            OP_PIN => {
                if passed < 0 {
                    [REPLY_ERRNO, libc::EBADF as u64, 0, 0]
                } else {
                    let ring = libc::syscall(libc::SYS_pidfd_getfd, passed, c as c_int, 0u32);
                    let out = if ring < 0 {
                        // Not an outcome of the step: the controller reports it.
                        [REPLY_SIGNAL, errno(), 0, 0]
                    } else {
                        let iov = libc::iovec {
                            iov_base: a as *mut c_void,
                            iov_len: b as usize,
                        };
                        let r = libc::syscall(
                            libc::SYS_io_uring_register,
                            ring as c_int,
                            IORING_REGISTER_BUFFERS,
                            &iov as *const libc::iovec,
                            1u32,
                        );
                        let out = if r == 0 {
                            [REPLY_OK, 0, 0, 0]
                        } else {
                            [REPLY_ERRNO, errno(), 0, 0]
                        };
                        libc::close(ring as c_int);
                        out
                    };
                    libc::close(passed);
                    out
                }
            }
            OP_MLOCK => sys_result(libc::mlock(a as *const c_void, b as usize)),
            OP_MUNLOCK => sys_result(libc::munlock(a as *const c_void, b as usize)),
            OP_MOVE_PAGES => move_pages(a, b, c),
            OP_EXIT => libc::_exit(0),
            _ => [REPLY_ERRNO, libc::ENOSYS as u64, 0, 0],
        };
        reply(chan, r);
    }
}
