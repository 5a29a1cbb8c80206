//! What every operating-system host shares, so host crates stay thin and
//! never repeat each other: allocation counting for the zero-allocation
//! guarantee and the process's thread pool. Only built with the `std`
//! feature; the `no_std` inference path never uses it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::OnceCell;
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
