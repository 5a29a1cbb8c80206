//! Inputs shared by the kernel benchmarks in `benches/`: the stories110M
//! shapes and seeded random data, so every run measures the same work.

use barellama_core::rng::random_u32;

/// (rows, cols) of the stories110M matrices: wq/wk/wv/wo, w1/w3, w2, the classifier.
pub const SHAPES: [(usize, usize); 4] = [(768, 768), (2048, 768), (768, 2048), (32000, 768)];

/// `n` seeded values in [-1, 1).
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| (random_u32(&mut state) >> 8) as f32 / 8_388_608.0 - 1.0)
        .collect()
}

/// `values` as the little-endian bytes a weight image holds.
pub fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
