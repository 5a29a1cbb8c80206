//! llama2.c's random number generator, xorshift64*: the sampler draws its
//! coins from it (so a seed draws what it draws in llama2.c) and the
//! synthetic models their weights.

/// llama2.c's `random_u32`: xorshift64* returning the high 32 bits.
pub fn random_u32(state: &mut u64) -> u32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
}

/// llama2.c's `random_f32`: uniform in [0, 1) with 24 bits.
pub fn random_f32(state: &mut u64) -> f32 {
    (random_u32(state) >> 8) as f32 / 16_777_216.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_matches_llama2c_sequence() {
        // Printed by llama2.c's own random_u32 / random_f32 (gcc -O2), seed 42.
        let mut s = 42u64;
        let u: [u32; 4] = core::array::from_fn(|_| random_u32(&mut s));
        assert_eq!(u, [1456360119, 3359763283, 3393612768, 4054632243]);
        // (gcc evaluated printf's two random_f32() arguments right to left.)
        assert_eq!(random_f32(&mut s), f32::from_bits(0x3f43af4d));
        assert_eq!(random_f32(&mut s), f32::from_bits(0x3f55f30c));
        assert_eq!(s, 13894433480154566335);
    }
}
