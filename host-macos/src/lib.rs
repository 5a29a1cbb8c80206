//! The macOS host: the shared [`PosixHost`] mapping model files with
//! `madvise(WILLNEED)` and a read of every page, because macOS has no
//! `MAP_POPULATE`; that is the only difference from the Linux host.
//!
//! CPU detection needs nothing of its own: on `aarch64-apple-darwin` NEON,
//! dotprod and fp16 are target features of the baseline (Apple M1), and
//! `is_aarch64_feature_detected!` answers from those at compile time, so
//! [`barellama_core::Isa::detect`] picks NEON with `sdot` on every Apple
//! silicon Mac (and AVX2/AVX-512 by CPUID on an Intel Mac).
//!
//! Build and run on a Mac with `cargo build --release -p barellama-macos`
//! (`cargo run --release -p barellama-macos -- bench`). Elsewhere the crate
//! builds no binary, so that a Linux build has one `barellama`; the
//! library and its tests still build and run there.

use barellama_core::hosted::CountingAlloc;
use barellama_posix::{PosixHost, Prefault};

/// The macOS host, counting allocations with `alloc`, the process's
/// `#[global_allocator]`.
pub fn host(alloc: &'static CountingAlloc) -> PosixHost {
    PosixHost::new(alloc, Prefault::AdviseAndTouch)
}

/// Runs the command line of this process and returns its exit code.
pub fn main(alloc: &'static CountingAlloc) -> i32 {
    barellama_posix::main(&host(alloc))
}
