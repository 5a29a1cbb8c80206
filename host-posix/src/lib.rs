//! The [`Host`] that the Linux and macOS hosts share, so neither repeats
//! the other: files mapped with rustix `mmap`, arenas from anonymous
//! mappings, output files, the clock, peak RSS, allocation counting, CPU
//! detection and the thread pool. The hosts differ in one choice, how a
//! model file is made resident before the first token ([`Prefault`]);
//! everything else that differs between the kernels underneath (the unit of
//! `ru_maxrss`) is decided here by `cfg`, because it depends on the OS the
//! process runs on, not on which host crate made it.

use std::cell::{OnceCell, RefCell};
use std::ffi::{c_int, c_long, c_void};
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use barellama_core::cli::{self, Host};
use barellama_core::error::{text, Error, Result};
use barellama_core::hosted::{available_threads, read_line, CountingAlloc, Pool};
use barellama_core::io::Output;
use barellama_core::{Exec, Isa};
use rustix::fs::{fstat, fsync, open, rename, stat, unlink, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
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
    /// Every file mapped so far, which `create` refuses to replace.
    inputs: RefCell<Vec<Stat>>,
    start: Instant,
    alloc: &'static CountingAlloc,
    pool: Pool,
    prefault: Prefault,
    /// All of standard input once `-f -` asked for it, or the errno that
    /// stopped the read.
    stdin: OnceCell<std::result::Result<Vec<u8>, i32>>,
}

impl PosixHost {
    /// A host whose allocation count comes from `alloc`, the process's
    /// `#[global_allocator]`, and which maps files resident by `prefault`.
    pub fn new(alloc: &'static CountingAlloc, prefault: Prefault) -> Self {
        PosixHost {
            maps: RefCell::new(Vec::new()),
            inputs: RefCell::new(Vec::new()),
            start: Instant::now(),
            alloc,
            pool: Pool::new(),
            prefault,
            stdin: OnceCell::new(),
        }
    }

    fn keep(&self, ptr: *mut c_void, len: usize) {
        self.maps.borrow_mut().push(Mapping { ptr, len });
    }
}

/// An output file. A regular file is written as a temporary file in its
/// directory, which [`Host::commit`] flushes to the disk and renames over
/// the path, so that the path holds the old file or the whole new one,
/// never a part; dropped uncommitted (a failed or abandoned command), the
/// temporary file is removed. A device or FIFO (`/dev/null`) cannot be
/// replaced and is written in place.
pub struct File {
    fd: OwnedFd,
    /// The temporary file and the path it becomes; `None` for a file
    /// written in place, and once committed.
    rename: Option<(Vec<u8>, Vec<u8>)>,
}

impl Drop for File {
    fn drop(&mut self) {
        if let Some((temp, _)) = &self.rename {
            let _ = unlink(temp.as_slice());
        }
    }
}

/// Numbers the temporary files of this process: with the process id, a
/// name no other writer uses (hosts in one process share it).
static TEMP_FILES: AtomicU32 = AtomicU32::new(0);

/// How many names [`temporary`] tries before it gives up.
const TEMP_TRIES: usize = 100;

/// Opens a new temporary file, mode 0644 before the umask, in the
/// directory of `path`; its path and descriptor. Created exclusively: a
/// name left by a killed process whose id this one reuses is skipped.
fn temporary(path: &[u8]) -> Result<(Vec<u8>, OwnedFd)> {
    let dir = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let mut error = Errno::EXIST;
    for _ in 0..TEMP_TRIES {
        let n = TEMP_FILES.fetch_add(1, Ordering::Relaxed);
        let mut temp = path[..dir].to_vec();
        temp.extend_from_slice(format!(".barellama-{}-{n}.tmp", std::process::id()).as_bytes());
        match open(temp.as_slice(), flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => return Ok((temp, fd)),
            Err(e) => error = e,
        }
        if error != Errno::EXIST {
            break;
        }
    }
    Err(Error::File {
        path: text(path),
        problem: "cannot create a temporary file in its directory",
        errno: error.raw_os_error(),
    })
}

/// Whether two `stat`s are of one file (through any link).
fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

