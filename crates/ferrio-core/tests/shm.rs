//! Shared cells: two mappings of one file see each other's atomic updates, across a fork too.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering::SeqCst;

use ferrio_core::shm::SharedCell;

fn shared_file(len: i64) -> OwnedFd {
    // SAFETY: memfd_create with a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"ferrio-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned open and is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on a descriptor we own.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }, 0);
    fd
}

#[test]
fn two_mappings_share_one_value() {
    let fd = shared_file(8);
    let a = SharedCell::map(fd.as_raw_fd()).unwrap();
    drop(fd); // the mappings outlive the descriptor
    let b_fd = shared_file(8);
    let b = SharedCell::map(b_fd.as_raw_fd()).unwrap();
    a.atomic().store(41, SeqCst);
    assert_eq!(a.atomic().fetch_add(1, SeqCst), 41);
    assert_eq!(a.atomic().load(SeqCst), 42);
    assert_eq!(b.atomic().load(SeqCst), 0, "a different file is a different value");
}

#[test]
fn a_forked_child_adds_to_the_parents_value() {
    let fd = shared_file(8);
    let cell = SharedCell::map(fd.as_raw_fd()).unwrap();
    // SAFETY: the child only does atomic adds and `_exit`, which are async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        for _ in 0..1000 {
            cell.atomic().fetch_add(1, SeqCst);
        }
        // SAFETY: leaving the child without running the test harness's destructors.
        unsafe { libc::_exit(0) };
    }
    for _ in 0..1000 {
        cell.atomic().fetch_add(1, SeqCst);
    }
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    assert_eq!(cell.atomic().load(SeqCst), 2000);
}

#[test]
fn a_file_too_small_is_refused() {
    let fd = shared_file(4);
    let err = SharedCell::map(fd.as_raw_fd()).unwrap_err();
    assert!(err.to_string().contains("fewer than the 8 of a cell"), "{err}");
}
