//! What every operating-system host shares, so host crates stay thin and
//! never repeat each other: allocation counting for the zero-allocation
//! guarantee and the process's thread pool. Only built with the `std`
//! feature; the `no_std` inference path never uses it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::OnceCell;
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::exec::{Exec, ThreadPool};

/// Cores this process may use: the default thread count.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The process's worker threads, started on first use.
#[derive(Default)]
pub struct Pool(OnceCell<ThreadPool>);

impl Pool {
    pub fn new() -> Self {
        Pool(OnceCell::new())
    }

    /// The executor for `threads` threads; a process has one pool, so a
    /// later call must ask for the same size.
    pub fn exec(&self, threads: usize) -> Result<&dyn Exec> {
        if let Some(pool) = self.0.get() {
            return match pool.threads() == threads {
                true => Ok(pool),
                false => Err(Error::Threads { threads, errno: 0 }),
            };
        }
        let pool = ThreadPool::new(threads).map_err(|e| Error::Threads {
            threads,
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        Ok(self.0.get_or_init(|| pool))
    }
}

/// Reads one line of `input` into `line`, without its newline; `None` at
/// the end of input, or when a read is interrupted and `stop` says so (a
/// Ctrl-C at a chat's prompt). A longer line is read to its end and
/// refused. Reads through `input`'s own buffer: no allocation per line.
pub fn read_line(
    input: &mut impl BufRead,
    line: &mut [u8],
    stop: impl Fn() -> bool,
) -> Result<Option<usize>> {
    let (mut len, mut any) = (0usize, false);
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => match stop() {
                true => return Ok(None),
                false => continue,
            },
            Err(e) => {
                return Err(Error::File {
                    path: crate::error::text(b"standard input"),
                    problem: "cannot be read",
                    errno: e.raw_os_error().unwrap_or(0),
                })
            }
        };
        if buf.is_empty() {
            break;
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        if let Some(room) = line.get_mut(len..) {
            let n = chunk.len().min(room.len());
            room[..n].copy_from_slice(&chunk[..n]);
        }
        len += chunk.len();
        let used = chunk.len() + usize::from(newline.is_some());
        input.consume(used);
        if newline.is_some() {
            break;
        }
    }
    match (any, len <= line.len()) {
        (false, _) => Ok(None),
        (true, true) => Ok(Some(len)),
        (true, false) => Err(Error::PromptTooLong {
            bytes: len,
            max: line.len(),
        }),
    }
}

/// The system allocator, counting calls. Hosts and tests install it as
/// `#[global_allocator]` to show that decoding performs no allocation.
pub struct CountingAlloc {
    allocations: AtomicU64,
}

impl CountingAlloc {
    pub const fn new() -> Self {
        CountingAlloc {
            allocations: AtomicU64::new(0),
        }
    }

    /// Allocations (including reallocations) since the process started.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is a relaxed atomic
// with no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_one_at_a_time_and_long_ones_refused() {
        let mut input = std::io::BufReader::with_capacity(3, &b"ab\n\nlonger line\nend"[..]);
        let mut line = [0u8; 8];
        let mut next =
            || read_line(&mut input, &mut line, || false).map(|n| n.map(|n| line[..n].to_vec()));
        assert_eq!(next(), Ok(Some(b"ab".to_vec())));
        assert_eq!(next(), Ok(Some(b"".to_vec())));
        assert_eq!(next(), Err(Error::PromptTooLong { bytes: 11, max: 8 }));
        assert_eq!(next(), Ok(Some(b"end".to_vec())));
        assert_eq!(next(), Ok(None));
    }
}
