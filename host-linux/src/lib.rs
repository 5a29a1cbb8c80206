//! The Linux host: maps files with `MAP_POPULATE` (so the first token does
//! not pay for page faults), hands out anonymous mappings as arenas, and
//! runs the shared command line in `barellama_core::app`. The binary is
//! `main.rs`; this library lets tests drive the same host in-process.

use std::cell::RefCell;
use std::ffi::c_void;
use std::io::{IsTerminal, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::time::Instant;

use barellama_core::app::{self, Host, Output};
use barellama_core::error::{text, Error, Result};
use barellama_core::hosted::{available_threads, read_line, CountingAlloc, Pool};
use barellama_core::{Exec, Isa};
use rustix::fs::{fstat, open, FileType, Mode, OFlags};
use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

/// A live mapping, unmapped when the host is dropped.
struct Mapping {
    ptr: *mut c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and every slice
        // borrowed from it is bounded by the host's lifetime, which is ending.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// The [`Host`] for Linux.
pub struct LinuxHost {
    maps: RefCell<Vec<Mapping>>,
    start: Instant,
    alloc: &'static CountingAlloc,
    pool: Pool,
}

impl LinuxHost {
    /// A host whose allocation count comes from `alloc`, the process's
    /// `#[global_allocator]`.
    pub fn new(alloc: &'static CountingAlloc) -> Self {
        LinuxHost {
            maps: RefCell::new(Vec::new()),
            start: Instant::now(),
            alloc,
            pool: Pool::new(),
        }
    }

    fn keep(&self, ptr: *mut c_void, len: usize) {
        self.maps.borrow_mut().push(Mapping { ptr, len });
    }
}

/// An output file.
pub struct File(OwnedFd);

impl Output for File {
    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = rustix::io::write(&self.0, bytes).map_err(|e| Error::Io {
                what: "output file",
                errno: e.raw_os_error(),
            })?;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

impl Host for LinuxHost {
    type File = File;

    fn map(&self, path: &[u8]) -> Result<&[u8]> {
        let fail = |problem, errno| Error::File {
            path: text(path),
            problem,
            errno,
        };
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd =
            open(path, flags, Mode::empty()).map_err(|e| fail("cannot open", e.raw_os_error()))?;
        let st = fstat(&fd).map_err(|e| fail("cannot stat", e.raw_os_error()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(fail("is not a regular file", 0));
        }
        let len =
            usize::try_from(st.st_size).map_err(|_| fail("is larger than the address space", 0))?;
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: a fresh private read-only mapping of a regular file; the
        // kernel picks the address. Nothing else aliases it mutably. (A file
        // truncated by another process while mapped raises SIGBUS, as for
        // every mmap-based reader.)
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE | MapFlags::POPULATE,
                &fd,
                0,
            )
        }
        .map_err(|e| fail("cannot map", e.raw_os_error()))?;
        self.keep(ptr, len);
        // SAFETY: the mapping is `len` readable bytes and stays mapped until
        // `self` is dropped, which outlives the returned borrow.
        Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }

    fn memory(&self, bytes: usize) -> Result<&mut [u8]> {
        let len = bytes.max(1);
        // SAFETY: a fresh anonymous private mapping at a kernel-chosen
        // address; it is page aligned (so 64-byte aligned) and zero filled.
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(|_| Error::OutOfMemory { bytes })?;
        self.keep(ptr, len);
        // SAFETY: each call maps a new region, so this is the only reference
        // to it; it stays mapped until `self` is dropped.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), bytes) })
    }

    fn create(&self, path: &[u8]) -> Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
        let fd = open(path, flags, Mode::from_raw_mode(0o644)).map_err(|e| Error::File {
            path: text(path),
            problem: "cannot create",
            errno: e.raw_os_error(),
        })?;
        Ok(File(fd))
    }

    fn print(&self, bytes: &[u8]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| Error::Io {
                what: "standard output",
                errno: e.raw_os_error().unwrap_or(0),
            })
    }

    fn eprint(&self, bytes: &[u8]) {
        let _ = std::io::stderr().lock().write_all(bytes);
    }

    fn interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn read_line(&self, line: &mut [u8]) -> Result<Option<usize>> {
        read_line(&mut std::io::stdin().lock(), line)
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    fn allocations(&self) -> u64 {
        self.alloc.allocations()
    }

    fn isa(&self) -> Isa {
        Isa::detect()
    }

    fn default_threads(&self) -> usize {
        available_threads()
    }

    fn exec(&self, threads: usize) -> Result<&dyn Exec> {
        self.pool.exec(threads)
    }
}

/// Runs the command line of this process and returns its exit code.
pub fn main(alloc: &'static CountingAlloc) -> i32 {
    let args: Vec<Vec<u8>> = std::env::args_os().skip(1).map(|a| a.into_vec()).collect();
    let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    app::main(&LinuxHost::new(alloc), &argv)
}
