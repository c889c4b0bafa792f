//! Process-shared memory: a 64-bit atomic cell mapped from a file descriptor, and the parent-death
//! signal that keeps worker processes from outliving their pool.
//!
//! The descriptor comes from the embedder (a `memfd` on Linux, an unlinked file elsewhere) and is
//! passed to other processes with `SCM_RIGHTS` or at process start; each process maps it once.
//! The kernel frees the memory when the last descriptor and mapping are gone, so a crashed process
//! cannot leave a segment behind.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// Eight bytes of shared memory viewed as an [`AtomicU64`], mapped `MAP_SHARED` from a descriptor.
#[derive(Debug)]
pub struct SharedCell {
    ptr: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomic operations and lives until drop.
unsafe impl Send for SharedCell {}
// SAFETY: as above; `&AtomicU64` is the only view handed out.
unsafe impl Sync for SharedCell {}

impl SharedCell {
    /// Maps the first eight bytes of `fd`, which must be a file of at least eight bytes opened for
    /// reading and writing. The descriptor may be closed afterwards; the mapping stays valid.
    pub fn map(fd: RawFd) -> io::Result<Self> {
        // SAFETY: fstat fills a zeroed stat buffer we own; the result is checked.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &raw mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_size < 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the shared-memory file holds {} bytes, fewer than the 8 of a cell",
                    st.st_size
                ),
            ));
        }
        let len = 8;
        // SAFETY: a fresh shared mapping of a descriptor we were given; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // mmap returns page-aligned memory, so the cell is aligned for an AtomicU64.
        let ptr = NonNull::new(ptr.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    /// The shared value.
    #[must_use]
    pub fn atomic(&self) -> &AtomicU64 {
        // SAFETY: the mapping is valid, aligned and readable/writable until `self` is dropped.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for SharedCell {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `map`; no reference outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Asks the kernel to send `signal` to this process when the thread that started it exits
/// (Linux's `PR_SET_PDEATHSIG`). Returns `false` where the platform has no such thing.
pub fn set_parent_death_signal(signal: i32) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only; the result is checked.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::c_ulong::try_from(signal).unwrap_or(0)) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = signal;
        Ok(false)
    }
}
