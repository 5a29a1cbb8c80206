//! The Linux host: the shared [`PosixHost`] mapping model files with
//! `MAP_POPULATE`, so that `mmap` itself reads the file in and the first
//! token does not pay for page faults. The binary is `main.rs`; this
//! library lets tests drive the same host in-process. On other operating
//! systems the crate is empty and builds no binary.
#![cfg(target_os = "linux")]

use barellama_core::hosted::CountingAlloc;
use barellama_posix::{PosixHost, Prefault};

/// The Linux host, counting allocations with `alloc`, the process's
/// `#[global_allocator]`.
pub fn host(alloc: &'static CountingAlloc) -> PosixHost {
    PosixHost::new(alloc, Prefault::Populate)
}

/// Runs the command line of this process and returns its exit code.
pub fn main(alloc: &'static CountingAlloc) -> i32 {
    barellama_posix::main(&host(alloc))
}
