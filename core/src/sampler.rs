//! Picking the next token from logits: greedy, temperature, top-k, top-p.
//! The RNG is llama2.c's xorshift64*, so the same seed draws the same coins;
//! candidate ties are broken by token id so the choice is deterministic.

use crate::kernels::{softmax, Isa};
use crate::rng::random_f32;

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
    isa: Isa,
    rng: u64,
    /// Candidate keys (see [`key`]) and radix-sort scratch: two per
    /// vocabulary entry.
    candidates: &'a mut [u64],
}

impl<'a> Sampler<'a> {
    /// A sampler whose softmax runs at `isa`'s level.
    pub fn new(config: SamplerConfig, candidates: &'a mut [u64], isa: Isa) -> Self {
        Sampler {
            rng: config.seed,
            config,
            isa,
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
        softmax(self.isa, logits);
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
                self.candidates[n0] = key(p, i as u32);
                n0 += 1;
            }
        }
        let prob = |key: u64| probs[key as u32 as usize];
        let (cands, scratch) = self.candidates.split_at_mut(probs.len());
        let mut cands = &mut cands[..n0];
        let topk = self.config.topk;
        let mut presorted = false;
        if topk > 0 && topk < cands.len() {
            cands.select_nth_unstable(topk - 1);
            cands = &mut cands[..topk];
        } else if cands.len() > RADIX_MIN {
            // Still in id order, so a stable sort on the probability bits
            // alone gives the full key order.
            radix_sort_by_probability(cands, &mut scratch[..n0]);
            presorted = true;
        }
        if cands.is_empty() {
            return argmax(probs);
        }
        // Sort only the prefix the nucleus needs: select the best `end`,
        // sort them, and widen until their mass exceeds `topp`. Keys order
        // ties by id, so this is exactly the prefix a full sort would give,
        // at a fraction of its cost when the distribution is peaked.
        let first = if presorted { cands.len() } else { 64 };
        let (mut sorted, mut end) = (0, cands.len().min(first));
        let mut cumulative = 0.0f32;
        let mut last = cands.len() - 1;
        'widen: loop {
            if !presorted {
                if end < cands.len() {
                    cands[sorted..].select_nth_unstable(end - sorted - 1);
                }
                cands[sorted..end].sort_unstable();
            }
            for (i, &k) in cands.iter().enumerate().take(end).skip(sorted) {
                cumulative += prob(k);
                if cumulative > topp {
                    last = i;
                    break 'widen;
                }
            }
            if end == cands.len() {
                break;
            }
            (sorted, end) = (end, (2 * end).min(cands.len()));
        }
        let r = coin * cumulative;
        let mut cdf = 0.0f32;
        for &k in &cands[..=last] {
            cdf += prob(k);
            if r < cdf {
                return k as u32;
            }
        }
        cands[last] as u32
    }
}

/// Past this many candidates a flat distribution is likely, whose nucleus
/// is most of them: then an O(n) radix sort beats selecting and sorting.
const RADIX_MIN: usize = 4096;

/// Sorts keys by their high 32 bits, stably (least significant byte first,
/// counting passes through `scratch`; one read counts all four digits, and
/// a digit every key shares needs no pass). Sorted input stays sorted, so
/// with sorted keys the result is in full key order.
fn radix_sort_by_probability(keys: &mut [u64], scratch: &mut [u64]) {
    const SHIFTS: [u32; 4] = [32, 40, 48, 56];
    let digit = |k: u64, shift: u32| ((k >> shift) & 0xff) as usize;
    let mut counts = [[0usize; 256]; 4];
    for &k in keys.iter() {
        for (c, shift) in counts.iter_mut().zip(SHIFTS) {
            c[digit(k, shift)] += 1;
        }
    }
    let n = keys.len();
    let (mut from, mut to) = (keys, scratch);
    let mut in_keys = true;
    for (count, shift) in counts.iter().zip(SHIFTS) {
        if count.contains(&n) {
            continue;
        }
        let mut start = [0usize; 256];
        let mut sum = 0;
        for (s, &c) in start.iter_mut().zip(count) {
            (*s, sum) = (sum, sum + c);
        }
        for &k in from.iter() {
            let d = digit(k, shift);
            to[start[d]] = k;
            start[d] += 1;
        }
        core::mem::swap(&mut from, &mut to);
        in_keys = !in_keys;
    }
    if !in_keys {
        to.copy_from_slice(from);
    }
}

