//! Picking the next token from logits: llama.cpp's repetition, frequency
//! and presence penalties and min-p, then llama2.c's greedy, temperature,
//! top-k and top-p. The RNG is llama2.c's xorshift64*, so the same seed draws
//! the same coins; candidate ties are broken by token id so the choice is
//! deterministic.
//!
//! The order, each step computed as llama.cpp computes it:
//! 1. penalties on the logits, from the last `repeat_last_n` tokens of the
//!    history;
//! 2. greedy (temperature 0) takes the argmax here: min-p never removes the
//!    largest logit, so it cannot change an argmax;
//! 3. min-p on the penalized logits, before temperature, so the tokens it
//!    keeps do not depend on the temperature (llama.cpp's chain order);
//! 4. temperature, softmax, top-k, top-p, and the draw.
//!
//! With every penalty and min-p off, steps 1 and 3 cost a test each and the
//! choices are llama2.c's.

use crate::kernels::{softmax, Isa};
use crate::rng::random_f32;

/// Sampling settings, applied in the order the module documentation gives:
/// penalties, then greedy or min-p, temperature, top-k, top-p.
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
    /// Keep only tokens at least `min_p` times as likely as the most likely
    /// one (judged on the penalized logits, before temperature); 0 or less
    /// means off.
    pub min_p: f32,
    /// Divides a repeated token's positive logit and multiplies a negative
    /// one (dividing alone would make a negative logit likelier); 1 means off.
    pub repeat_penalty: f32,
    /// How many of the latest tokens the penalties look at; 0 means off.
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every token in the window.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it is in the window.
    pub frequency_penalty: f32,
}

impl SamplerConfig {
    /// The defaults, as a constant so that constants can start from them.
    pub const DEFAULT: SamplerConfig = SamplerConfig {
        temperature: 1.0,
        topp: 0.9,
        topk: 0,
        seed: 1,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
    };

