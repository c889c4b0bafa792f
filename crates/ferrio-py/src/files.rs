//! File reads done in Rust, without the GIL.
//!
//! Every `bytes` made here is allocated fallibly (see [`new_bytes`]): how large it is depends on a
//! file, and a file too large for the memory left is a `MemoryError`, as with `open().read()`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors;

/// `bytes(data)`, or the `MemoryError` raised allocating it. (`PyBytes::new` panics instead.)
fn new_bytes<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    // A slice is never longer than isize::MAX bytes, so its length fits.
    let len = pyo3::ffi::Py_ssize_t::try_from(data.len()).expect("a slice's length fits isize");
    // SAFETY: CPython copies `len` bytes from a valid slice; a NULL result has set the error.
    unsafe {
        Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), len))
            .map(|b| b.cast_into_unchecked())
    }
}

/// Reads up to `size` bytes at `offset` of `fd` if the page cache holds them, without waiting
/// for the disk and without releasing the GIL (it is a memory copy); `None` if they are not
/// cached, `False` if this file cannot be read that way. The bytes may be fewer than `size`
/// at end of file or where the cache ends.
#[pyfunction]
pub(crate) fn read_cached(py: Python<'_>, fd: i32, size: usize, offset: u64) -> PyResult<Py<PyAny>> {
    use ferrio_core::fileio::{pread_nowait, NoWait};
    use pyo3::IntoPyObjectExt;

    let len = pyo3::ffi::Py_ssize_t::try_from(size).map_err(|_| errors::read_too_large(size))?;
    // SAFETY: with a NULL source, CPython allocates `len` uninitialized bytes for us to fill
    // before anyone else can see the object; we own the only reference.
    let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    if raw.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `raw` is a new, owned reference to a bytes object.
    let bytes: Bound<'_, PyAny> = unsafe { Bound::from_owned_ptr(py, raw) };
    // SAFETY: the object's buffer is `size` bytes long and nothing else refers to it yet.
    let buf = unsafe { std::slice::from_raw_parts_mut(pyo3::ffi::PyBytes_AsString(raw).cast::<u8>(), size) };
    match pread_nowait(fd, buf, offset) {
        Ok(NoWait::Read(n)) if n == size => Ok(bytes.unbind()),
        Ok(NoWait::Read(n)) => new_bytes(py, &buf[..n])?.into_py_any(py),
        Ok(NoWait::WouldBlock) => Ok(py.None()),
        Ok(NoWait::Unsupported) => false.into_py_any(py),
        Err(e) => Err(errors::os_error(&e, None)),
    }
}

/// Opens `path` read-only if its lookup needs no I/O (`openat2` with `RESOLVE_CACHED`); returns
/// the descriptor, or `None` (not cached, an error, or unsupported: open it the usual way).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // reason: PyO3 extracts the argument as an owned PathBuf
pub(crate) fn open_cached(path: PathBuf) -> Option<i32> {
    use std::os::fd::IntoRawFd;
    use std::os::unix::ffi::OsStrExt;

    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    ferrio_core::fileio::open_cached_readonly(&c).map(IntoRawFd::into_raw_fd)
}

/// How often a `read_files_blocking` that waits for its readers asks whether its job was cancelled.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Why a read stopped early: Ctrl-C's `KeyboardInterrupt`, or the job's `CancelledError`; `None`
/// if neither. Asks Python, so the caller holds the GIL.
fn interruption(py: Python<'_>) -> Option<PyErr> {
    // On the main thread (not as read_files() calls it), Ctrl-C stops it.
    if let Err(e) = py.check_signals() {
        return Some(e);
    }
    // Whether the ferrio job running on this thread was cancelled (never, outside a job).
    if crate::job::is_cancelled(py).unwrap_or(false) {
        let cancelled = crate::job::check_cancelled(py).err();
        return Some(cancelled.unwrap_or_else(errors::read_cancelled));
    }
    None
}

/// The files read so far, in order, and the error of the first one that failed.
struct Collected<'a> {
    paths: &'a [PathBuf],
    out: Vec<Option<Py<PyBytes>>>,
    first_error: Option<(usize, PyErr)>,
}

impl<'a> Collected<'a> {
    fn new(paths: &'a [PathBuf]) -> Self {
        Collected {
            paths,
            out: paths.iter().map(|_| None).collect(),
            first_error: None,
        }
    }

    /// Turns a batch's files into `bytes` (with the GIL), or notes the first error.
    fn take(&mut self, py: Python<'_>, batch: &ferrio_core::fileio::ReadBatch) {
        for (i, read) in batch.iter() {
            if self.first_error.as_ref().is_some_and(|(j, _)| *j < i) {
                continue; // an earlier file's error is raised: no need for this one's bytes
            }
            let made = read
                .map_err(|e| errors::os_error(e, Some(&self.paths[i])))
                .and_then(|data| new_bytes(py, data));
            match made {
                Ok(bytes) => self.out[i] = Some(bytes.unbind()),
                Err(e) => self.first_error = Some((i, e)),
            }
        }
    }

    fn result(self) -> PyResult<Vec<Py<PyBytes>>> {
        if let Some((_, e)) = self.first_error {
            return Err(e);
        }
        self.out
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(errors::reader_ended_early)
    }
}

