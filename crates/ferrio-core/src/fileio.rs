//! Opens and reads that never wait for the disk.
//!
//! `preadv2(..., RWF_NOWAIT)` copies only what the page cache already holds and fails with
//! `EAGAIN` instead of starting I/O, so an event loop's thread may call it: a cached read costs
//! what a plain `read` costs, with no hop to an I/O thread, and an uncached one falls back to it.
//! `openat2(..., RESOLVE_CACHED)` does the same for the path lookup of an open.
//!
//! Only a regular file is ever opened or read that way: a FIFO's open waits for a writer, and a
//! device's or a socket's reads wait for whatever feeds them, so those go to a thread that may block.
//!
//! [`read_each`] reads whole files on threads of its own (`ferrio-read-N`). They run no Python
//! code, so Rust's default stack is enough. Where a file's size decides how much memory is needed
//! (a huge file, an endless one like `/dev/zero`), the memory is reserved fallibly: a file that
//! does not fit is an [`io::ErrorKind::OutOfMemory`] error for that file, never an abort.
//!
//! Those reads can be stopped: each file is opened `O_NONBLOCK` (which changes nothing for a
//! regular file), so a FIFO's open does not wait for a writer, and a FIFO's, a device's or a
//! terminal's reads wait in `poll` a slice at a time, asking whether to stop between slices (and
//! a read that keeps growing its file's buffer asks at each growth: `/dev/zero`'s ends too).
//! [`read_batch`] reads on the caller's thread, for a few files, where starting a thread would
//! cost more than the reads.
//! To read as a blocking `open().read()` does, a FIFO whose first read finds no writer waits for
//! one (`poll` tells one that has not come yet from one that came and left).

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Opens `path` read-only (close-on-exec) if every step of its lookup is in the kernel's caches
/// and it is a regular file; `None` if the lookup would need I/O, if it is anything but a regular
/// file (a FIFO, a device, a socket, a directory), on any error (the caller then opens it the usual
/// way, which reports the error as usual), or where the platform cannot open that way.
///
/// The open itself never waits: `O_NONBLOCK` makes opening a FIFO with no writer, or a device,
/// return at once, and `O_NOCTTY` keeps a terminal from becoming the controlling one; anything but
/// a regular file is closed again before it is read. A regular file's descriptor is handed back in
/// blocking mode, as `open()` would have made it.
#[must_use]
pub fn open_cached_readonly(path: &CStr) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;

        // The kernel's `struct open_how` (libc's is non-exhaustive, so it cannot be built here).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: u64::try_from(libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY).ok()?,
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
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The file's type only: AT_STATX_DONT_SYNC takes it from the inode in memory, where a plain
        // fstat on a network file system may ask the server first.
        let mut st = std::mem::MaybeUninit::<libc::statx>::uninit();
        // (The system call, as for openat2: glibc has a wrapper only since 2.28.)
        // SAFETY: statx of a descriptor we own (empty path + AT_EMPTY_PATH) into the buffer we pass.
        let done = unsafe {
            libc::syscall(
                libc::SYS_statx,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
                libc::STATX_TYPE,
                st.as_mut_ptr(),
            )
        };
        if done != 0 {
            return None;
        }
        // SAFETY: statx succeeded, so it initialized the buffer (stx_mode's type bits included).
        let st = unsafe { st.assume_init() };
        if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFREG {
            return None; // dropping `fd` closes it, unread
        }
        // Clear O_NONBLOCK (the only status flag set): it does nothing on a regular file, but the
        // descriptor should read as blocking (os.get_blocking), as open()'s does.
        // SAFETY: F_SETFL on a descriptor we own, with no pointer argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
            return None;
        }
        Some(fd)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// Room made for a file's contents before reading it: a file this small takes one `read`, and
/// one more that returns 0.
const READ_ROOM: usize = 64 * 1024;

/// Files a reading thread claims at a time, and sends together; [`read_batch`] reads this many.
pub const READ_BATCH: usize = 32;

/// The most threads [`read_each`] starts, whatever it is asked for.
pub const MAX_READ_THREADS: usize = 64;

