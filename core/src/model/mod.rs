//! The transformer forward pass, in the shape of llama2.c's `run.c`: tokens
//! in, logits out, with activations and the KV cache in arena buffers and
//! the weights read in place from the image.
//!
//! One layer step, [`Transformer::step`], serves 1 to [`MAX_BATCH`] tokens.
//! Decode is a batch of one and runs matrix-vector kernels; a prompt chunk
//! or a step of beams runs matrix-matrix kernels that read each weight
//! block once for every token. Both compute every output row with the same
//! arithmetic, so a token's results do not depend on its company.

mod kv;

pub use kv::KvBuffers;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::{for_each_head, for_row_blocks, for_rows, Compute, ROW_GRANULE};
use crate::image::{Format, Model};
use crate::kernels::{
    add, batch_form, matmul, matvec, quantize, rmsnorm, rope, row, swiglu, Input, InputBuffers,
    InputForm, Isa,
};
use crate::tensor::WeightRef;

/// The most tokens one step takes (a plan for more is lowered to it).
pub const MAX_BATCH: usize = 128;

/// The arena's carve-outs that the forward pass writes.
pub struct StateBuffers<'a> {
    /// Tokens one step takes at most (1: decode only). Each activation
    /// buffer holds this many rows, token after token (`x` is
    /// `rows × dim`, and so on).
    pub rows: usize,
    pub x: &'a mut [f32],
    pub xb: &'a mut [f32],
    pub xb2: &'a mut [f32],
    pub q: &'a mut [f32],
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    pub hb: &'a mut [f32],
    pub hb2: &'a mut [f32],
    /// Attention scratch: `seq_len` floats per head (twice that for the
    /// f16 cache's online softmax).
    pub att: &'a mut [f32],
    /// The logits of up to one row per KV cache (a beam step's).
    pub logits: &'a mut [f32],
    pub kv: KvBuffers<'a>,
    /// RoPE: what each pair of a head's angle is made of (see [`Angles`]),
    /// then each row's rotation at its position.
    pub inv_freq: &'a mut [f32],
    pub cos: &'a mut [f32],
    pub sin: &'a mut [f32],
    /// Each row's matmul input (quantized for integer weights), all
    /// `qs.len() / rows` values apart.
    pub input: InputBuffers<'a>,
}

/// How a position's RoPE angles are computed: as the format's reference
/// engine computes them, so that the rotations are bitwise theirs. Both
/// take the C library's `cosf` and `sinf` of the angle ([`crate::libc`]).
#[derive(Clone, Copy, Debug)]
enum Angles {
    /// llama2.c: pair `i`'s angle is `pos · f_i`, with `f_i` in
    /// `inv_freq` (`1 / θ^(2i/d)`, divided by a Llama 3 factor and scaled).
    Llama2c,
    /// llama.cpp: an angle that starts at `pos` and is multiplied by
    /// `step` (`θ^(−2/d)`, in f32) from pair to pair; pair `i` turns by
    /// `scale · angle / factor_i`, the factors in `inv_freq`.
    LlamaCpp { step: f32, scale: f32 },
}

/// A model plus its run state: the equivalent of llama2.c's `Transformer`.
pub struct Transformer<'m, 'a> {
    model: &'m Model<'m>,
    /// The model's config with the planned (possibly shorter) `seq_len`.
    config: Config,
    angles: Angles,
    compute: Compute<'m>,
    s: StateBuffers<'a>,
}

/// Where the tokens of a step run.
#[derive(Clone, Copy)]
enum Slots<'c> {
    /// A prompt: consecutive positions from `pos`, in cache 0.
    Prompt { pos: usize },
    /// Beams: token `t` at position `pos` in KV cache `caches[t]`.
    Beams { pos: usize, caches: &'c [usize] },
}

impl Slots<'_> {
    /// Token `t`'s position and cache.
    fn of(self, t: usize) -> (usize, usize) {
        match self {
            Slots::Prompt { pos } => (pos + t, 0),
            Slots::Beams { pos, caches } => (pos, caches[t]),
        }
    }
}

/// Weight rows a task of a batched matmul reads once for every token: a
/// group this size stays in the core's cache while each token uses it.
const GROUP_BYTES: usize = 64 * 1024;