impl Output for File {
    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = rustix::io::write(&self.fd, bytes).map_err(|e| Error::Io {
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

/// Set by the SIGINT handler once interrupts are caught; taken by
/// [`Host::interrupted`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The SIGINT handler: one atomic store, which is async-signal-safe.
extern "C" fn on_interrupt(_signal: c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT on Linux and macOS.
const SIGINT: c_int = 2;

// SAFETY: the C library's `sighandler_t signal(int, sighandler_t)` and
// `int siginterrupt(int, int)` (rustix has no wrappers); a handler is a
// C function pointer, and the returned previous handler is an address.
unsafe extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> *const c_void;
    fn siginterrupt(signum: c_int, flag: c_int) -> c_int;
}

/// The error of writing standard output: a closed pipe is its reader gone.
fn stdout_error(e: std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::BrokenPipe => Error::Closed {
            what: "standard output",
        },
        _ => Error::Io {
            what: "standard output",
            errno: e.raw_os_error().unwrap_or(0),
        },
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
        self.inputs.borrow_mut().push(st);
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

    /// `stat` follows symbolic links, so a link to an input is refused as
    /// the input itself is; a path that does not exist yet is new. A
    /// symbolic link to anything else is replaced by the file, not
    /// followed.
    fn create(&self, path: &[u8]) -> Result<File> {
        let fail = |problem, errno| Error::File {
            path: text(path),
            problem,
            errno,
        };
        if let Ok(st) = stat(path) {
            if self.inputs.borrow().iter().any(|i| same_file(i, &st)) {
                return Err(cli::same_file(path));
            }
            match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => {}
                FileType::Directory => return Err(fail("is a directory", 0)),
                _ => {
                    let flags = OFlags::WRONLY | OFlags::CLOEXEC;
                    let fd = open(path, flags, Mode::empty())
                        .map_err(|e| fail("cannot open", e.raw_os_error()))?;
                    return Ok(File { fd, rename: None });
                }
            }
        }
        let (temp, fd) = temporary(path)?;
        Ok(File {
            fd,
            rename: Some((temp, path.to_vec())),
        })
    }

    fn commit(&self, mut file: File) -> Result<()> {
        let Some((temp, path)) = &file.rename else {
            return Ok(());
        };
        let fail = |problem, e: Errno| Error::File {
            path: text(path),
            problem,
            errno: e.raw_os_error(),
        };
        fsync(&file.fd).map_err(|e| fail("cannot flush to the disk", e))?;
        rename(temp.as_slice(), path.as_slice()).map_err(|e| fail("cannot replace", e))?;
        file.rename = None;
        Ok(())
    }

    /// Through std's line-buffered stdout: a write per line.
    fn print(&self, bytes: &[u8]) -> Result<()> {
        std::io::stdout()
            .lock()
            .write_all(bytes)
            .map_err(stdout_error)
    }

    fn flush(&self) -> Result<()> {
        std::io::stdout().lock().flush().map_err(stdout_error)
    }

    fn eprint(&self, bytes: &[u8]) {
        let _ = std::io::stderr().lock().write_all(bytes);
    }

    fn interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn read_line(&self, line: &mut [u8]) -> Result<Option<usize>> {
        read_line(&mut std::io::stdin().lock(), line, || self.interrupted())
    }

    fn read_stdin(&self) -> Result<&[u8]> {
        let read = self.stdin.get_or_init(|| {
            let mut all = Vec::new();
            match std::io::stdin().lock().read_to_end(&mut all) {
                Ok(_) => Ok(all),
                Err(e) => Err(e.raw_os_error().unwrap_or(0)),
            }
        });
        read.as_deref().map_err(|&errno| Error::File {
            path: text(b"standard input"),
            problem: "cannot be read",
            errno,
        })
    }

    fn catch_interrupts(&self) {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `siginterrupt` makes a read that the signal
        // interrupts return EINTR instead of restarting, so a chat waiting
        // at its prompt sees it.
        unsafe {
            signal(SIGINT, on_interrupt);
            siginterrupt(SIGINT, 1);
        }
    }

    fn interrupted(&self) -> bool {
        INTERRUPTED.swap(false, Ordering::SeqCst)
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

    /// An output replaces its path only when committed; dropped, it leaves
    /// nothing behind. A mapped file, under any name, is never an output.
    #[test]
    fn outputs_replace_their_path_only_when_committed() {
        let tmp = TempDir::new("posix-create");
        let host = PosixHost::new(&ALLOC, Prefault::AdviseAndTouch);
        let (out, link) = (tmp.path("out.bin"), tmp.path("link.bin"));
        std::fs::write(&out, b"old").unwrap();
        let count = || std::fs::read_dir(tmp.path("")).unwrap().count();
        for commit in [false, true] {
            let mut file = host.create(path(&out)).unwrap();
            file.write(b"new").unwrap();
            assert_eq!(
                (std::fs::read(&out).unwrap(), count()),
                (b"old".to_vec(), 2)
            );
            if commit {
                host.commit(file).unwrap();
            }
        }
        assert_eq!(
            (std::fs::read(&out).unwrap(), count()),
            (b"new".to_vec(), 1)
        );
        std::fs::hard_link(&out, &link).unwrap();
        host.map(path(&out)).unwrap();
        let err = host.create(path(&link)).map(drop).unwrap_err();
        assert_eq!(err, cli::same_file(path(&link)));
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
