//! Pins and the DMA device on the live kernel: io_uring registered buffers.
//!
//! `P: pin R = A[range] ...`: the controller creates an io_uring instance
//! (one per pin, so that a pin is one buffer table and `unpin` drops exactly
//! it) and passes its fd to P's agent, which registers `[start, end)` of its
//! own memory as buffer 0 (IORING_REGISTER_BUFFERS: io_sqe_buffer_register()
//! -> io_pin_pages() -> pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM) of
//! the calling process's pages, all or nothing, -EFAULT otherwise) and then
//! closes its copy of the fd. The ring, and the pin with it, is the
//! controller's from then on: the pinned frames stay pinned when P exits,
//! as the language says of a pin, until `unpin` unregisters the buffers
//! (IORING_UNREGISTER_BUFFERS, from the controller).
//!
//! The device: `device: write R[range] = V` is an IORING_OP_READ_FIXED from
//! a memfd holding the bytes into the registered buffer, `device: read
//! R[range]` an IORING_OP_WRITE_FIXED from the buffer into the memfd, which
//! the controller then reads. Both go to the pinned frames through the
//! buffer's bio_vecs, not through anybody's page tables: the DMA semantics
//! of the model (crates/model/src/dma.rs).
//!
//! What the live kernel cannot do as the language asks: io_uring always pins
//! with FOLL_WRITE (a read-only pin is a write pin live, docs/CONFORMANCE.md
//! D11), and always with pin_user_pages_fast() (`fast` changes nothing live).

use crate::LiveError;
use io_uring::{opcode, types, IoUring};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

/// /proc/sys/kernel/io_uring_disabled (Linux >= 6.6): 0 allowed, 1 only for
/// CAP_SYS_ADMIN or members of kernel.io_uring_group, 2 disabled.
pub const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

/// Why io_uring cannot be used here, from io_uring_setup()'s errno and the
/// io_uring_disabled sysctl (if the kernel has it).
pub fn unavailable_reason(errno: i32, disabled: Option<&str>) -> String {
    let sysctl = disabled.map(str::trim);
    let what = match (errno, sysctl) {
        (_, Some("2")) => format!(
            "io_uring is disabled on this machine ({IO_URING_DISABLED} is 2), and pins run \
             on io_uring registered buffers"
        ),
        (libc::EPERM, Some("1")) => format!(
            "io_uring is restricted ({IO_URING_DISABLED} is 1) and this process may not \
             create an instance (io_uring_setup: EPERM); pins run on io_uring registered buffers"
        ),
        (libc::ENOSYS, _) => "this kernel has no io_uring (io_uring_setup: ENOSYS, \
             CONFIG_IO_URING off), and pins run on io_uring registered buffers"
            .to_string(),
        (libc::EPERM, _) => "io_uring_setup is not permitted (EPERM: io_uring disabled, or \
             a seccomp filter), and pins run on io_uring registered buffers"
            .to_string(),
        (e, _) => format!(
            "io_uring_setup failed ({}), and pins run on io_uring registered buffers",
            io::Error::from_raw_os_error(e)
        ),
    };
    format!("{what}; the live runner does not change {IO_URING_DISABLED}")
}

/// A new io_uring instance, or why there can be none.
pub fn new_ring() -> Result<IoUring, String> {
    IoUring::new(4).map_err(|e| {
        let disabled = std::fs::read_to_string(IO_URING_DISABLED).ok();
        unavailable_reason(e.raw_os_error().unwrap_or(0), disabled.as_deref())
    })
}

/// Whether pins can run here (an io_uring instance can be created).
pub fn available() -> Result<(), String> {
    new_ring().map(drop)
}

/// A pin held by the (live) device: one io_uring instance with the pinned
/// range registered as buffer 0.
pub struct LivePin {
    ring: IoUring,
    /// The user address the buffer starts at (in the owner's address space;
    /// io_uring checks fixed-buffer addresses against it, never
    /// dereferences it).
    pub ubuf: u64,
    pub len: u64,
}

/// Bytes per io_uring request (its `len` is 32 bits).
const CHUNK: u64 = 1 << 30;

impl LivePin {
    pub fn new(ring: IoUring, ubuf: u64, len: u64) -> LivePin {
        LivePin { ring, ubuf, len }
    }

    /// Unregisters the buffer (the frames are unpinned now, not when the
    /// ring's deferred teardown runs) and closes the ring.
    pub fn unpin(self) -> io::Result<()> {
        self.ring.submitter().unregister_buffers()
    }