/// Reads every file in `paths` whole, on up to `threads` threads at once, with the GIL released;
/// returns their contents in order, or raises the first file's error (as `open()` would). The
/// calling thread turns each file into `bytes` while the others are still being read. A few
/// files (one batch) it reads itself: starting a thread would cost more than reading them.
///
/// On the main thread, Ctrl-C stops it (`KeyboardInterrupt`). Run as a ferrio job (as
/// `read_files()` runs it on the I/O pool), it also looks every [`CANCEL_POLL`] whether the job
/// was cancelled, and if so stops reading, even a read that waits for a FIFO's writer or a device
/// or reads an endless file, and raises `CancelledError`: a cancelled read does not hold an I/O
/// thread forever.
#[pyfunction]
#[pyo3(signature = (paths, threads=8))]
#[allow(clippy::needless_pass_by_value)] // reason: PyO3 extracts the argument as an owned Vec
pub(crate) fn read_files_blocking(py: Python<'_>, paths: Vec<PathBuf>, threads: usize) -> PyResult<Vec<Py<PyBytes>>> {
    if paths.len() <= ferrio_core::fileio::READ_BATCH {
        read_here(py, &paths)
    } else {
        read_on_threads(py, &paths, threads)
    }
}

/// [`read_files_blocking`] of one batch, on this thread, with the GIL released. Python is asked
/// whether to stop at most every [`CANCEL_POLL`] (retaking the GIL each time per file would wait
/// for the loop's thread to let go of it).
fn read_here(py: Python<'_>, paths: &[PathBuf]) -> PyResult<Vec<Py<PyBytes>>> {
    use std::sync::Mutex;
    use std::time::Instant;

    let why: Mutex<(Instant, Option<PyErr>)> = Mutex::new((Instant::now(), None));
    let stop = || {
        {
            let mut why = why.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if why.1.is_some() {
                return true;
            }
            if why.0.elapsed() < CANCEL_POLL {
                return false;
            }
            why.0 = Instant::now();
        } // (not held while Python runs)
        let Some(e) = Python::attach(interruption) else {
            return false;
        };
        why.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = Some(e);
        true
    };
    let batch = crate::finalize::detach(py, || ferrio_core::fileio::read_batch(paths, 0, &stop));
    if let Some(e) = why.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).1 {
        return Err(e);
    }
    let mut collected = Collected::new(paths);
    collected.take(py, &batch);
    collected.result()
}

/// [`read_files_blocking`] of more than one batch, on up to `threads` threads.
fn read_on_threads(py: Python<'_>, paths: &[PathBuf], threads: usize) -> PyResult<Vec<Py<PyBytes>>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::RecvTimeoutError;

    let mut collected = Collected::new(paths);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut files =
            ferrio_core::fileio::read_each(s, paths, threads, &stop).map_err(|e| errors::reader_not_started(&e))?;
        let mut left = paths.len();
        while left > 0 {
            // Wait for the next file without the GIL, then take every file already read with it.
            let (back, next) = crate::finalize::detach(py, move || {
                let next = files.recv_timeout(CANCEL_POLL);
                (files, next)
            });
            files = back;
            let first = match next {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(e) = interruption(py) {
                        stop.store(true, Ordering::Relaxed); // the scope's end waits for them
                        return Err(e);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            for batch in std::iter::once(first).chain(files.try_iter()) {
                left -= batch.len();
                collected.take(py, &batch);
            }
        }
        Ok::<(), PyErr>(())
    })?;
    collected.result()
}

/// The lines of `chunk` (a `str` or `bytes`) from index `start` on that end in `\n`, each with
/// its `\n`, and the index where the last of them ends; a last line without `\n` is left out.
/// The caller passes text as `read()` returned it, so these are the lines `readline()` returns.
#[pyfunction]
pub(crate) fn split_lines<'py>(
    chunk: &Bound<'py, PyAny>,
    start: usize,
) -> PyResult<(Bound<'py, pyo3::types::PyList>, usize)> {
    use pyo3::ffi::{PyUnicode_FindChar, PyUnicode_Substring, Py_ssize_t};
    use pyo3::types::{PyList, PyString};

    let py = chunk.py();
    let lines = PyList::empty(py);
    if let Ok(bytes) = chunk.cast::<PyBytes>() {
        let data = bytes.as_bytes();
        let first = start.min(data.len());
        let mut off = first;
        for j in memchr::memchr_iter(b'\n', &data[first..]) {
            lines.append(new_bytes(py, &data[off..=first + j])?)?;
            off = first + j + 1;
        }
        return Ok((lines, off));
    }
    let text = chunk.cast::<PyString>()?;
    let overflow = |_| errors::chunk_too_long();
    let len = Py_ssize_t::try_from(text.len()?).map_err(overflow)?;
    let mut off = Py_ssize_t::try_from(start).map_err(overflow)?.min(len);
    loop {
        // SAFETY: `text` is a str, kept alive by the borrow, and 0 <= off <= len = its length.
        let j = unsafe { PyUnicode_FindChar(text.as_ptr(), u32::from(b'\n'), off, len, 1) };
        if j == -2 {
            return Err(PyErr::fetch(py));
        }
        if j < 0 {
            // `off` started from a usize and only grew.
            return Ok((lines, off.unsigned_abs()));
        }
        // SAFETY: as above, with off <= j < len; a NULL result is turned into the raised error.
        let line = unsafe { Bound::from_owned_ptr_or_err(py, PyUnicode_Substring(text.as_ptr(), off, j + 1))? };
        lines.append(line)?;
        off = j + 1;
    }
}
