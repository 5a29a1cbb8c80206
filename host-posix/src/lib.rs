//! The [`Host`] that the Linux and macOS hosts share, so neither repeats
//! the other: files mapped with rustix `mmap`, arenas from anonymous
//! mappings, output files, the clock, peak RSS, allocation counting, CPU
//! detection and the thread pool. The hosts differ in one choice, how a
//! model file is made resident before the first token ([`Prefault`]);
//! everything else that differs between the kernels underneath (the unit of
//! `ru_maxrss`) is decided here by `cfg`, because it depends on the OS the
//! process runs on, not on which host crate made it.

use std::cell::RefCell;
use std::ffi::{c_int, c_long, c_void};
use std::io::{IsTerminal, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::time::Instant;

use barellama_core::cli::{self, Host};
use barellama_core::error::{text, Error, Result};
use barellama_core::hosted::{available_threads, read_line, CountingAlloc, Pool};
use barellama_core::io::Output;
use barellama_core::{Exec, Isa};
use rustix::fs::{fstat, open, FileType, Mode, OFlags};
use rustix::mm::{madvise, mmap, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};

/// How a mapped model file is made resident, so that the first token does
/// not pay for page faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefault {
    /// `MAP_POPULATE`: `mmap` itself reads the whole file in. Linux only.
    #[cfg(target_os = "linux")]
    Populate,
    /// `madvise(WILLNEED)` to start the reads, then one read of every page
    /// to wait for them: for kernels without `MAP_POPULATE` (macOS). It
    /// works on every POSIX system, so it is tested on Linux too.
    AdviseAndTouch,
}

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

/// The [`Host`] of a POSIX operating system.
pub struct PosixHost {
    maps: RefCell<Vec<Mapping>>,
    start: Instant,
    alloc: &'static CountingAlloc,
    pool: Pool,
    prefault: Prefault,
}

