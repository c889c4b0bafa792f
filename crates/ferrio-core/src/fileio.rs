//! Reads that never wait for the disk.
//!
//! `preadv2(..., RWF_NOWAIT)` copies only what the page cache already holds and fails with
//! `EAGAIN` instead of starting I/O, so an event loop's thread may call it: a cached read costs
//! what a plain `read` costs, with no hop to an I/O thread, and an uncached one falls back to it.

use std::io;
use std::os::fd::RawFd;

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
