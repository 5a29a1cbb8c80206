//! Invariant 1 in the host's own generation path: the Linux host running
//! `barellama run --threads 2` allocates the same amount for 16 steps as
//! for 80, so the 64 extra decode steps (parallel regions, sampling,
//! detokenizing, printing) allocate nothing. No test harness: nothing else
//! may allocate while we count.

use barellama_core::cli;
use barellama_core::hosted::CountingAlloc;
use barellama_tests::data_dir;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

fn allocations(args: &[&str]) -> u64 {
    let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let host = barellama_linux::host(&ALLOC);
    let before = ALLOC.allocations();
    assert_eq!(cli::main(&host, &argv), 0, "{args:?}");
    ALLOC.allocations() - before
}

fn main() {
    let Some(dir) = data_dir() else { return };
    let m = dir.join("models/synsmall.bin");
    let z = dir.join("models/tok512.bin");
    let (m, z) = (m.to_str().unwrap(), z.to_str().unwrap());
    let run = |steps: &str| {
        allocations(&[
            "run", "-m", m, "-z", z, "-i", "Once", "-t", "0", "-n", steps,
        ])
    };
    // The first run also sets up stdout's buffer, once per process.
    run("2");
    let (short, long) = (run("16"), run("80"));
    println!("\nhost_alloc: run -n 16: {short} allocations, run -n 80: {long}");
    assert_eq!(short, long, "the 64 extra decode steps allocated");
}