/// A sort key for a candidate: ascending keys are descending probability
/// (in `f32::total_cmp` order), then ascending id. Sorting plain integers
/// keeps the comparisons free of the two indirect loads a comparator needs.
fn key(p: f32, id: u32) -> u64 {
    let bits = p.to_bits() as i32;
    let ordered = (bits ^ (((bits >> 31) as u32) >> 1) as i32) as u32 ^ 0x8000_0000;
    (u64::from(!ordered) << 32) | u64::from(id)
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
    use crate::rng::random_u32;

    /// The nucleus by a full sort, as llama2.c computes it (ties by id).
    fn full_sort_topp(probs: &[f32], topp: f32, coin: f32) -> u32 {
        let mut ids: std::vec::Vec<u32> = (0..probs.len() as u32).collect();
        let cutoff = (1.0 - topp) / (probs.len() - 1) as f32;
        ids.retain(|&i| probs[i as usize] >= cutoff);
        ids.sort_by(|a, b| {
            probs[*b as usize]
                .total_cmp(&probs[*a as usize])
                .then(a.cmp(b))
        });
        let mut cumulative = 0.0f32;
        let mut last = ids.len() - 1;
        for (i, &id) in ids.iter().enumerate() {
            cumulative += probs[id as usize];
            if cumulative > topp {
                last = i;
                break;
            }
        }
        let (r, mut cdf) = (coin * cumulative, 0.0f32);
        for &id in &ids[..=last] {
            cdf += probs[id as usize];
            if r < cdf {
                return id;
            }
        }
        ids[last]
    }

    #[test]
    fn partial_sort_nucleus_equals_full_sort() {
        let mut rng = 99u64;
        for case in 0..120 {
            // Up to 12000 tokens, so flat cases take the radix path.
            let n = 1 + (random_u32(&mut rng) % 12000) as usize;
            // Flat, peaked and tied distributions.
            let mut logits: std::vec::Vec<f32> = (0..n)
                .map(|_| match case % 3 {
                    0 => random_f32(&mut rng) * 0.01,
                    1 => random_f32(&mut rng) * 12.0,
                    _ => (random_u32(&mut rng) % 4) as f32,
                })
                .collect();
            if n < 2 {
                continue;
            }
            softmax(Isa::SCALAR, &mut logits);
            let topp = 0.5 + 0.49 * random_f32(&mut rng);
            let coin = random_f32(&mut rng);
            let mut c = std::vec![0u64; 2 * n];
            let mut s = Sampler::new(SamplerConfig::default(), &mut c, Isa::SCALAR);
            let got = s.sample_candidates(&logits, topp, coin);
            assert_eq!(
                got,
                full_sort_topp(&logits, topp, coin),
                "case {case}, n {n}"
            );
        }
    }

    #[test]
    fn keys_sort_like_total_cmp_then_id() {
        let ps = [0.5f32, 0.25, 0.25, 0.0, 1e-30, f32::MIN_POSITIVE, 0.75];
        let mut by_key: std::vec::Vec<u32> = (0..ps.len() as u32).collect();
        by_key.sort_by_key(|&i| key(ps[i as usize], i));
        let mut by_cmp: std::vec::Vec<u32> = (0..ps.len() as u32).collect();
        by_cmp.sort_by(|&a, &b| ps[b as usize].total_cmp(&ps[a as usize]).then(a.cmp(&b)));
        assert_eq!(by_key, by_cmp);
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut c = [0u64; 8];
        let mut s = Sampler::new(
            SamplerConfig {
                temperature: 0.0,
                ..SamplerConfig::default()
            },
            &mut c,
            Isa::SCALAR,
        );
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn topk_one_is_greedy_and_seeds_repeat() {
        let logits = [0.1f32, 2.0, 0.3, 1.9, -1.0];
        let draw = |config: SamplerConfig| {
            let mut c = [0u64; 10];
            let mut s = Sampler::new(config, &mut c, Isa::SCALAR);
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