    /// One fixed-buffer request, `len` bytes at buffer offset `off`, file
    /// offset `file_off`; returns the bytes transferred.
    fn rw(
        &mut self,
        write_to_file: bool,
        fd: RawFd,
        off: u64,
        len: u64,
        file_off: u64,
    ) -> io::Result<u64> {
        let addr = self.ubuf + off;
        let e = if write_to_file {
            opcode::WriteFixed::new(types::Fd(fd), addr as *const u8, len as u32, 0)
                .offset(file_off)
                .build()
        } else {
            opcode::ReadFixed::new(types::Fd(fd), addr as *mut u8, len as u32, 0)
                .offset(file_off)
                .build()
        };
        // SAFETY: the buffer is registered (io_uring checks the range
        // against it) and the file is ours; the entry owns no memory of ours.
        unsafe {
            self.ring
                .submission()
                .push(&e)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        self.ring.submit_and_wait(1)?;
        let cqe = self
            .ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("io_uring: no completion"))?;
        match cqe.result() {
            r if r < 0 => Err(io::Error::from_raw_os_error(-r)),
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "0 bytes transferred",
            )),
            r => Ok(r as u64),
        }
    }

    /// `device: write`: `[s, e)` of the buffer becomes `value`, by DMA from
    /// the device file.
    pub fn device_write(&mut self, dev: &DeviceFile, s: u64, e: u64, value: u8) -> io::Result<()> {
        let mut off = s;
        while off < e {
            let n = (e - off).min(CHUNK);
            dev.fill(n, value)?;
            let mut done = 0;
            while done < n {
                done += self.rw(false, dev.fd(), off + done, n - done, done)?;
            }
            off += n;
        }
        dev.clear()
    }

    /// `device: read`: the bytes of `[s, e)` of the buffer, by DMA into the
    /// device file. Returns the first byte (what the records carry, as for a
    /// process's `read`).
    pub fn device_read(&mut self, dev: &DeviceFile, s: u64, e: u64) -> io::Result<u8> {
        let mut first = None;
        let mut off = s;
        while off < e {
            let n = (e - off).min(CHUNK);
            let mut done = 0;
            while done < n {
                done += self.rw(true, dev.fd(), off + done, n - done, done)?;
            }
            let mut buf = vec![0u8; n as usize];
            dev.file.read_exact_at(&mut buf, 0)?;
            first.get_or_insert(buf[0]);
            dev.clear()?;
            off += n;
        }
        Ok(first.unwrap_or(0))
    }
}

/// The device's side of a transfer: a memfd.
pub struct DeviceFile {
    file: File,
}

impl DeviceFile {
    pub fn new() -> Result<DeviceFile, LiveError> {
        // SAFETY: a plain syscall with a NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"thpsim-device".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(LiveError::Io {
                context: "memfd_create for the device".into(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: a new descriptor we own.
        Ok(DeviceFile {
            file: unsafe { File::from_raw_fd(fd) },
        })
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The file becomes `n` bytes of `value`.
    fn fill(&self, n: u64, value: u8) -> io::Result<()> {
        self.file.set_len(0)?;
        let block = vec![value; n.min(1 << 20) as usize];
        let mut at = 0;
        while at < n {
            let k = (n - at).min(block.len() as u64) as usize;
            self.file.write_all_at(&block[..k], at)?;
            at += k as u64;
        }
        Ok(())
    }

    /// Frees the file's pages.
    fn clear(&self) -> io::Result<()> {
        self.file.set_len(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_errors_say_why_pins_cannot_run() {
        let r = unavailable_reason(libc::EPERM, Some("2\n"));
        assert!(r.contains("io_uring_disabled is 2"), "{r}");
        assert!(r.contains("does not change"), "{r}");
        let r = unavailable_reason(libc::EPERM, Some("1"));
        assert!(r.contains("restricted") && r.contains("EPERM"), "{r}");
        let r = unavailable_reason(libc::ENOSYS, None);
        assert!(r.contains("no io_uring") && r.contains("ENOSYS"), "{r}");
        let r = unavailable_reason(libc::EPERM, Some("0"));
        assert!(r.contains("not permitted"), "{r}");
        let r = unavailable_reason(libc::ENOMEM, None);
        assert!(r.contains("io_uring_setup failed"), "{r}");
    }
}
