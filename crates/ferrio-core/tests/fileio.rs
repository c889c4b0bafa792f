//! Non-waiting reads of a file the page cache holds (it was just written).

use std::io::Write;
use std::os::fd::AsRawFd;

use ferrio_core::fileio::{pread_nowait, NoWait};

/// A stop flag nobody sets.
static NO_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A fresh-named directory for one test (`name` plus this process's id), created.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn cached_bytes_are_read_at_any_offset_and_end_of_file_reads_nothing() {
    let dir = scratch_dir("ferrio-fileio");
    let path = dir.join("data.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 65536];
    match pread_nowait(f.as_raw_fd(), &mut buf, 1000).unwrap() {
        NoWait::Read(n) => {
            assert_eq!(n, 65536);
            assert_eq!(&buf[..], &data[1000..1000 + 65536]);
        }
        NoWait::Unsupported => return, // a file system without RWF_NOWAIT: nothing more to check
        NoWait::WouldBlock => panic!("a file just written should be cached"),
    }
    assert_eq!(
        pread_nowait(f.as_raw_fd(), &mut buf, 190_000).unwrap(),
        NoWait::Read(10_000)
    );
    assert_eq!(&buf[..10_000], &data[190_000..]);
    assert_eq!(pread_nowait(f.as_raw_fd(), &mut buf, 200_000).unwrap(), NoWait::Read(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_descriptor_is_an_error() {
    let mut buf = [0u8; 16];
    let r = pread_nowait(-1, &mut buf, 0);
    assert!(matches!(r, Err(_) | Ok(NoWait::Unsupported)), "{r:?}");
}

#[test]
fn a_cached_path_opens_and_a_missing_one_does_not() {
    use ferrio_core::fileio::open_cached_readonly;

    let dir = scratch_dir("ferrio-open");
    let path = dir.join("here.txt");
    std::fs::write(&path, b"hello").unwrap();
    let _ = std::fs::metadata(&path).unwrap(); // the lookup is cached now
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    if let Some(fd) = open_cached_readonly(&c) {
        let mut buf = [0u8; 5];
        assert_eq!(pread_nowait(fd.as_raw_fd(), &mut buf, 0).unwrap(), NoWait::Read(5));
        assert_eq!(&buf, b"hello");
    } // else: a kernel before 5.12 has no RESOLVE_CACHED; nothing more to check
    let missing = std::ffi::CString::new(dir.join("missing").to_str().unwrap()).unwrap();
    assert!(open_cached_readonly(&missing).is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_each_reads_every_file_whole_once_and_reports_each_error() {
    use ferrio_core::fileio::read_each;

    let dir = scratch_dir("ferrio-read-each");
    // Sizes around the reader's room per file (64 KiB) and its batches of 32 files.
    let sizes = [0usize, 1, 4096, 65_535, 65_536, 65_537, 300_000];
    let mut paths = Vec::new();
    let mut expected: Vec<Option<Vec<u8>>> = Vec::new();
    for i in 0..100 {
        let path = dir.join(format!("f{i}"));
        if i % 37 == 5 {
            expected.push(None); // never created: NotFound
        } else {
            let data: Vec<u8> = (0..sizes[i % sizes.len()]).map(|j| ((i * 7 + j) % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            expected.push(Some(data));
        }
        paths.push(path);
    }
    for threads in [1, 3, 8] {
        for _ in 0..2 {
            // (twice: the second run reuses the batch buffers the first one kept)
            let mut seen = vec![0u32; paths.len()];
            std::thread::scope(|s| {
                for batch in read_each(s, &paths, threads, &NO_STOP).unwrap() {
                    for (i, read) in batch.iter() {
                        seen[i] += 1;
                        match (&expected[i], read) {
                            (Some(data), Ok(got)) => assert_eq!(got, &data[..], "file {i}"),
                            (None, Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
                            (want, got) => panic!("file {i}: expected {:?}, got {:?}", want.is_some(), got.is_ok()),
                        }
                    }
                }
            });
            assert!(seen.iter().all(|&n| n == 1), "each file once: {seen:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn only_regular_files_open_cached_and_a_fifo_with_no_writer_does_not_block() {
    use ferrio_core::fileio::open_cached_readonly;

    let dir = scratch_dir("ferrio-open-kinds");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let link = dir.join("link-to-fifo");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    // The lookups are cached now. Without O_NONBLOCK these opens would wait for a writer forever.
    let _ = std::fs::symlink_metadata(&link).unwrap();
    for path in [&fifo, &link] {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert!(open_cached_readonly(&c).is_none(), "{path:?}");
    }
    for path in ["/dev/zero", "/dev/null", "/proc/self/fd/0", "/"] {
        let c = std::ffi::CString::new(path).unwrap();
        assert!(open_cached_readonly(&c).is_none(), "{path}");
    }
    let file = dir.join("regular");
    std::fs::write(&file, b"x").unwrap();
    let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    if let Some(fd) = open_cached_readonly(&c) {
        // SAFETY: F_GETFL on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(
            flags & libc::O_NONBLOCK,
            0,
            "handed back in blocking mode, as open() makes it"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_each_reads_a_fifo_and_names_its_threads() {
    use ferrio_core::fileio::read_each;

    let dir = scratch_dir("ferrio-read-fifo");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let paths = [fifo.clone()];
    std::thread::scope(|s| {
        let rx = read_each(s, &paths, 4, &NO_STOP).unwrap();
        // One file makes one reader, named. (Polling: its name shows in /proc once it started.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let named = || {
            std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
                std::fs::read_to_string(t.unwrap().path().join("comm")).is_ok_and(|c| c.trim() == "ferrio-read-0")
            })
        };
        while !named() {
            assert!(std::time::Instant::now() < deadline, "no thread named ferrio-read-0");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // The reader's open waits for this writer; when it is done, the reader sees end of file.
        std::fs::write(&fifo, b"through a fifo").unwrap();
        let batch = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the fifo was read");
        let got: Vec<_> = batch.iter().map(|(i, r)| (i, r.unwrap().to_vec())).collect();
        assert_eq!(got, [(0, b"through a fifo".to_vec())]);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stopping_read_each_ends_reads_that_wait_for_a_writer_or_for_data() {
    use ferrio_core::fileio::read_each;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = scratch_dir("ferrio-read-stop");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    // A FIFO no writer ever opens, and one whose writer never writes nor leaves (this test holds
    // it open read-write): without the stop, neither read ends.
    let held = dir.join("held");
    mkfifo(&held);
    let _writer = std::fs::OpenOptions::new().read(true).write(true).open(&held).unwrap();
    let paths = [fifo.clone(), held.clone()];
    let stop = AtomicBool::new(false);
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let rx = read_each(s, &paths[..1], 1, &stop).unwrap();
        let rx2 = read_each(s, &paths[1..], 1, &stop).unwrap();
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(),
            "nothing to read yet"
        );
        stop.store(true, Ordering::Relaxed);
        for rx in [rx, rx2] {
            let batch = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the reader stopped");
            for (_, read) in batch.iter() {
                assert!(read.unwrap_err().to_string().contains("cancelled"));
            }
        }
    }); // the scope joins the readers: they stopped
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_batch_reads_on_this_thread_and_asks_whether_to_stop_while_it_waits() {
    use ferrio_core::fileio::read_batch;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = scratch_dir("ferrio-read-batch");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let file = dir.join("file");
    std::fs::write(&file, b"read before the FIFO").unwrap();
    let paths = [file.clone(), fifo.clone(), file.clone()];
    let asked = AtomicUsize::new(0);
    // Stop once asked a few times: the FIFO's wait (no writer ever comes) asks every 50 ms.
    let batch = read_batch(&paths, 0, &|| asked.fetch_add(1, Ordering::Relaxed) >= 3);
    let got: Vec<_> = batch
        .iter()
        .map(|(i, r)| (i, r.map(<[u8]>::to_vec).map_err(ToString::to_string)))
        .collect();
    assert_eq!(got[0], (0, Ok(b"read before the FIFO".to_vec())));
    assert!(matches!(&got[1], (1, Err(e)) if e.contains("cancelled")), "{got:?}");
    assert!(
        matches!(&got[2], (2, Err(e)) if e.contains("cancelled")),
        "once stopped, the rest fail: {got:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
