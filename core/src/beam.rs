//! Beam search: `B` hypotheses, each with its own KV cache in the arena,
//! advanced together one position per step so every weight block is read
//! once for all of them ([`Transformer::forward_beams`]).
//!
//! Each step extends every live hypothesis by its `B` most likely tokens
//! and keeps the `B` best extensions by total log-probability. A
//! hypothesis that picks an end-of-generation token is finished; the answer is the
//! finished or live hypothesis with the best *length-normalized* score:
//! log-probability per generated token. Ties go to the lower beam and the
//! lower token id, so the search is deterministic, and with `B = 1` it is
//! greedy decoding.

use crate::error::{Error, Result};
use crate::kernels::softmax;
use crate::model::Transformer;

/// The widest beam search a plan takes.
pub const MAX_BEAMS: usize = 8;

/// Beam search's token histories: `seq_len + 1` per cache slot, and the
/// best hypothesis.
pub struct BeamBuffers<'a> {
    pub tokens: &'a mut [u32],
    pub best: &'a mut [u32],
}

/// A hypothesis still being extended.
#[derive(Clone, Copy, Debug, Default)]
struct Beam {
    /// Its KV cache and row of token history.
    slot: usize,
    /// Total log-probability of its generated tokens.
    logprob: f64,
}

/// One extension of a live hypothesis.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    logprob: f64,
    beam: usize,
    token: u32,
}

impl Candidate {
    /// Higher log-probability first, then the lower beam and token.
    fn before(&self, other: &Candidate) -> bool {
        (self.logprob, other.beam, other.token) > (other.logprob, self.beam, self.token)
    }
}

/// The best hypothesis found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Generated tokens (EOS excluded), in the buffers' `best` row.
    pub len: usize,
    /// Log-probability per generated token (EOS included when it ended).
    pub score: f64,
    /// Whether it ended with EOS or BOS, rather than at the step limit.
    pub finished: bool,
}

/// Inserts `c` into `top` (sorted, best first), keeping at most `k`.
/// Nearly every token of a beam's 32000 loses to a full list's last entry,
/// so that one comparison comes first.
fn keep_best(top: &mut heapless::Vec<Candidate, MAX_BEAMS>, c: Candidate, k: usize) {
    if top.len() >= k && top.last().is_none_or(|last| !c.before(last)) {
        return;
    }
    let at = top.iter().position(|t| c.before(t)).unwrap_or(top.len());
    if at >= k {
        return;
    }
    if top.len() == k {
        top.pop();
    }
    let _ = top.insert(at, c);
}

