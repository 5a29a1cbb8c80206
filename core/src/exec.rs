//! Parallel loops without allocation and without giving up determinism.
//!
//! An [`Exec`] runs one task on several threads at once. Work inside the
//! task is claimed chunk by chunk from an atomic counter, so every chunk is
//! computed exactly once whichever thread takes it — and because a chunk's
//! numbers never depend on who computes it (rows and heads are independent,
//! each summed in its own fixed order), the results are bitwise identical
//! for 1, 2, 3, … threads.
//!
//! [`SingleThread`] is the `no_std` executor; firmware can implement `Exec`
//! over its own cores. With the `std` feature, [`ThreadPool`] keeps worker
//! threads alive across calls: woken per parallel region (spin briefly,
//! then park), never spawned or allocated per token.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::kernels::Isa;

/// Runs a task on several threads at once.
///
/// `run` must call `task` on each of its worker threads (possibly none)
/// while the caller waits, and return only when every call has returned.
/// Which thread does which part of the work is decided inside the task, so
/// an executor cannot make two threads touch the same data; at worst it
/// leaves work to the caller, who finishes whatever was not claimed.
pub trait Exec: Sync {
    /// Threads that work on a parallel region, the caller's included.
    fn threads(&self) -> usize;

    /// Calls `task` on the worker threads and returns when all are done.
    fn run(&self, task: &(dyn Fn() + Sync));
}

/// Where the arithmetic runs: the kernels' instruction set and the threads.
#[derive(Clone, Copy)]
pub struct Compute<'e> {
    pub isa: Isa,
    pub exec: &'e dyn Exec,
}

impl Compute<'static> {
    /// `isa` on the calling thread only.
    pub fn single(isa: Isa) -> Self {
        Compute {
            isa,
            exec: &SingleThread,
        }
    }
}

/// Everything on the calling thread: the `no_std` executor.
pub struct SingleThread;

impl Exec for SingleThread {
    fn threads(&self) -> usize {
        1
    }

    fn run(&self, _task: &(dyn Fn() + Sync)) {}
}

/// Calls `body(i)` for every `i` in `0..n` across `exec`'s threads, each
/// index exactly once.
pub fn for_each(exec: &dyn Exec, n: usize, body: &(dyn Fn(usize) + Sync)) {
    let next = AtomicUsize::new(0);
    let task = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        body(i);
    };
    if n > 1 && exec.threads() > 1 {
        exec.run(&task);
    }
    // The caller takes whatever the workers left (everything, alone).
    task();
}

/// A mutable slice cut into `chunk`-sized parts for parallel tasks.
struct Parts<'a, T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    _slice: PhantomData<&'a mut [T]>,
}

// SAFETY: `Parts` only hands out disjoint `&mut [T]` (see `take`), which
// may be sent to and used from any thread when `T: Send`, as `&mut [T]`
// itself may.
unsafe impl<T: Send> Sync for Parts<'_, T> {}

impl<'a, T> Parts<'a, T> {
    fn new(slice: &'a mut [T], chunk: usize) -> Self {
        Parts {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            chunk,
            _slice: PhantomData,
        }
    }

