//! Kernel benchmarks live in `benches/`; see issue 3.