/// Searches with `width` beams after `prompt` (BOS first, if wanted) until
/// `steps` positions have run or every hypothesis has finished; `stops`
/// are the ids that finish one (the end-of-generation ids). The winner's tokens are left in
/// `buffers.best`.
pub fn search(
    t: &mut Transformer<'_, '_>,
    buffers: &mut BeamBuffers<'_>,
    prompt: &[u32],
    steps: usize,
    width: usize,
    stops: &[u32],
) -> Result<Outcome> {
    let (seq_len, isa) = (t.config().seq_len, t.isa());
    // A history row holds every position and the token sampled at the last.
    let row = seq_len + 1;
    let slots = buffers.tokens.len() / row;
    if width == 0 || width > slots.min(MAX_BEAMS) {
        return Err(Error::Misuse {
            what: "beams",
            value: width as i64,
        });
    }
    if prompt.is_empty() {
        return Err(Error::Misuse {
            what: "beam search prompt tokens",
            value: 0,
        });
    }
    let steps = steps.min(seq_len);
    if prompt.len() > steps {
        return Err(Error::ContextFull {
            needed: prompt.len(),
            max: steps,
        });
    }
    // Everything but the last prompt token runs now, in cache 0.
    let mut pos = prompt.len() - 1;
    t.fill(&prompt[..pos], 0)?;
    let history = |slot: usize| slot * row;
    buffers.tokens[..prompt.len()].copy_from_slice(prompt);
    let mut live: heapless::Vec<Beam, MAX_BEAMS> = heapless::Vec::new();
    let _ = live.push(Beam::default());
    let mut best: Option<Outcome> = None;

    while pos < steps && !live.is_empty() {
        let len = pos + 1;
        let generated = len - prompt.len();
        let mut tokens = [0u32; MAX_BEAMS];
        let mut caches = [0usize; MAX_BEAMS];
        for (i, b) in live.iter().enumerate() {
            tokens[i] = buffers.tokens[history(b.slot) + pos];
            caches[i] = b.slot;
        }
        let n = live.len();
        let logits = t.forward_beams(&tokens[..n], pos, &caches[..n])?;
        let vocab = logits.len() / n;

        // The `width` best extensions over all beams.
        let mut top: heapless::Vec<Candidate, MAX_BEAMS> = heapless::Vec::new();
        for (i, logits) in logits.chunks_exact_mut(vocab).enumerate() {
            // Within a beam the raw logits rank the tokens (as greedy's
            // argmax does); the log-probability comes after.
            let mut own: heapless::Vec<Candidate, MAX_BEAMS> = heapless::Vec::new();
            for (id, &l) in logits.iter().enumerate() {
                let c = Candidate {
                    logprob: f64::from(l),
                    beam: i,
                    token: id as u32,
                };
                keep_best(&mut own, c, width);
            }
            // The probabilities, in place, by the SIMD softmax.
            softmax(isa, logits);
            for mut c in own {
                let p = logits[c.token as usize];
                c.logprob = live[i].logprob + libm::log(f64::from(p));
                keep_best(&mut top, c, width);
            }
        }

        // Finished hypotheses leave; the others become the next beams.
        let mut next: heapless::Vec<(Candidate, usize), MAX_BEAMS> = heapless::Vec::new();
        let mut taken = [false; MAX_BEAMS];
        for c in &top {
            if stops.contains(&c.token) {
                let score = c.logprob / (generated + 1) as f64;
                if best.is_none_or(|b| score > b.score) {
                    let from = history(live[c.beam].slot) + prompt.len();
                    buffers.best[..generated]
                        .copy_from_slice(&buffers.tokens[from..from + generated]);
                    best = Some(Outcome {
                        len: generated,
                        score,
                        finished: true,
                    });
                }
                continue;
            }
            // A parent's first child keeps its slot and cache.
            let parent = live[c.beam].slot;
            let slot = match taken[parent] {
                false => parent,
                true => usize::MAX,
            };
            if slot != usize::MAX {
                taken[slot] = true;
            }
            let _ = next.push((*c, slot));
        }
        // Further children take slots no new beam descends from.
        let parents: heapless::Vec<usize, MAX_BEAMS> =
            next.iter().map(|(c, _)| live[c.beam].slot).collect();
        for (c, slot) in next.iter_mut() {
            if *slot != usize::MAX {
                continue;
            }
            let free = (0..width)
                .find(|s| !taken[*s] && !parents.contains(s))
                .ok_or(Error::Misuse {
                    what: "beam slots",
                    value: width as i64,
                })?;
            taken[free] = true;
            *slot = free;
            let parent = live[c.beam].slot;
            t.copy_cache(parent, free, len)?;
            buffers
                .tokens
                .copy_within(history(parent)..history(parent) + len, history(free));
        }
        live.clear();
        for (c, slot) in next {
            buffers.tokens[history(slot) + len] = c.token;
            let _ = live.push(Beam {
                slot,
                logprob: c.logprob,
            });
        }
        pos += 1;
    }

    // Live hypotheses compete with the finished ones at their length.
    let generated = pos + 1 - prompt.len();
    for b in &live {
        let score = match generated {
            0 => f64::NEG_INFINITY,
            g => b.logprob / g as f64,
        };
        if best.is_none_or(|o| score > o.score) {
            let from = history(b.slot) + prompt.len();
            buffers.best[..generated].copy_from_slice(&buffers.tokens[from..from + generated]);
            best = Some(Outcome {
                len: generated,
                score,
                finished: false,
            });
        }
    }
    best.ok_or(Error::Misuse {
        what: "beam search steps",
        value: steps as i64,
    })
}