    /// Part `i`, or an empty slice past the end.
    ///
    /// # Safety
    /// No index may be taken twice while the parts exist.
    unsafe fn take(&self, i: usize) -> &'a mut [T] {
        let start = (i * self.chunk).min(self.len);
        let end = (start + self.chunk).min(self.len);
        // SAFETY: `start..end` lies inside the slice `Parts` borrows
        // mutably for 'a, and distinct `i` give disjoint ranges, so this is
        // the only reference to those elements.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// Output rows handed out together, as a multiple of this: 16 `f32` are one
/// cache line, so two threads never write the same line.
pub const ROW_GRANULE: usize = 16;

/// Whole cache lines of rows, about sixteen chunks per thread.
fn rows_per_task(rows: usize, threads: usize) -> usize {
    rows.div_ceil(16 * threads)
        .next_multiple_of(ROW_GRANULE)
        .max(ROW_GRANULE)
}

/// Computes `out` in parallel chunks of rows: `f(first_row, chunk)` fills
/// `chunk`, the rows `first_row..first_row + chunk.len()`. Chunks are whole
/// cache lines and about sixteen per thread, so the last chunks to finish
/// leave little idle time whatever the split.
pub fn for_rows(exec: &dyn Exec, out: &mut [f32], f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    if exec.threads() == 1 {
        return f(0, out);
    }
    let rows = out.len();
    let per_task = rows_per_task(rows, exec.threads());
    let parts = Parts::new(out, per_task);
    for_each(exec, rows.div_ceil(per_task), &|i| {
        // SAFETY: `for_each` gives each index to exactly one call.
        f(i * per_task, unsafe { parts.take(i) })
    });
}

/// Rows `start..end` of every token's output in a `[tokens][rows]` buffer:
/// one parallel task's share of a batched matmul.
pub struct RowBlock<'p> {
    ptr: *mut f32,
    rows: usize,
    tokens: usize,
    pub start: usize,
    pub end: usize,
    _out: PhantomData<&'p mut [f32]>,
}

impl RowBlock<'_> {
    /// Every token's rows `start..end`, token after token.
    pub fn outs(&mut self) -> impl Iterator<Item = &mut [f32]> + '_ {
        let (ptr, rows, start, len) = (self.ptr, self.rows, self.start, self.end - self.start);
        (0..self.tokens).map(move |t| {
            // SAFETY: the block was made by `for_row_blocks` from a buffer
            // of `tokens × rows` floats borrowed mutably for 'p; `start..end`
            // lies within `rows`, so token `t`'s range is in bounds, distinct
            // tokens' ranges are disjoint, no other block covers these rows,
            // and the slices live no longer than this `&mut self`.
            unsafe { core::slice::from_raw_parts_mut(ptr.add(t * rows + start), len) }
        })
    }
}

/// The output pointer shared by the tasks of [`for_row_blocks`].
struct SharedOut(*mut f32);

