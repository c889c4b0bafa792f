//! Opens and reads that never wait for the disk.
//!
//! `preadv2(..., RWF_NOWAIT)` copies only what the page cache already holds and fails with
//! `EAGAIN` instead of starting I/O, so an event loop's thread may call it: a cached read costs
//! what a plain `read` costs, with no hop to an I/O thread, and an uncached one falls back to it.
//! `openat2(..., RESOLVE_CACHED)` does the same for the path lookup of an open.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// What a non-waiting read did.
#[derive(Debug, PartialEq, Eq)]
pub enum NoWait {
    /// This many bytes were copied (fewer than asked at end of file, or where the cache ended).
    Read(usize),
    /// Nothing is cached at the offset: read on a thread that may block.
    WouldBlock,
    /// The platform or file system cannot read without waiting: do not try again on this file.
    Unsupported,
}

/// Reads into `buf` from `offset` without waiting for the disk, retrying on `EINTR`.
pub fn pread_nowait(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<NoWait> {
    #[cfg(target_os = "linux")]
    {
        let Ok(offset) = libc::off_t::try_from(offset) else {
            return Ok(NoWait::Unsupported);
        };
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        loop {
            // SAFETY: one iovec over `buf`, which is valid for writes of its length.
            let n = unsafe { libc::preadv2(fd, &raw const iov, 1, offset, libc::RWF_NOWAIT) };
            if let Ok(n) = usize::try_from(n) {
                return Ok(NoWait::Read(n));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => return Ok(NoWait::WouldBlock),
                Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => return Ok(NoWait::Unsupported),
                _ => return Err(err),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, buf, offset);
        Ok(NoWait::Unsupported)
    }
}

/// Opens `path` read-only (close-on-exec) if every step of its lookup is in the kernel's caches;
/// `None` if that would need I/O, or on any error (the caller then opens it the usual way, which
/// reports the error as usual), or where the platform cannot open that way.
#[must_use]
pub fn open_cached_readonly(path: &CStr) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        // The kernel's `struct open_how` (libc's is non-exhaustive, so it cannot be built here).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: u64::try_from(libc::O_RDONLY | libc::O_CLOEXEC).ok()?,
            mode: 0,
            resolve: libc::RESOLVE_CACHED,
        };
        // SAFETY: openat2 with a valid C string and an open_how of the size we pass.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                &raw const how,
                std::mem::size_of::<OpenHow>(),
            )
        };
        let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}
