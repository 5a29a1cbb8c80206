//! `barellama` for macOS.

use barellama_core::hosted::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

fn main() {
    std::process::exit(barellama_macos::main(&ALLOC));
}