impl SharedOut {
    /// A method, not the field: a closure must capture the `Sync` wrapper.
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

// SAFETY: tasks only reach the buffer through `RowBlock`s of disjoint row
// ranges, so sharing the pointer never lets two threads touch one float.
unsafe impl Sync for SharedOut {}

/// [`for_rows`] for `tokens` outputs at once (`out` is `[tokens][rows]`):
/// each task gets the same rows of every token, so it can read a weight
/// row once for all of them. Chunks are split exactly as `for_rows` splits
/// one output.
pub fn for_row_blocks(
    exec: &dyn Exec,
    out: &mut [f32],
    rows: usize,
    f: &(dyn Fn(RowBlock<'_>) + Sync),
) {
    let per_task = match exec.threads() {
        1 => rows,
        threads => rows_per_task(rows, threads),
    };
    blocks(exec, out, rows, per_task.max(1), &|_, block| f(block));
}

/// Calls `f(i, block)` for every block of `per_task` rows (the last one
/// possibly shorter) of every token's output, in parallel; `out` is
/// `[tokens][rows]`.
fn blocks(
    exec: &dyn Exec,
    out: &mut [f32],
    rows: usize,
    per_task: usize,
    f: &(dyn Fn(usize, RowBlock<'_>) + Sync),
) {
    let tokens = out.len().checked_div(rows).unwrap_or(0);
    assert_eq!(tokens * rows, out.len(), "row blocks: lengths");
    let shared = SharedOut(out.as_mut_ptr());
    for_each(exec, rows.div_ceil(per_task), &|i| {
        let start = i * per_task;
        f(
            i,
            RowBlock {
                ptr: shared.ptr(),
                rows,
                tokens,
                start,
                end: (start + per_task).min(rows),
                _out: PhantomData,
            },
        )
    });
}

/// Runs `f(h, a_h, block_h)` for every head `h` in parallel, where `a_h`
/// is the `h`-th `a_chunk`-sized part of `a` and `block_h` the rows
/// `h·head_size..(h + 1)·head_size` of every token's output in `out`
/// (`[tokens][rows]`): attention of one query head for every token of a
/// batch, so a batch costs one parallel region per layer, not one per
/// token.
pub fn for_each_head<A: Send>(
    exec: &dyn Exec,
    a: &mut [A],
    a_chunk: usize,
    out: &mut [f32],
    rows: usize,
    head_size: usize,
    f: &(dyn Fn(usize, &mut [A], RowBlock<'_>) + Sync),
) {
    assert!(
        head_size > 0 && a.len() >= rows.div_ceil(head_size) * a_chunk,
        "for_each_head: lengths"
    );
    let a = Parts::new(a, a_chunk);
    blocks(exec, out, rows, head_size, &|h, block| {
        // SAFETY: `blocks` gives each index to exactly one call.
        f(h, unsafe { a.take(h) }, block)
    });
}

/// The body of [`for_each_pair`]: index, then its parts of `a` and `b`.
pub type PairTask<'f, A = f32, B = f32> = dyn Fn(usize, &mut [A], &mut [B]) + Sync + 'f;

/// Runs `f(i, a_i, b_i)` for every `i` in `0..n` in parallel, where `a_i`
/// and `b_i` are the `i`-th `a_chunk`- and `b_chunk`-sized parts of `a` and
/// `b` (attention: one query head's scores and output; a KV cache copy:
/// one layer's keys and values).
pub fn for_each_pair<A: Send, B: Send>(
    exec: &dyn Exec,
    n: usize,
    a: &mut [A],
    a_chunk: usize,
    b: &mut [B],
    b_chunk: usize,
    f: &PairTask<'_, A, B>,
) {
    assert!(
        a.len() >= n * a_chunk && b.len() >= n * b_chunk,
        "for_each_pair: lengths"
    );
    let (a, b) = (Parts::new(a, a_chunk), Parts::new(b, b_chunk));
    for_each(exec, n, &|i| {
        // SAFETY: `for_each` gives each index to exactly one call.
        f(i, unsafe { a.take(i) }, unsafe { b.take(i) })
    });
}

#[cfg(feature = "std")]
pub use pool::ThreadPool;

#[cfg(feature = "std")]
mod pool {
    use super::Exec;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::thread::{self, JoinHandle, Thread};
    use std::vec::Vec;

    /// Spins this many times (tens of microseconds) waiting before parking
    /// or yielding: long enough to bridge the gaps between a token's
    /// parallel regions, short enough not to hold a core that another
    /// thread needs when there are more threads than cores.
    const SPIN: u32 = 1 << 12;

    /// The task of the current parallel region, its lifetime erased.
    #[derive(Clone, Copy)]
    struct Job(*const (dyn Fn() + Sync + 'static));

    // SAFETY: the pointee is `Sync`, and `ThreadPool::run` keeps it alive
    // until every worker that took this pointer has finished with it.
    unsafe impl Send for Job {}

    struct Shared {
        /// The current region's task while it is open to joiners.
        job: Mutex<Option<Job>>,
        /// Bumped once per region; idle workers wait for a new value.
        epoch: AtomicU64,
        /// Workers that took the current task and have not finished it.
        active: AtomicUsize,
        /// Workers parked (or about to park) waiting for an epoch.
        sleeping: AtomicUsize,
        /// Workers that have started (start-up only).
        started: AtomicUsize,
        panicked: AtomicBool,
        shutdown: AtomicBool,
    }

    impl Shared {
        fn job(&self) -> MutexGuard<'_, Option<Job>> {
            self.job.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// Worker threads started once and reused for every parallel region.
    ///
    /// A region publishes its task; each worker that wakes while it is
    /// published joins in, and the caller works too. Work is claimed inside
    /// the task, so the caller can close the region as soon as its own share
    /// runs dry and wait only for workers that actually joined: a worker
    /// the OS has not scheduled yet delays nothing.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        threads: Vec<Thread>,
        handles: Vec<JoinHandle<()>>,
    }

    impl ThreadPool {
        /// A pool that runs regions on `threads` threads: the caller plus
        /// `threads - 1` workers started now. 0 is taken as 1.
        pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
            let shared = Arc::new(Shared {
                job: Mutex::new(None),
                epoch: AtomicU64::new(0),
                active: AtomicUsize::new(0),
                sleeping: AtomicUsize::new(0),
                started: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
            });
            // Built up worker by worker, so a failed spawn drops (and so
            // stops and joins) the workers already started.
            let mut pool = ThreadPool {
                shared,
                threads: Vec::new(),
                handles: Vec::new(),
            };
            for i in 1..threads.max(1) {
                let shared = Arc::clone(&pool.shared);
                let handle = thread::Builder::new()
                    .name(std::format!("barellama-{i}"))
                    .spawn(move || worker(&shared))?;
                pool.threads.push(handle.thread().clone());
                pool.handles.push(handle);
            }
            // A starting thread allocates (std copies its name for the
            // stack-overflow handler): wait until every worker runs, so
            // that happens now and not during the first token.
            while pool.shared.started.load(Ordering::Acquire) < pool.handles.len() {
                thread::yield_now();
            }
            Ok(pool)
        }

        /// Bumps the epoch and wakes every parked worker.
        fn publish(&self) {
            self.shared.epoch.fetch_add(1, Ordering::SeqCst);
            if self.shared.sleeping.load(Ordering::SeqCst) > 0 {
                for t in &self.threads {
                    t.unpark();
                }
            }
        }
    }

    fn worker(shared: &Shared) {
        shared.started.fetch_add(1, Ordering::Release);
        let mut seen = 0;
        loop {
            let mut spins = 0;
            while shared.epoch.load(Ordering::Acquire) == seen {
                if spins < SPIN {
                    spins += 1;
                    core::hint::spin_loop();
                    continue;
                }
                // Announce the nap, then look once more: a publisher that
                // bumped the epoch before seeing us asleep is caught here.
                shared.sleeping.fetch_add(1, Ordering::SeqCst);
                if shared.epoch.load(Ordering::SeqCst) == seen {
                    thread::park();
                }
                shared.sleeping.fetch_sub(1, Ordering::SeqCst);
            }
            seen = shared.epoch.load(Ordering::Acquire);
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            let job = {
                let job = shared.job();
                if job.is_some() {
                    // Joined under the lock, so a closing caller sees us.
                    shared.active.fetch_add(1, Ordering::Relaxed);
                }
                *job
            };
            if let Some(Job(task)) = job {
                // SAFETY: the task was published and we registered as
                // active while it still was; `run` does not return (and the
                // task's borrow does not end) until `active` drops to zero.
                let task = unsafe { &*task };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
                    shared.panicked.store(true, Ordering::Release);
                }
                shared.active.fetch_sub(1, Ordering::Release);
            }
        }
    }

    /// Closes the region and waits for the workers that joined it, even
    /// while the caller unwinds from a panic in its own share: the task
    /// must outlive every worker running it.
    struct Close<'p>(&'p Shared);

    impl Drop for Close<'_> {
        fn drop(&mut self) {
            *self.0.job() = None;
            let mut spins = 0;
            while self.0.active.load(Ordering::Acquire) > 0 {
                if spins < SPIN {
                    spins += 1;
                    core::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
            }
        }
    }

    impl Exec for ThreadPool {
        fn threads(&self) -> usize {
            self.handles.len() + 1
        }

        fn run(&self, task: &(dyn Fn() + Sync)) {
            if self.handles.is_empty() {
                return;
            }
            // SAFETY: only the lifetime is erased. `Close` below unpublishes
            // the pointer and then blocks until every worker that took it
            // has finished, before `task`'s borrow ends.
            let job: *const (dyn Fn() + Sync + 'static) =
                unsafe { core::mem::transmute(task as *const (dyn Fn() + Sync)) };
            // A flag left by a region whose caller unwound has been reported.
            self.shared.panicked.store(false, Ordering::Relaxed);
            *self.shared.job() = Some(Job(job));
            let close = Close(&self.shared);
            self.publish();
            task();
            drop(close);
            if self.shared.panicked.swap(false, Ordering::AcqRel) {
                panic!("a barellama worker thread panicked");
            }
        }
    }

    impl Drop for ThreadPool {
        /// Stops and joins every worker.
        fn drop(&mut self) {
            self.shared.shutdown.store(true, Ordering::Release);
            self.publish();
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_thread_covers_every_row_once() {
        let mut out = std::vec![0.0f32; 1000];
        for_rows(&SingleThread, &mut out, &|start, chunk| {
            for (i, o) in chunk.iter_mut().enumerate() {
                *o += (start + i) as f32;
            }
        });
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32));
    }

    #[cfg(feature = "std")]
    #[test]
    fn pools_of_any_size_cover_every_row_pair_and_head_once() {
        for threads in [1, 2, 3, 4, 7] {
            let pool = ThreadPool::new(threads).unwrap();
            for rows in [0, 1, 15, 16, 17, 100, 768, 2049] {
                let mut out = std::vec![0.0f32; rows];
                for _ in 0..3 {
                    for_rows(&pool, &mut out, &|start, chunk| {
                        for (i, o) in chunk.iter_mut().enumerate() {
                            *o += (start + i) as f32;
                        }
                    });
                }
                assert!(
                    out.iter().enumerate().all(|(i, &v)| v == 3.0 * i as f32),
                    "{threads} {rows}"
                );
            }
            let (mut a, mut b) = (std::vec![0.0f32; 12 * 5], std::vec![0.0f32; 12 * 3]);
            for_each_pair(&pool, 12, &mut a, 5, &mut b, 3, &|i, x, y| {
                x.fill(i as f32);
                y.fill(-(i as f32));
            });
            let want_a: std::vec::Vec<f32> = (0..60).map(|j| (j / 5) as f32).collect();
            let want_b: std::vec::Vec<f32> = (0..36).map(|j| -((j / 3) as f32)).collect();
            assert_eq!((a, b), (want_a, want_b));
            // Three tokens of five heads of size 4 (the last one short).
            let (mut att, mut out) = (std::vec![0u8; 5 * 2], std::vec![0.0f32; 3 * 18]);
            for_each_head(&pool, &mut att, 2, &mut out, 18, 4, &|h, att, mut block| {
                att.fill(h as u8 + 1);
                for (t, o) in block.outs().enumerate() {
                    o.fill((10 * t + h) as f32);
                }
            });
            let want: std::vec::Vec<f32> = (0..54)
                .map(|j| (10 * (j / 18) + j % 18 / 4) as f32)
                .collect();
            assert_eq!(att, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
            assert_eq!(out, want, "{threads} threads");
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn more_threads_than_rows_is_fine_and_drop_joins() {
        let pool = ThreadPool::new(8).unwrap();
        let mut out = [0.0f32; 3];
        for_rows(&pool, &mut out, &|start, chunk| {
            for (i, o) in chunk.iter_mut().enumerate() {
                *o = (start + i) as f32 + 1.0;
            }
        });
        assert_eq!(out, [1.0, 2.0, 3.0]);
        drop(pool);
    }

    #[cfg(feature = "std")]
    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let pool = ThreadPool::new(3).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = std::vec![0.0f32; 64 * 16];
            for_rows(&pool, &mut out, &|start, _| {
                assert!(start == 0, "only the first chunk survives");
            });
        }));
        assert!(caught.is_err());
        let mut out = std::vec![0.0f32; 64];
        for_rows(&pool, &mut out, &|_, chunk| chunk.fill(1.0));
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