    /// llama.cpp's test for penalties that change nothing, so that no
    /// counting is done for them.
    fn penalties_off(&self) -> bool {
        self.repeat_last_n == 0
            || (self.repeat_penalty == 1.0
                && self.frequency_penalty == 0.0
                && self.presence_penalty == 0.0)
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig::DEFAULT
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
    /// vocabulary entry. Before the draw, the penalties count tokens in it.
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

    /// Chooses a token. `history` is every token of the context so far,
    /// prompt included (llama.cpp's sampler accepts the prompt too), the last
    /// being the one whose `logits` these are; the penalties look at its
    /// last `repeat_last_n`. `logits` is penalized in place and overwritten
    /// with probabilities when sampling (as llama2.c does, to avoid another
    /// buffer).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let c = self.config;
        self.penalize(logits, history);
        if c.temperature == 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        let removed = min_p(logits, c.min_p);
        for l in logits.iter_mut() {
            *l /= c.temperature;
        }
        softmax(self.isa, logits);
        if let Some(r) = removed {
            // The SIMD softmax clamps exp's argument, so a removed token's
            // −∞ comes out as the smallest probability, not 0. Whatever is
            // that small becomes 0 so that it is never drawn.
            let floor = logits[r];
            for p in logits.iter_mut().filter(|p| **p <= floor) {
                *p = 0.0;
            }
        }
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

    /// llama.cpp's penalties over the last `repeat_last_n` tokens of
    /// `history`: a token there `n` times has its logit multiplied by
    /// `repeat_penalty` if it is at most 0, else divided by it, then loses
    /// `n·frequency_penalty + presence_penalty`. Ids outside the vocabulary
    /// have no logit to change and are skipped.
    fn penalize(&mut self, logits: &mut [f32], history: &[u32]) {
        let c = self.config;
        if c.penalties_off() {
            return;
        }
        let window = &history[history.len().saturating_sub(c.repeat_last_n)..];
        // The counts live in the candidate scratch, indexed by id: clearing
        // the window's slots, counting, then penalizing each token once
        // (taking its count clears the slot for its repeats) is linear in
        // the window, needs no room beyond the vocabulary, and leaves the
        // rest of the scratch as it was (the draw overwrites it anyway).
        let vocab = logits.len().min(self.candidates.len());
        let ids = || {
            window
                .iter()
                .map(|&t| t as usize)
                .filter(move |&t| t < vocab)
        };
        let counts = &mut *self.candidates;
        for t in ids() {
            counts[t] = 0;
        }
        for t in ids() {
            counts[t] += 1;
        }
        for t in ids() {
            let n = core::mem::take(&mut counts[t]);
            if n > 0 {
                let l = logits[t];
                let l = if l <= 0.0 {
                    l * c.repeat_penalty
                } else {
                    l / c.repeat_penalty
                };
                logits[t] = l - (n as f32 * c.frequency_penalty + c.presence_penalty);
            }
        }
    }

    /// Top-k then top-p over the candidates, renormalised.
    fn sample_candidates(&mut self, probs: &[f32], topp: f32, coin: f32) -> u32 {
        let n = probs.len();
        // llama2.c's shortcut: a token below (1 - topp) / (n - 1) can never
        // be inside the nucleus, so it is not worth sorting. Without a
        // nucleus the cutoff is the least positive f32: zero-probability
        // tokens (removed by min-p, or underflowed) are never candidates.
        let cutoff = if topp < 1.0 {
            (1.0 - topp) / (n - 1) as f32
        } else {
            f32::from_bits(1)
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

/// llama.cpp's min-p on logits: a token whose logit is below the largest
/// plus ln `p` (less than `p` times as likely as the most likely) becomes
/// −∞. The largest (the first of equals) always stays, as llama.cpp keeps
/// its best token when nothing else would. Returns a removed token, if any.
fn min_p(logits: &mut [f32], p: f32) -> Option<usize> {
    if p <= 0.0 {
        return None;
    }
    let best = argmax(logits) as usize;
    // llama.cpp starts its maximum at −FLT_MAX (so all −∞ keeps only the
    // best) and takes glibc's logf, which is nearly always the correctly
    // rounded ln that f64 gives; libm's logf is an ulp off for 0.6% of
    // arguments, which moves the boundary.
    let threshold = logits[best].max(f32::MIN) + libm::log(f64::from(p)) as f32;
    let mut removed = None;
    for (i, l) in logits.iter_mut().enumerate() {
        let keep = *l >= threshold || i == best;
        if !keep {
            *l = f32::NEG_INFINITY;
            removed = Some(i);
        }
    }
    removed
}

/// Samples from the whole distribution with `coin` in [0, 1). When rounding
/// leaves the total below the coin, the last token that has any probability
/// is chosen.
fn sample_mult(probs: &[f32], coin: f32) -> u32 {
    let mut cdf = 0.0f32;
    for (i, &p) in probs.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i as u32;
        }
    }
    probs
        .iter()
        .rposition(|&p| p > 0.0)
        .unwrap_or(probs.len() - 1) as u32
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
        assert_eq!(s.sample(&mut [1.0, 3.0, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn topk_one_is_greedy_and_seeds_repeat() {
        let logits = [0.1f32, 2.0, 0.3, 1.9, -1.0];
        let draw = |config: SamplerConfig| {
            let mut c = [0u64; 10];
            let mut s = Sampler::new(config, &mut c, Isa::SCALAR);
            (0..50)
                .map(|_| s.sample(&mut logits.clone(), &[]))
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

    /// The whole distribution, so the probabilities left in the logits are
    /// the ones drawn from.
    const FULL: SamplerConfig = SamplerConfig {
        topp: 1.0,
        ..SamplerConfig::DEFAULT
    };

    /// One choice at `isa` with a scratch full of stale values (the counts
    /// must not trust it); returns it and what is left in the logits.
    fn run(
        config: SamplerConfig,
        isa: Isa,
        logits: &[f32],
        history: &[u32],
    ) -> (u32, std::vec::Vec<f32>) {
        let mut scratch = std::vec![12345u64; 2 * logits.len()];
        let mut l = logits.to_vec();
        let token = Sampler::new(config, &mut scratch, isa).sample(&mut l, history);
        (token, l)
    }

    /// Softmax in f64 of logits written out by hand; −∞ gives 0.
    fn softmax_f64(l: &[f64]) -> std::vec::Vec<f64> {
        let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: std::vec::Vec<f64> = l.iter().map(|&x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|&x| x / sum).collect()
    }

    /// Every available level's probabilities are `want`'s, and exactly 0
    /// where `want` is.
    fn assert_probs(config: SamplerConfig, logits: &[f32], history: &[u32], want: &[f64]) {
        for isa in Isa::available() {
            let (_, got) = run(config, isa, logits, history);
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                let ok = if w == 0.0 {
                    g == 0.0
                } else {
                    (f64::from(g) - w).abs() < 1e-6
                };
                assert!(ok, "{}: token {i}: {got:?}, want {want:?}", isa.name());
            }
        }
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_other_logits() {
        let config = SamplerConfig {
            repeat_penalty: 1.5,
            ..FULL
        };
        // Tokens 0 (2.0: divided), 1 (-1.0: multiplied) and 3 (0.0, which
        // is multiplied, to 0) are in the history; 2 is not.
        let want = softmax_f64(&[2.0 / 1.5, -1.5, 0.5, 0.0]);
        assert_probs(config, &[2.0, -1.0, 0.5, 0.0], &[0, 1, 3], &want);
    }

    #[test]
    fn frequency_and_presence_penalties_count_repeats() {
        // Token 2 three times, 1 once, 0 and 3 never.
        let logits = [1.0, 2.0, 3.0, 0.5];
        let history = [2, 1, 2, 2];
        let config = SamplerConfig {
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..FULL
        };
        let want = softmax_f64(&[1.0, 2.0 - 0.5 - 0.25, 3.0 - 3.0 * 0.5 - 0.25, 0.5]);
        assert_probs(config, &logits, &history, &want);
        // The repeat penalty first, then the subtraction.
        let config = SamplerConfig {
            repeat_penalty: 2.0,
            ..config
        };
        let want = softmax_f64(&[1.0, 2.0 / 2.0 - 0.75, 3.0 / 2.0 - 1.75, 0.5]);
        assert_probs(config, &logits, &history, &want);
    }

    #[test]
    fn penalties_look_at_the_last_repeat_last_n_tokens() {
        let logits = [1.0, 1.0, 1.0, 1.0];
        let config = SamplerConfig {
            frequency_penalty: 1.0,
            repeat_last_n: 3,
            ..FULL
        };
        // The window is [1, 2, 2]: token 0 is older. 99 has no logit.
        let want = softmax_f64(&[1.0, 0.0, -1.0, 1.0]);
        assert_probs(config, &logits, &[0, 99, 0, 1, 2, 2], &want);
        // A window longer than the history is all of it.
        let config = SamplerConfig {
            repeat_last_n: 64,
            ..config
        };
        let want = softmax_f64(&[-1.0, 0.0, -1.0, 1.0]);
        assert_probs(config, &logits, &[0, 99, 0, 1, 2, 2], &want);
    }

    #[test]
    fn repeat_last_n_zero_turns_the_penalties_off() {
        let config = SamplerConfig {
            repeat_penalty: 3.0,
            frequency_penalty: 1.0,
            presence_penalty: 1.0,
            repeat_last_n: 0,
            ..FULL
        };
        let want = softmax_f64(&[2.0, -1.0, 0.5]);
        assert_probs(config, &[2.0, -1.0, 0.5], &[0, 1, 2, 0], &want);
    }

    #[test]
    fn counts_fit_a_long_window_over_a_tiny_vocabulary() {
        // 5000 tokens of history over 4 ids, with only 8 words of scratch:
        // the last 4000 hold 0 and 2 1000 times each, 1 2000 times, and 3
        // is only older.
        let history = [[3; 1000].as_slice(), &[0, 1, 1, 2].repeat(1000)].concat();
        let config = SamplerConfig {
            temperature: 0.0,
            frequency_penalty: 0.001,
            repeat_last_n: 4000,
            ..FULL
        };
        let (token, got) = run(config, Isa::SCALAR, &[2.0, 3.0, 1.5, 0.5], &history);
        let want = [2.0 - 1.0, 3.0 - 2.0, 1.5 - 1.0, 0.5];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
        assert_eq!(token, 0);
    }

    #[test]
    fn min_p_keeps_logits_at_the_boundary_and_removes_those_below() {
        // min_p 1: the threshold is the maximum itself.
        let config = SamplerConfig { min_p: 1.0, ..FULL };
        let below = f32::from_bits(3.0f32.to_bits() - 1);
        assert_probs(config, &[3.0, below, 3.0, 1.0], &[], &[0.5, 0.0, 0.5, 0.0]);
        // min_p 0.5: the threshold is 2 - ln 2 = 1.3069.
        let config = SamplerConfig { min_p: 0.5, ..FULL };
        let kept = softmax_f64(&[2.0, 1.31]);
        let want = [kept[0], kept[1], 0.0, 0.0];
        assert_probs(config, &[2.0, 1.31, 1.30, -5.0], &[], &want);
    }

    #[test]
    fn min_p_always_keeps_the_most_likely_token() {
        // Above 1 nothing reaches the threshold; the first maximum stays.
        let config = SamplerConfig { min_p: 2.0, ..FULL };
        assert_probs(config, &[1.0, 4.0, 4.0], &[], &[0.0, 1.0, 0.0]);
        for isa in Isa::available() {
            assert_eq!(run(config, isa, &[1.0, 4.0, 4.0], &[]).0, 1);
        }
    }

    #[test]
    fn min_p_judges_the_logits_before_temperature() {
        // ln 0.3 = -1.204: 2 and 1 stay, 0 and -1 go. After a temperature
        // of 2 (ratios e^-0.5, e^-1, e^-1.5) min-p would keep three.
        let config = SamplerConfig {
            min_p: 0.3,
            temperature: 2.0,
            ..FULL
        };
        let kept = softmax_f64(&[2.0 / 2.0, 1.0 / 2.0]);
        let want = [kept[0], kept[1], 0.0, 0.0];
        assert_probs(config, &[2.0, 1.0, 0.0, -1.0], &[], &want);
    }

    #[test]
    fn min_p_judges_the_penalized_logits() {
        // The penalty takes token 0 from 2.0 to 1.0, so the maximum is 1.0
        // and the threshold 1.0 - ln 2 = 0.307: all stay (before the
        // penalty, the threshold 2.0 - ln 2 would have left only token 0).
        let config = SamplerConfig {
            min_p: 0.5,
            repeat_penalty: 2.0,
            ..FULL
        };
        let want = softmax_f64(&[1.0, 1.0, 0.5]);
        assert_probs(config, &[2.0, 1.0, 0.5], &[0], &want);
    }

    #[test]
    fn greedy_penalties_change_the_argmax() {
        let greedy = SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::DEFAULT
        };
        let logits = [1.0, 3.0, 2.5];
        let repeat = SamplerConfig {
            repeat_penalty: 1.5,
            ..greedy
        };
        // 3 / 1.5 = 2 < 2.5.
        assert_eq!(run(repeat, Isa::SCALAR, &logits, &[1]).0, 2);
        let frequency = SamplerConfig {
            frequency_penalty: 0.3,
            ..greedy
        };
        // 3 - 2 · 0.3 = 2.4 < 2.5, but 3 - 0.3 is not.
        assert_eq!(run(frequency, Isa::SCALAR, &logits, &[1, 1]).0, 2);
        assert_eq!(run(frequency, Isa::SCALAR, &logits, &[1]).0, 1);
        let presence = SamplerConfig {
            presence_penalty: 0.6,
            ..greedy
        };
        assert_eq!(run(presence, Isa::SCALAR, &logits, &[1, 0]).0, 2);
    }

    #[test]
    fn greedy_with_repeat_penalty_one_is_unchanged() {
        let greedy = SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..SamplerConfig::DEFAULT
        };
        let logits = [1.0, 3.0, 2.5, -0.5];
        let (token, left) = run(greedy, Isa::SCALAR, &logits, &[1, 1, 3, 1]);
        assert_eq!(token, 1);
        assert_eq!(left, logits);
    }

    #[test]
    fn zero_probabilities_are_never_drawn() {
        // A coin at or past the rounded total.
        let probs = [0.0, 0.5, 0.4999, 0.0];
        assert_eq!(sample_mult(&probs, 0.0), 1);
        assert_eq!(sample_mult(&probs, 0.99999), 2);
        let mut c = [0u64; 8];
        let topk = SamplerConfig { topk: 4, ..FULL };
        let mut s = Sampler::new(topk, &mut c, Isa::SCALAR);
        assert_eq!(s.sample_candidates(&probs, 1.0, 0.0), 1);
        assert_eq!(s.sample_candidates(&probs, 1.0, 0.99999), 2);
    }

    #[test]
    fn defaults_choose_as_before() {
        // Printed by the sampler before penalties and min-p existed; the
        // history would be penalized if a penalty were on.
        let mut rng = 2024u64;
        let logits: std::vec::Vec<f32> =
            (0..300).map(|_| random_f32(&mut rng) * 8.0 - 4.0).collect();
        let flat: std::vec::Vec<f32> = (0..5000).map(|_| random_f32(&mut rng) * 0.01).collect();
        let history: std::vec::Vec<u32> = (0..5000).step_by(7).collect();
        let d = SamplerConfig::DEFAULT;
        let cases: [(SamplerConfig, &[f32], &[u32]); 6] = [
            (
                SamplerConfig { seed: 42, ..d },
                &logits,
                &[
                    154, 128, 89, 220, 139, 256, 100, 155, 251, 261, 170, 154, 50, 100, 156, 81,
                ],
            ),
            (
                SamplerConfig {
                    temperature: 0.7,
                    topp: 0.95,
                    topk: 40,
                    seed: 7,
                    ..d
                },
                &logits,
                &[
                    54, 219, 156, 156, 0, 153, 81, 225, 0, 230, 25, 104, 155, 243, 127, 26,
                ],
            ),
            (
                SamplerConfig {
                    topp: 1.0,
                    seed: 3,
                    ..d
                },
                &logits,
                &[
                    239, 0, 147, 267, 145, 239, 81, 56, 225, 101, 156, 265, 69, 170, 24, 173,
                ],
            ),
            (
                SamplerConfig {
                    temperature: 1.3,
                    topp: 0.5,
                    seed: 99,
                    ..d
                },
                &logits,
                &[
                    100, 243, 265, 54, 251, 104, 156, 46, 104, 127, 127, 239, 145, 101, 232, 215,
                ],
            ),
            (
                SamplerConfig {
                    temperature: 0.0,
                    ..d
                },
                &logits,
                &[145; 16],
            ),
            (
                SamplerConfig {
                    topp: 0.99,
                    seed: 5,
                    ..d
                },
                &flat,
                &[4859, 4008, 2439, 3731, 1096, 253, 1139, 3341],
            ),
        ];
        for (config, logits, want) in cases {
            let mut scratch = std::vec![0u64; 2 * logits.len()];
            let mut s = Sampler::new(config, &mut scratch, Isa::SCALAR);
            let got: std::vec::Vec<u32> = (0..want.len())
                .map(|_| s.sample(&mut logits.to_vec(), &history))
                .collect();
            assert_eq!(got, want, "{config:?}");
        }
    }
}