impl PosixHost {
    /// A host whose allocation count comes from `alloc`, the process's
    /// `#[global_allocator]`, and which maps files resident by `prefault`.
    pub fn new(alloc: &'static CountingAlloc, prefault: Prefault) -> Self {
        PosixHost {
            maps: RefCell::new(Vec::new()),
            start: Instant::now(),
            alloc,
            pool: Pool::new(),
            prefault,
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

/// Starts the kernel reading `bytes`, the whole mapping at `ptr`, and reads
/// one byte of every page so that all of it is resident on return.
fn advise_and_touch(ptr: *mut c_void, bytes: &[u8]) {
    // SAFETY: `ptr` and `bytes.len()` are exactly a mapping this host has
    // just made; WILLNEED is advice and changes no memory. Failing advice
    // costs only speed, so its result is ignored.
    let _ = unsafe { madvise(ptr, bytes.len(), Advice::WillNeed) };
    let touched = bytes
        .iter()
        .step_by(rustix::param::page_size())
        .fold(0u8, |acc, &b| acc ^ b);
    // The fold's result is unused: keep the optimiser from dropping the reads.
    std::hint::black_box(touched);
}

/// `struct rusage` as `getrusage` writes it on Linux (the kernel's layout,
/// which glibc and musl pass through) and on macOS: two `struct timeval`s,
/// each as wide as two `long`s (macOS pads its `int` microseconds), then
/// `ru_maxrss` and thirteen more `long` counters.
#[repr(C)]
#[derive(Default)]
struct Rusage {
    times: [c_long; 4],
    maxrss: c_long,
    counters: [c_long; 13],
}

/// `RUSAGE_SELF` on Linux and macOS.
const RUSAGE_SELF: c_int = 0;

// SAFETY: this is the C library's `int getrusage(int, struct rusage *)`
// (rustix has no wrapper), and `Rusage` is laid out as that struct, so a
// `&mut Rusage` is a valid, exclusive pointer for it to write.
unsafe extern "C" {
    safe fn getrusage(who: c_int, usage: &mut Rusage) -> c_int;
}

/// Peak resident memory of this process in bytes, 0 if unknown.
/// `ru_maxrss` counts kilobytes on Linux and bytes on macOS (getrusage(2)).
fn peak_rss_bytes() -> u64 {
    const UNIT: u64 = if cfg!(target_os = "macos") { 1 } else { 1024 };
    let mut usage = Rusage::default();
    match getrusage(RUSAGE_SELF, &mut usage) {
        0 => u64::try_from(usage.maxrss).map_or(0, |n| n.saturating_mul(UNIT)),
        _ => 0,
    }
}

impl Host for PosixHost {
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
        let map_flags = match self.prefault {
            #[cfg(target_os = "linux")]
            Prefault::Populate => MapFlags::PRIVATE | MapFlags::POPULATE,
            Prefault::AdviseAndTouch => MapFlags::PRIVATE,
        };
        // SAFETY: a fresh private read-only mapping of a regular file; the
        // kernel picks the address. Nothing else aliases it mutably. (A file
        // truncated by another process while mapped raises SIGBUS, as for
        // every mmap-based reader.)
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                map_flags,
                &fd,
                0,
            )
        }
        .map_err(|e| fail("cannot map", e.raw_os_error()))?;
        self.keep(ptr, len);
        // SAFETY: the mapping is `len` readable bytes and stays mapped until
        // `self` is dropped, which outlives the returned borrow.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
        if self.prefault == Prefault::AdviseAndTouch {
            advise_and_touch(ptr, bytes);
        }
        Ok(bytes)
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
        peak_rss_bytes()
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

/// Runs the command line of this process on `host` and returns its exit
/// code.
pub fn main(host: &PosixHost) -> i32 {
    let args: Vec<Vec<u8>> = std::env::args_os().skip(1).map(|a| a.into_vec()).collect();
    let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    cli::main(host, &argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use barellama_tests::TempDir;

    static ALLOC: CountingAlloc = CountingAlloc::new();

    /// Every strategy this OS has.
    const STRATEGIES: &[Prefault] = &[
        #[cfg(target_os = "linux")]
        Prefault::Populate,
        Prefault::AdviseAndTouch,
    ];

    fn path(p: &std::path::Path) -> &[u8] {
        p.to_str().unwrap().as_bytes()
    }

    #[test]
    fn every_strategy_maps_the_file_as_it_is() {
        let tmp = TempDir::new("posix-map");
        // Several pages and a ragged tail, so the last page is partial.
        let page = rustix::param::page_size();
        let data: Vec<u8> = (0..3 * page + 17)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        std::fs::write(tmp.path("data.bin"), &data).unwrap();
        std::fs::write(tmp.path("empty.bin"), b"").unwrap();
        for &prefault in STRATEGIES {
            let host = PosixHost::new(&ALLOC, prefault);
            assert_eq!(host.map(path(&tmp.path("data.bin"))), Ok(&data[..]));
            assert_eq!(host.map(path(&tmp.path("empty.bin"))), Ok(&[][..]));
            let err = host.map(path(&tmp.path("."))).unwrap_err();
            assert!(matches!(
                err,
                Error::File {
                    problem: "is not a regular file",
                    ..
                }
            ));
            let err = host.map(path(&tmp.path("missing.bin"))).unwrap_err();
            assert!(matches!(
                err,
                Error::File {
                    problem: "cannot open",
                    ..
                }
            ));
        }
    }

    #[test]
    fn arenas_are_zeroed_aligned_and_distinct() {
        let host = PosixHost::new(&ALLOC, Prefault::AdviseAndTouch);
        let a = host.memory(100).unwrap();
        let b = host.memory(0).unwrap();
        assert!(a.iter().all(|&x| x == 0) && a.len() == 100 && b.is_empty());
        assert_eq!(a.as_ptr() as usize % 64, 0);
        a.fill(1);
        assert_ne!(a.as_ptr(), b.as_ptr());
    }

    /// `getrusage` sees memory this process touched, in bytes.
    #[test]
    fn peak_rss_counts_touched_memory() {
        const MB64: usize = 64 << 20;
        let host = PosixHost::new(&ALLOC, Prefault::AdviseAndTouch);
        host.memory(MB64).unwrap().fill(1);
        let peak = host.peak_rss_bytes();
        assert!(peak >= MB64 as u64, "peak RSS {peak} after touching 64 MiB");
        // Linux also publishes the same high-water mark in kilobytes.
        #[cfg(target_os = "linux")]
        {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .unwrap();
            let hwm: u64 = hwm.trim().trim_end_matches("kB").trim().parse().unwrap();
            // Other tests run beside this one and may raise the mark between reads.
            assert!(
                peak.abs_diff(hwm * 1024) < 16 << 20,
                "{peak} vs VmHWM {hwm} kB"
            );
        }
    }
}