/// Batch buffers kept for the next batches and calls, so that reading does not fault in fresh
/// memory for every batch: at most `BUFFERS_KEPT_BYTES` of them in all.
const BUFFERS_KEPT_BYTES: usize = 16 * 1024 * 1024;
static BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// The kept buffers, if nobody else holds them right now: a reader never waits for this lock.
/// (Besides costing nothing under contention, that keeps a forked child from waiting forever on a
/// lock that a parent's reader held at the fork: the child just reads without kept buffers.)
fn kept_buffers() -> Option<std::sync::MutexGuard<'static, Vec<Vec<u8>>>> {
    match BUFFERS.try_lock() {
        Ok(kept) => Some(kept),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// How long a reader waits in `poll` before it asks whether to stop again.
pub const STOP_POLL_MS: libc::c_int = 50;

/// The error a reader that was told to stop gives for the file it was reading.
fn stopped() -> io::Error {
    io::Error::other("stopped: the read was cancelled")
}

/// Waits until `fd` is readable or hung up, or `stop()` says to stop (an error). Returns whether
/// it is hung up with nothing to read.
fn wait_readable(fd: RawFd, stop: &dyn Fn() -> bool) -> io::Result<bool> {
    loop {
        if stop() {
            return Err(stopped());
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        match unsafe { libc::poll(&raw mut p, 1, STOP_POLL_MS) } {
            0 => {}
            n if n > 0 => {
                if p.revents & libc::POLLIN != 0 {
                    return Ok(false);
                }
                if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                    return Ok(true);
                }
                if p.revents & libc::POLLNVAL != 0 {
                    return Err(io::Error::from_raw_os_error(libc::EBADF));
                }
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Opens `path` as `read_each` reads it: read-only, close-on-exec (std's default), and
/// non-blocking, so that a FIFO with no writer yet opens at once, and `O_NOCTTY`.
fn open_for_reading(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Appends what is left of `file` to `buf`, reading until a read returns 0. (`read_to_end` on a
/// `File` also makes a `statx` and an `lseek` for a size hint: a third more system calls for a
/// small file. Here a file asks for its size only once it has outgrown the first room made.)
///
/// Memory is reserved fallibly: a file too large for the memory left (or endless, like
/// `/dev/zero`) ends in an [`io::ErrorKind::OutOfMemory`] error, as `open().read()` ends in
/// `MemoryError`. `file` is non-blocking (see [`open_for_reading`]): where a read would wait, the
/// wait is in [`wait_readable`], which `stop()` ends; it is asked too each time the buffer grows.
fn append_rest(file: &std::fs::File, buf: &mut Vec<u8>, stop: &dyn Fn() -> bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let start = buf.len();
    let mut sized = false;
    // Room below which the next read gets more room first; 1 once room for the whole file was
    // made, so that the read that returns 0 does not grow the buffer past the file's size.
    let mut min_room = 4096;
    let mut first_read = true;
    loop {
        if buf.capacity() - buf.len() < min_room {
            if stop() {
                return Err(stopped()); // as an endless file's buffer doubles, say
            }
            let read = buf.len() - start;
            // A file past its first room is a big one: make room for all of it at once rather than
            // doubling past its size (st_size is 0 for endless and unsized files: keep doubling).
            let left = if sized || read < READ_ROOM {
                0
            } else {
                sized = true;
                file.metadata().map_or(0, |m| m.len()).saturating_sub(read as u64)
            };
            let reserved = match usize::try_from(left) {
                Ok(left) if left > 0 => {
                    min_room = 1;
                    buf.try_reserve_exact(left.saturating_add(1))
                }
                _ => buf.try_reserve(READ_ROOM),
            };
            reserved
                .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, format!("{e} after reading {read} bytes")))?;
        }
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is writable memory of `spare.len()` bytes that read(2) may fill.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
        let was_first = std::mem::replace(&mut first_read, false);
        match usize::try_from(n) {
            // A FIFO whose very first read finds no writer: a blocking read would wait for one.
            // (Later, 0 means its writers came and left: end of file, as for a blocking read.)
            Ok(0) if was_first && file.metadata().is_ok_and(|m| m.file_type().is_fifo()) => {
                if wait_readable(fd, stop)? {
                    return Ok(()); // a writer came and left without writing
                }
            }
            Ok(0) => return Ok(()),
            // SAFETY: read(2) initialized the first `n` bytes of the spare capacity.
            Ok(n) => unsafe { buf.set_len(buf.len() + n) },
            Err(_) => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    // Nothing to read yet (a FIFO's writer is there, a terminal waits for a line):
                    // wait; if it hung up meanwhile, the next read says 0 or the error.
                    io::ErrorKind::WouldBlock => {
                        wait_readable(fd, stop)?;
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Files read whole by [`read_each`]: their contents lie one after another in one buffer.
pub struct ReadBatch {
    data: Vec<u8>,
    files: Vec<(usize, io::Result<std::ops::Range<usize>>)>,
}

impl Drop for ReadBatch {
    fn drop(&mut self) {
        let Some(mut kept) = kept_buffers() else {
            return; // busy: this one is freed instead
        };
        let kept_bytes: usize = kept.iter().map(Vec::capacity).sum();
        if kept_bytes + self.data.capacity() <= BUFFERS_KEPT_BYTES && kept.try_reserve(1).is_ok() {
            let mut data = std::mem::take(&mut self.data);
            data.clear();
            kept.push(data);
        }
    }
}

impl ReadBatch {
    /// Each file's index in the paths given, and its contents or the error reading it raised.
    pub fn iter(&self) -> impl Iterator<Item = (usize, Result<&[u8], &io::Error>)> {
        self.files.iter().map(|(i, read)| match read {
            Ok(range) => (*i, Ok(&self.data[range.clone()])),
            Err(e) => (*i, Err(e)),
        })
    }

    /// How many files this batch holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether this batch holds no file.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Reads the files `paths[first..]`, [`READ_BATCH`] of them at most, whole, on this thread (an
/// `open`, its reads, a `close`; no `stat` for a small file). `stop()` is asked between files, at
/// each growth of the buffer and every [`STOP_POLL_MS`] of a wait for a FIFO or a device; once it
/// says to stop, the file being read and the rest fail.
pub fn read_batch<P: AsRef<std::path::Path>>(paths: &[P], first: usize, stop: &dyn Fn() -> bool) -> ReadBatch {
    let data = kept_buffers().and_then(|mut kept| kept.pop()).unwrap_or_default();
    let mut batch = ReadBatch {
        data,
        files: Vec::with_capacity(READ_BATCH),
    };
    let mut stopped_at = None;
    for (i, path) in paths.iter().enumerate().skip(first).take(READ_BATCH) {
        if stopped_at.is_none() && stop() {
            stopped_at = Some(i);
        }
        if stopped_at.is_some() {
            batch.files.push((i, Err(stopped())));
            continue;
        }
        let start = batch.data.len();
        let read = open_for_reading(path.as_ref()).and_then(|f| append_rest(&f, &mut batch.data, stop));
        if let Err(e) = &read {
            batch.data.truncate(start);
            if e.kind() == io::ErrorKind::OutOfMemory {
                // Give back what the file that did not fit took, before reading on.
                batch.data.shrink_to(start);
            }
        }
        batch.files.push((i, read.map(|()| start..batch.data.len())));
    }
    batch
}

/// Starts up to `threads` threads (`ferrio-read-N`) in `scope` that read the files of `paths`
/// whole, [`read_batch`] after [`read_batch`], and send each batch as soon as it is read, in
/// whatever order they finish: the receiver can use a batch while the next ones are being read.
/// Setting `stop` makes them stop soon (within [`STOP_POLL_MS`] of a wait for a FIFO or a device)
/// and send no more.
///
/// # Errors
///
/// The error starting the first thread (`EAGAIN` under `RLIMIT_NPROC`, say), if none could start;
/// if some could, they read every file between them.
pub fn read_each<'scope, P: AsRef<std::path::Path> + Sync>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    paths: &'scope [P],
    threads: usize,
    stop: &'scope AtomicBool,
) -> io::Result<std::sync::mpsc::Receiver<ReadBatch>> {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    let (tx, rx) = std::sync::mpsc::channel();
    let next = Arc::new(AtomicUsize::new(0));
    for k in 0..threads.clamp(1, MAX_READ_THREADS).min(paths.len().div_ceil(READ_BATCH)) {
        let (tx, next) = (tx.clone(), Arc::clone(&next));
        let reader = move || loop {
            let first = next.fetch_add(READ_BATCH, Ordering::Relaxed);
            if first >= paths.len() || stop.load(Ordering::Relaxed) {
                break;
            }
            let batch = read_batch(paths, first, &|| stop.load(Ordering::Relaxed));
            if tx.send(batch).is_err() {
                break; // the receiver is gone: nobody wants the rest
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name(format!("ferrio-read-{k}"))
            .spawn_scoped(scope, reader)
        {
            if k == 0 {
                return Err(e);
            }
            break; // the threads already started read the rest
        }
    }
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_never_wait_for_the_kept_buffers_lock() {
        let dir = std::env::temp_dir().join(format!("ferrio-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"contents").unwrap();
        let paths = [path];
        let stop = AtomicBool::new(false);
        // Held as a parent's reader might have held it when the process forked: forever, in the child.
        let held = BUFFERS.lock().unwrap();
        std::thread::scope(|s| {
            let rx = read_each(s, &paths, 1, &stop).unwrap();
            let batch = rx.recv_timeout(std::time::Duration::from_secs(5));
            drop(held); // (released before asserting, so a waiting reader cannot hang the test)
            let batch = batch.expect("a reader waited for the kept buffers' lock");
            assert_eq!(batch.iter().next().unwrap().1.unwrap(), b"contents");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
