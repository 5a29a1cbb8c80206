//! Picking the next token from logits: greedy, temperature, top-k, top-p.
//! The RNG is llama2.c's xorshift64*, so the same seed draws the same coins;
//! candidate ties are broken by token id so the choice is deterministic.

use crate::kernels::softmax;

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus threshold; outside (0, 1) it is off.
    pub topp: f32,
    /// Keep only the `topk` most likely tokens; 0 means off.
    pub topk: usize,
    /// xorshift64* state; 0 would draw zeros forever, so hosts pick a
    /// time-based seed when the user gives none (as llama2.c does).
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 1.0,
            topp: 0.9,
            topk: 0,
            seed: 1,
        }
    }
}

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

/// Index of the largest value, the first on ties.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

pub struct Sampler<'a> {
    config: SamplerConfig,
    rng: u64,
    /// Scratch for candidate ids, one slot per vocabulary entry.
    candidates: &'a mut [u32],
}

impl<'a> Sampler<'a> {
    pub fn new(config: SamplerConfig, candidates: &'a mut [u32]) -> Self {
        Sampler {
            rng: config.seed,
            config,
            candidates,
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Chooses a token. `logits` is overwritten with probabilities when
    /// sampling (as llama2.c does, to avoid another buffer).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let c = self.config;
        if c.temperature == 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        for l in logits.iter_mut() {
            *l /= c.temperature;
        }
        softmax(logits);
        let coin = random_f32(&mut self.rng);
        let topp = if c.topp > 0.0 && c.topp < 1.0 {
            c.topp
        } else {
            1.0
        };
        if c.topk == 0 && topp == 1.0 {
            return sample_mult(logits, coin);
        }
        self.sample_candidates(logits, topp, coin)
    }

    /// Top-k then top-p over the candidates, renormalised.
    fn sample_candidates(&mut self, probs: &[f32], topp: f32, coin: f32) -> u32 {
        let n = probs.len();
        // llama2.c's shortcut: a token below (1 - topp) / (n - 1) can never
        // be inside the nucleus, so it is not worth sorting.
        let cutoff = if topp < 1.0 {
            (1.0 - topp) / (n - 1) as f32
        } else {
            f32::NEG_INFINITY
        };
        let mut n0 = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p >= cutoff {
                self.candidates[n0] = i as u32;
                n0 += 1;
            }
        }
        let by_prob = |a: &u32, b: &u32| {
            probs[*b as usize]
                .total_cmp(&probs[*a as usize])
                .then(a.cmp(b))
        };
        let mut cands = &mut self.candidates[..n0];
        if self.config.topk > 0 && self.config.topk < cands.len() {
            cands.select_nth_unstable_by(self.config.topk - 1, by_prob);
            cands = &mut cands[..self.config.topk];
        }
        if cands.is_empty() {
            return argmax(probs);
        }
        cands.sort_unstable_by(by_prob);
        let mut cumulative = 0.0f32;
        let mut last = cands.len() - 1;
        for (i, &id) in cands.iter().enumerate() {
            cumulative += probs[id as usize];
            if cumulative > topp {
                last = i;
                break;
            }
        }
        let r = coin * cumulative;
        let mut cdf = 0.0f32;
        for &id in &cands[..=last] {
            cdf += probs[id as usize];
            if r < cdf {
                return id;
            }
        }
        cands[last]
    }
}

/// Samples from the whole distribution with `coin` in [0, 1).
fn sample_mult(probs: &[f32], coin: f32) -> u32 {
    let mut cdf = 0.0f32;
    for (i, &p) in probs.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i as u32;
        }
    }
    (probs.len() - 1) as u32
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

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut c = [0u32; 4];
        let mut s = Sampler::new(
            SamplerConfig {
                temperature: 0.0,
                ..SamplerConfig::default()
            },
            &mut c,
        );
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn topk_one_is_greedy_and_seeds_repeat() {
        let logits = [0.1f32, 2.0, 0.3, 1.9, -1.0];
        let draw = |config: SamplerConfig| {
            let mut c = [0u32; 5];
            let mut s = Sampler::new(config, &mut c);
            (0..50)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<std::vec::Vec<_>>()
        };
        let k1 = SamplerConfig {
            topk: 1,
            seed: 7,
            ..SamplerConfig::default()
        };
        assert!(draw(k1).iter().all(|&t| t == 1));
        let free = SamplerConfig {
            topp: 1.0,
            seed: 7,
            ..SamplerConfig::default()
        };
        assert_eq!(draw(free), draw(free));
        assert!(draw(free).iter().any(|&t| t != 1));
        let k2 = SamplerConfig { topk: 2, ..free };
        assert!(draw(k2).iter().all(|&t| t == 1 || t == 3));
    }
}