/// `out = w · x` for each job, for the `n` inputs in `x` (each `x.len() / n`
/// values; each output `n` rows of results), with the rows split across
/// the threads. The inputs are first put in the form the weights' type
/// takes (int8 blocks for quantized weights), once for a run of jobs that
/// take the same form, in `buf`, one slot of `width` values per input.
///
/// One input (decode) takes the matrix-vector kernel. Several take the
/// matrix-matrix kernel, which gives every output row bitwise what the
/// matrix-vector one would, but a task reads a group of weight rows and
/// applies it to every input before moving on, so the weights stream from
/// memory once per batch instead of once per token.
fn matmuls<const N: usize>(
    compute: Compute<'_>,
    buf: &mut InputBuffers<'_>,
    width: usize,
    n: usize,
    x: &[f32],
    jobs: [(&mut [f32], &WeightRef<'_>); N],
) {
    let Compute { isa, exec } = compute;
    let cols = x.len() / n;
    let mut ready = None;
    for (out, w) in jobs {
        let form = match n {
            1 => InputForm::of(w.dtype()),
            _ => batch_form(isa, w),
        };
        if ready != Some(form) {
            for (t, x) in x.chunks_exact(cols).enumerate() {
                quantize(isa, form, x, &mut buf.slot(t, width));
            }
            ready = Some(form);
        }
        let buf = &*buf;
        let inputs: heapless::Vec<Input<'_>, MAX_BATCH> = x
            .chunks_exact(cols)
            .enumerate()
            .map(|(t, x)| buf.slot_input(t, width, form, x))
            .collect();
        if let [x] = &inputs[..] {
            for_rows(exec, out, &|start, rows| {
                matvec(isa, rows, &w.rows_at(start, rows.len()), x)
            });
            continue;
        }
        let rows = w.rows();
        let row_bytes = w.bytes() / rows.max(1);
        let group = (GROUP_BYTES / row_bytes.max(1)).next_multiple_of(ROW_GRANULE);
        for_row_blocks(exec, out, rows, &|mut block| {
            let mut start = block.start;
            while start < block.end {
                let end = (start + group).min(block.end);
                let at = start - block.start..end - block.start;
                let mut outs: heapless::Vec<&mut [f32], MAX_BATCH> =
                    block.outs().map(|o| &mut o[at.clone()]).collect();
                matmul(isa, &mut outs, &w.rows_at(start, end - start), &inputs);
                start = end;
            }
        });
    }
}

/// Every token inside the vocabulary, and the positions up to `end` inside
/// the planned context.
fn check_input(p: &Config, tokens: &[u32], end: usize) -> Result<()> {
    if end > p.seq_len {
        return Err(Error::ContextFull {
            needed: end,
            max: p.seq_len,
        });
    }
    match tokens.iter().find(|&&t| t as usize >= p.vocab_size) {
        Some(&id) => Err(Error::Token {
            id: id.into(),
            vocab: p.vocab_size,
        }),
        None => Ok(()),
    }
}

/// Position `pos`'s RoPE rotation, shared by every head.
fn rope_tables(cos: &mut [f32], sin: &mut [f32], inv_freq: &[f32], angles: Angles, pos: usize) {
    let mut theta = pos as f32;
    for ((c, sn), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let angle = match angles {
            Angles::Llama2c => pos as f32 * f,
            Angles::LlamaCpp { step, scale } => {
                let angle = scale * (theta / f);
                theta *= step;
                angle
            }
        };
        *c = crate::libc::cosf(angle);
        *sn = crate::libc::sinf(angle);
    }
}

impl<'m, 'a> Transformer<'m, 'a> {
    /// Binds `model` to its carved state; `config` is the plan's, which may
    /// differ from the model's only in `seq_len`. The arithmetic runs on
    /// `compute`.
    pub fn new(
        model: &'m Model<'m>,
        config: &Config,
        s: StateBuffers<'a>,
        compute: Compute<'m>,
    ) -> Result<Self> {
        let m = &model.config;
        if *config
            != (Config {
                seq_len: config.seq_len,
                ..*m
            })
        {
            return Err(Error::Misuse {
                what: "a plan made for another model, its dim",
                value: config.dim as i64,
            });
        }
        let head_size = config.head_size();
        // RoPE: llama2.c's frequencies per pair, each divided by its Llama 3
        // factor and scaled as the file asks; or, for GGUF, llama.cpp's
        // running angle, which divides by the factors itself.
        let factors = model.weights.rope_freqs.map_or(&[][..], |f| f.data());
        let factor = |i: usize| {
            factors
                .get(4 * i..4 * i + 4)
                .map_or(1.0, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let angles = match model.format {
            Format::Llama2c { .. } => Angles::Llama2c,
            Format::Gguf { .. } => Angles::LlamaCpp {
                step: libm::pow(
                    f64::from(config.rope_theta),
                    f64::from(-2.0 / head_size as f32),
                ) as f32,
                scale: config.rope_scale,
            },
        };
        for (i, f) in s.inv_freq.iter_mut().enumerate() {
            *f = match angles {
                Angles::LlamaCpp { .. } => factor(i),
                Angles::Llama2c => {
                    let head_dim = (2 * i) as f32;
                    1.0 / libm::pow(
                        f64::from(config.rope_theta),
                        f64::from(head_dim / head_size as f32),
                    ) as f32
                        / factor(i)
                        * config.rope_scale
                }
            };
        }
        Ok(Transformer {
            model,
            config: *config,
            angles,
            compute,
            s,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The instruction set the kernels run on.
    pub fn isa(&self) -> Isa {
        self.compute.isa
    }

    pub fn model(&self) -> &'m Model<'m> {
        self.model
    }

    /// Runs `token` at position `pos` and returns the logits over the
    /// vocabulary. Positions must be fed in order from 0; the KV cache keeps
    /// everything before `pos`.
    pub fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32]> {
        check_input(&self.config, &[token], pos.saturating_add(1))?;
        self.step(&[token], Slots::Prompt { pos });
        Ok(self.head(0, 1))
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` and returns the
    /// logits after the last one: a prompt, in chunks of the plan's batch.
    /// The logits and the KV cache are bitwise those of calling
    /// [`Transformer::forward`] token by token.
    pub fn prefill(&mut self, tokens: &[u32], pos: usize) -> Result<&mut [f32]> {
        let Some(last) = tokens.len().checked_sub(1) else {
            return Err(Error::Misuse {
                what: "prefill token count",
                value: 0,
            });
        };
        self.fill(tokens, pos)?;
        Ok(self.head(last % self.s.rows, 1))
    }

    /// [`Transformer::prefill`] without the logits, for input whose next
    /// token is already known: only the KV cache is written, and the
    /// classifier (a large share of a token's weights) is not read.
    pub fn fill(&mut self, tokens: &[u32], pos: usize) -> Result<()> {
        check_input(&self.config, tokens, pos.saturating_add(tokens.len()))?;
        let rows = self.s.rows;
        for (i, chunk) in tokens.chunks(rows).enumerate() {
            self.step(
                chunk,
                Slots::Prompt {
                    pos: pos + i * rows,
                },
            );
        }
        Ok(())
    }

    /// Runs one token of each beam at position `pos`, token `t` with KV
    /// cache `caches[t]` (distinct, below the plan's beams), and returns
    /// their logits one row per token. Each weight block is read once for
    /// all of them; each row is bitwise what [`Transformer::forward`]
    /// gives with that cache.
    pub fn forward_beams(
        &mut self,
        tokens: &[u32],
        pos: usize,
        caches: &[usize],
    ) -> Result<&mut [f32]> {
        let n = tokens.len();
        let slots = self.s.kv.caches(&self.config);
        let distinct = caches
            .iter()
            .enumerate()
            .all(|(i, c)| *c < slots && !caches[..i].contains(c));
        if n == 0 || n != caches.len() || n > self.s.rows || !distinct {
            return Err(Error::Misuse {
                what: "beam count, or their caches",
                value: n as i64,
            });
        }
        check_input(&self.config, tokens, pos.saturating_add(1))?;
        self.step(tokens, Slots::Beams { pos, caches });
        Ok(self.head(0, n))
    }

    /// Copies the first `positions` positions of KV cache `from` into
    /// cache `to` (a beam taking over its parent's past).
    pub fn copy_cache(&mut self, from: usize, to: usize, positions: usize) -> Result<()> {
        let p = self.config;
        let slots = self.s.kv.caches(&p);
        if from >= slots || to >= slots || positions > p.seq_len {
            return Err(Error::Misuse {
                what: "KV cache",
                value: from.max(to) as i64,
            });
        }
        if from != to {
            self.s.kv.copy(self.compute.exec, &p, (from, to), positions);
        }
        Ok(())
    }

    /// The classifier head: the final rmsnorm and the logits of the `n`
    /// hidden states in rows `first..first + n` of `x`, one row of logits
    /// each.
    fn head(&mut self, first: usize, n: usize) -> &mut [f32] {
        let (p, s) = (&self.config, &mut self.s);
        let w = &self.model.weights;
        let (dim, width) = (p.dim, s.input.qs.len() / s.rows);
        let (x, xb) = (&s.x[first * dim..(first + n) * dim], &mut s.xb[..n * dim]);
        for (xb, x) in xb.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
            rmsnorm(self.compute.isa, xb, x, &w.rms_final, p.norm_eps);
        }
        let logits = &mut s.logits[..n * p.vocab_size];
        let head = [(&mut *logits, &w.wcls)];
        matmuls(self.compute, &mut s.input, width, n, xb, head);
        logits
    }

    /// One pass of `tokens` (checked by the caller, at most the plan's
    /// rows) through every layer, each at its slot's position and cache:
    /// run.c's `forward` for several tokens at once. Leaves the final
    /// hidden states in the first rows of `x`.
    fn step(&mut self, tokens: &[u32], at: Slots<'_>) {
        let p = &self.config;
        let w = &self.model.weights;
        let s = &mut self.s;
        let compute = self.compute;
        let (isa, exec) = (compute.isa, compute.exec);
        let (dim, kv_dim, hidden) = (p.dim, p.kv_dim(), p.hidden_dim);
        let (kv_mul, head_size, half) = (p.kv_mul(), p.head_size(), p.head_size() / 2);
        let n = tokens.len();
        let width = s.input.qs.len() / s.rows;
        let (x, xb, xb2) = (
            &mut s.x[..n * dim],
            &mut s.xb[..n * dim],
            &mut s.xb2[..n * dim],
        );
        let (q, k, v) = (
            &mut s.q[..n * dim],
            &mut s.k[..n * kv_dim],
            &mut s.v[..n * kv_dim],
        );
        let (hb, hb2) = (&mut s.hb[..n * hidden], &mut s.hb2[..n * hidden]);
        let (cos, sin) = (&mut s.cos[..n * half], &mut s.sin[..n * half]);

        // Each token's embedding, and the RoPE rotation at its position.
        for (t, (x, (cos, sin))) in x
            .chunks_exact_mut(dim)
            .zip(cos.chunks_exact_mut(half).zip(sin.chunks_exact_mut(half)))
            .enumerate()
        {
            row(x, &w.token_embedding, tokens[t] as usize);
            rope_tables(cos, sin, s.inv_freq, self.angles, at.of(t).0);
        }

        let cache_len = p.n_layers * p.seq_len * kv_dim;
        for (l, lw) in w.layers.iter().enumerate() {
            // Token t's position, and where its cache's layer l starts.
            let slot = |t: usize| {
                let (pos, cache) = at.of(t);
                (pos, cache * cache_len + l * p.seq_len * kv_dim)
            };

            // Attention rmsnorm, then the query, key and value.
            for (xb, x) in xb.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                rmsnorm(isa, xb, x, &lw.rms_att, p.norm_eps);
            }
            let qkv = [(&mut *q, &lw.wq), (&mut *k, &lw.wk), (&mut *v, &lw.wv)];
            matmuls(compute, &mut s.input, width, n, xb, qkv);

            // RoPE: rotate q and k in every head; keep k and v in the cache.
            for (t, ((q, k), v)) in q
                .chunks_exact_mut(dim)
                .zip(k.chunks_exact_mut(kv_dim))
                .zip(v.chunks_exact(kv_dim))
                .enumerate()
            {
                let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                rope(isa, q, cos, sin);
                rope(isa, k, cos, sin);
                let (pos, layer) = slot(t);
                s.kv.put(isa, layer + pos * kv_dim, k, v);
            }

            // Multi-head attention, a query head per parallel task for
            // every token; query head h reads KV head h / kv_mul.
            let (q, kv) = (&*q, &s.kv);
            let att_len = s.att.len() / p.n_heads;
            for_each_head(
                exec,
                s.att,
                att_len,
                xb,
                dim,
                head_size,
                &|h, att, mut xb| {
                    for (t, xb) in xb.outs().enumerate() {
                        let (pos, layer) = slot(t);
                        let q = &q[t * dim + h * head_size..][..head_size];
                        let head = layer + (h / kv_mul) * head_size;
                        kv.attend(isa, q, head, kv_dim, pos + 1, att, xb);
                    }
                },
            );

            // Output projection and residual.
            matmuls(compute, &mut s.input, width, n, xb, [(&mut *xb2, &lw.wo)]);
            for (x, xb2) in x.chunks_exact_mut(dim).zip(xb2.chunks_exact(dim)) {
                add(isa, x, xb2);
            }

            // Feed-forward: w2(silu(w1·x) * w3·x), and residual.
            for (xb, x) in xb.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                rmsnorm(isa, xb, x, &lw.rms_ffn, p.norm_eps);
            }
            let ffn = [(&mut *hb, &lw.w1), (&mut *hb2, &lw.w3)];
            matmuls(compute, &mut s.input, width, n, xb, ffn);
            for (hb, hb2) in hb.chunks_exact_mut(hidden).zip(hb2.chunks_exact(hidden)) {
                swiglu(isa, hb, hb2);
            }
            matmuls(compute, &mut s.input, width, n, hb, [(&mut *xb, &lw.w2)]);
            for (x, xb) in x.chunks_exact_mut(dim).zip(xb.chunks_exact(dim)) {
                add(isa, x, xb);
            }
        }
    }
}
