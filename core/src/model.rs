//! The transformer forward pass, in the shape of llama2.c's `run.c`: one
//! token at one position in, logits out, with activations and the KV cache
//! in arena buffers and the weights read in place from the image.

use crate::arena::{KvBuffers, StateBuffers, MAX_BATCH};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::{
    for_each_head, for_each_pair, for_row_blocks, for_rows, Compute, Exec, ROW_GRANULE,
};
use crate::image::Model;
use crate::kernels::{
    add, attention_f16, attention_mix, attention_scores, batch_form, f32_to_f16, matmul, matvec,
    quantize, rmsnorm, rope, row, softmax, swiglu, Input, InputBuffers, InputForm, Isa,
};
use crate::tensor::WeightRef;

/// A model plus its run state: the equivalent of llama2.c's `Transformer`.
pub struct Transformer<'m, 'a> {
    model: &'m Model<'m>,
    /// The model's config with the planned (possibly shorter) `seq_len`.
    config: Config,
    compute: Compute<'m>,
    s: StateBuffers<'a>,
}

/// `out = w · x` for each pair, with the rows split across the threads.
/// `x` is first put in the form the weights' type takes (int8 blocks for
/// quantized weights), once for a run of weights that take the same form.
fn matmuls<const N: usize>(
    compute: Compute<'_>,
    buf: &mut InputBuffers<'_>,
    x: &[f32],
    jobs: [(&mut [f32], &WeightRef<'_>); N],
) {
    let Compute { isa, exec } = compute;
    let mut ready = None;
    for (out, w) in jobs {
        let form = InputForm::of(w.dtype());
        if ready != Some(form) {
            quantize(isa, form, x, buf);
            ready = Some(form);
        }
        let x = buf.input(form, x);
        for_rows(exec, out, &|start, rows| {
            matvec(isa, rows, &w.rows_at(start, rows.len()), &x)
        });
    }
}

/// Weight rows a prefill task reads once for every token of the batch: a
/// group this size stays in the core's cache while each token uses it.
const GROUP_BYTES: usize = 64 * 1024;

/// [`matmuls`] for `n` tokens: `x` holds `n` inputs of `cols` values, each
/// output `n` rows of results. Every output row is computed by the same
/// kernel call on the same rows as `matmuls` would, so the results are
/// bitwise the same; but a task reads a group of weight rows and applies
/// it to every token before moving on, so the weights stream from memory
/// once per batch instead of once per token.
fn batch_matmuls<const N: usize>(
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
        let form = batch_form(isa, w);
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
        let rows = w.rows();
        let row_bytes = w.bytes() / rows.max(1);
        let group = (GROUP_BYTES / row_bytes.max(1)).next_multiple_of(ROW_GRANULE);
        for_row_blocks(exec, out, rows, &|mut block| {
            let mut start = block.start;
            while start < block.end {
                let end = (start + group).min(block.end);
                let w = w.rows_at(start, end - start);
                let at = start - block.start..end - block.start;
                let mut outs = block.outs();
                let mut outs: heapless::Vec<&mut [f32], MAX_BATCH> =
                    outs.iter_mut().map(|o| &mut o[at.clone()]).collect();
                matmul(isa, &mut outs, &w, &inputs);
                start = end;
            }
        });
    }
}

/// Where the tokens of a batched pass run.
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
fn rope_tables(cos: &mut [f32], sin: &mut [f32], inv_freq: &[f32], pos: usize) {
    for ((c, sn), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let val = pos as f32 * f;
        *c = libm::cos(f64::from(val)) as f32;
        *sn = libm::sin(f64::from(val)) as f32;
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
            return Err(Error::Invalid {
                field: "plan made for another model, its dim",
                value: config.dim as i64,
            });
        }
        let head_size = config.head_size();
        // RoPE frequencies, as llama2.c computes them per pair.
        for (i, f) in s.inv_freq.iter_mut().enumerate() {
            let head_dim = (2 * i) as f32;
            *f = 1.0
                / libm::pow(
                    f64::from(config.rope_theta),
                    f64::from(head_dim / head_size as f32),
                ) as f32;
        }
        Ok(Transformer {
            model,
            config: *config,
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
        let p = &self.config;
        let w = &self.model.weights;
        let s = &mut self.s;
        let compute = self.compute;
        let (isa, exec): (Isa, &dyn Exec) = (compute.isa, compute.exec);
        check_input(p, &[token], pos.saturating_add(1))?;
        let kv_dim = p.kv_dim();
        let kv_mul = p.kv_mul();
        let head_size = p.head_size();

        // Copy the token embedding into x.
        row(s.x, &w.token_embedding, token as usize);

        rope_tables(s.cos, s.sin, s.inv_freq, pos);

        for (l, lw) in w.layers.iter().enumerate() {
            // Attention rmsnorm.
            rmsnorm(isa, s.xb, s.x, &lw.rms_att, p.norm_eps);

            // Key and value at this position, to be kept in the cache.
            let at = l * p.seq_len * kv_dim + pos * kv_dim;
            let (k, v) = s.kv.rows(at, kv_dim);

            // qkv matmuls for this position.
            matmuls(
                compute,
                &mut s.input,
                s.xb,
                [(&mut *s.q, &lw.wq), (k, &lw.wk), (v, &lw.wv)],
            );

            // RoPE: rotate q and k in every head.
            rope(isa, s.q, s.cos, s.sin);
            rope(isa, k, s.cos, s.sin);
            s.kv.store(isa, at, kv_dim);

            // Multi-head attention, heads in parallel; query head h reads
            // KV head h / kv_mul.
            let (q, kv, loff) = (&*s.q, &s.kv, l * p.seq_len * kv_dim);
            let att_len = s.att.len() / p.n_heads;
            for_each_pair(
                exec,
                p.n_heads,
                s.att,
                att_len,
                s.xb,
                head_size,
                &|h, att, xb| {
                    let q = &q[h * head_size..(h + 1) * head_size];
                    let head = loff + (h / kv_mul) * head_size;
                    kv.attend(isa, q, head, kv_dim, pos + 1, att, xb);
                },
            );

            // Output projection and residual.
            matmuls(compute, &mut s.input, s.xb, [(&mut *s.xb2, &lw.wo)]);
            add(isa, s.x, s.xb2);

            // Feed-forward: w2(silu(w1·x) * w3·x), and residual.
            rmsnorm(isa, s.xb, s.x, &lw.rms_ffn, p.norm_eps);
            matmuls(
                compute,
                &mut s.input,
                s.xb,
                [(&mut *s.hb, &lw.w1), (&mut *s.hb2, &lw.w3)],
            );
            swiglu(isa, s.hb, s.hb2);
            matmuls(compute, &mut s.input, s.hb, [(&mut *s.xb, &lw.w2)]);
            add(isa, s.x, s.xb);
        }

        // Final rmsnorm and the classifier.
        rmsnorm(isa, s.xb, s.x, &w.rms_final, p.norm_eps);
        let logits = &mut s.logits[..p.vocab_size];
        matmuls(compute, &mut s.input, s.xb, [(&mut *logits, &w.wcls)]);
        Ok(logits)
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` and returns the
    /// logits after the last one: a prompt, in chunks of the plan's batch.
    /// The logits and the KV cache are bitwise those of calling
    /// [`Transformer::forward`] token by token.
    pub fn prefill(&mut self, tokens: &[u32], pos: usize) -> Result<&mut [f32]> {
        if tokens.is_empty() {
            return Err(Error::Invalid {
                field: "prefill token count",
                value: 0,
            });
        }
        self.fill(tokens, pos)?;
        let (p, s) = (&self.config, &mut self.s);
        let logits = &mut s.logits[..p.vocab_size];
        // Without batch buffers `forward` ran last and left its logits.
        if s.batch.n >= 2 {
            let x = &s.batch.x[(tokens.len() - 1) % s.batch.n * p.dim..][..p.dim];
            let w = &self.model.weights;
            rmsnorm(self.compute.isa, s.xb, x, &w.rms_final, p.norm_eps);
            matmuls(self.compute, &mut s.input, s.xb, [(&mut *logits, &w.wcls)]);
        }
        Ok(logits)
    }

    /// [`Transformer::prefill`] without the logits, for input whose next
    /// token is already known: only the KV cache is written, and the
    /// classifier (a large share of a token's weights) is not read.
    pub fn fill(&mut self, tokens: &[u32], pos: usize) -> Result<()> {
        check_input(&self.config, tokens, pos.saturating_add(tokens.len()))?;
        let batch = self.s.batch.n;
        if batch < 2 {
            for (i, &t) in tokens.iter().enumerate() {
                self.forward(t, pos + i)?;
            }
            return Ok(());
        }
        for (i, chunk) in tokens.chunks(batch).enumerate() {
            self.chunk(
                chunk,
                Slots::Prompt {
                    pos: pos + i * batch,
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
        let p = self.config;
        let n = tokens.len();
        let slots = self.s.kv.caches(&p);
        let distinct = caches
            .iter()
            .enumerate()
            .all(|(i, c)| *c < slots && !caches[..i].contains(c));
        if n == 0 || n != caches.len() || n > self.s.batch.n || !distinct {
            return Err(Error::Invalid {
                field: "beam count",
                value: n as i64,
            });
        }
        check_input(&p, tokens, pos.saturating_add(1))?;
        self.chunk(tokens, Slots::Beams { pos, caches });
        let s = &mut self.s;
        let b = &mut s.batch;
        let width = b.input.qs.len() / b.n;
        let (x, xb) = (&b.x[..n * p.dim], &mut b.xb[..n * p.dim]);
        let w = &self.model.weights;
        for (xb, x) in xb.chunks_exact_mut(p.dim).zip(x.chunks_exact(p.dim)) {
            rmsnorm(self.compute.isa, xb, x, &w.rms_final, p.norm_eps);
        }
        let logits = &mut s.logits[..n * p.vocab_size];
        batch_matmuls(
            self.compute,
            &mut b.input,
            width,
            n,
            xb,
            [(&mut *logits, &w.wcls)],
        );
        Ok(logits)
    }

    /// Copies the first `positions` positions of KV cache `from` into
    /// cache `to` (a beam taking over its parent's past).
    pub fn copy_cache(&mut self, from: usize, to: usize, positions: usize) -> Result<()> {
        let p = self.config;
        let slots = self.s.kv.caches(&p);
        if from >= slots || to >= slots || positions > p.seq_len {
            return Err(Error::Invalid {
                field: "KV cache",
                value: from.max(to) as i64,
            });
        }
        if from != to {
            self.s.kv.copy(self.compute.exec, &p, (from, to), positions);
        }
        Ok(())
    }

    /// One batched pass, checked by the caller: `forward`'s steps for
    /// every token, each matmul batched; leaves the final hidden states in
    /// the batch's `x`.
    fn chunk(&mut self, tokens: &[u32], at: Slots<'_>) {
        let p = &self.config;
        let w = &self.model.weights;
        let s = &mut self.s;
        let compute = self.compute;
        let (isa, exec): (Isa, &dyn Exec) = (compute.isa, compute.exec);
        let (dim, kv_dim, hidden) = (p.dim, p.kv_dim(), p.hidden_dim);
        let (kv_mul, head_size) = (p.kv_mul(), p.head_size());
        let n = tokens.len();
        let b = &mut s.batch;
        let width = b.input.qs.len() / b.n;
        let (x, xb, xb2) = (
            &mut b.x[..n * dim],
            &mut b.xb[..n * dim],
            &mut b.xb2[..n * dim],
        );
        let (q, k, v) = (
            &mut b.q[..n * dim],
            &mut b.k[..n * kv_dim],
            &mut b.v[..n * kv_dim],
        );
        let (hb, hb2) = (&mut b.hb[..n * hidden], &mut b.hb2[..n * hidden]);

        for (x, &token) in x.chunks_exact_mut(dim).zip(tokens) {
            row(x, &w.token_embedding, token as usize);
        }
        for (l, lw) in w.layers.iter().enumerate() {
            for (xb, x) in xb.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                rmsnorm(isa, xb, x, &lw.rms_att, p.norm_eps);
            }
            let input = &mut b.input;
            let qkv = [(&mut *q, &lw.wq), (&mut *k, &lw.wk), (&mut *v, &lw.wv)];
            batch_matmuls(compute, input, width, n, xb, qkv);

            let cache_len = p.n_layers * p.seq_len * kv_dim;
            let loff = |t: usize| {
                let (pos, cache) = at.of(t);
                (pos, cache * cache_len + l * p.seq_len * kv_dim)
            };
            for (t, ((q, k), v)) in q
                .chunks_exact_mut(dim)
                .zip(k.chunks_exact_mut(kv_dim))
                .zip(v.chunks_exact(kv_dim))
                .enumerate()
            {
                let (pos, loff) = loff(t);
                rope_tables(s.cos, s.sin, s.inv_freq, pos);
                rope(isa, q, s.cos, s.sin);
                rope(isa, k, s.cos, s.sin);
                s.kv.put(isa, loff + pos * kv_dim, k, v);
            }
            // Attention, a query head per parallel task, for every token.
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
                    for (t, xb) in xb.outs().iter_mut().enumerate() {
                        let (pos, loff) = loff(t);
                        let q = &q[t * dim + h * head_size..][..head_size];
                        let head = loff + (h / kv_mul) * head_size;
                        kv.attend(isa, q, head, kv_dim, pos + 1, att, xb);
                    }
                },
            );

            batch_matmuls(compute, &mut b.input, width, n, xb, [(&mut *xb2, &lw.wo)]);
            for (x, xb2) in x.chunks_exact_mut(dim).zip(xb2.chunks_exact(dim)) {
                add(isa, x, xb2);
            }
            for (xb, x) in xb.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                rmsnorm(isa, xb, x, &lw.rms_ffn, p.norm_eps);
            }
            let ffn = [(&mut *hb, &lw.w1), (&mut *hb2, &lw.w3)];
            batch_matmuls(compute, &mut b.input, width, n, xb, ffn);
            for (hb, hb2) in hb.chunks_exact_mut(hidden).zip(hb2.chunks_exact(hidden)) {
                swiglu(isa, hb, hb2);
            }
            batch_matmuls(compute, &mut b.input, width, n, hb, [(&mut *xb, &lw.w2)]);
            for (x, xb) in x.chunks_exact_mut(dim).zip(xb.chunks_exact(dim)) {
                add(isa, x, xb);
            }
        }
    }
}

/// [`KvBuffers::copy`] for one element type: the first `len` of each of
/// the `layers` parts (`layer` long) of cache `from`'s keys and values into
/// cache `to`'s.
fn copy_layers<T: Copy + Send + Sync>(
    exec: &dyn Exec,
    [keys, values]: [&mut [T]; 2],
    (from, to): (usize, usize),
    (layers, layer): (usize, usize),
    len: usize,
) {
    let cache = layers * layer;
    let (src_k, dst_k) = apart(keys, from * cache, to * cache, cache);
    let (src_v, dst_v) = apart(values, from * cache, to * cache, cache);
    for_each_pair(exec, layers, dst_k, layer, dst_v, layer, &|l, k, v| {
        k[..len].copy_from_slice(&src_k[l * layer..][..len]);
        v[..len].copy_from_slice(&src_v[l * layer..][..len]);
    });
}

/// The `n` elements of `v` at `from`, to read, and at `to`, to write: two
/// ranges that must not overlap.
fn apart<T>(v: &mut [T], from: usize, to: usize, n: usize) -> (&[T], &mut [T]) {
    if from < to {
        let (a, b) = v.split_at_mut(to);
        (&a[from..from + n], &mut b[..n])
    } else {
        let (a, b) = v.split_at_mut(from);
        (&b[..n], &mut a[to..to + n])
    }
}

impl KvBuffers<'_> {
    /// The f32 rows where the key and value of cache index `at` are
    /// computed: in the cache itself, or scratch for an f16 cache.
    fn rows(&mut self, at: usize, kv_dim: usize) -> (&mut [f32], &mut [f32]) {
        match self {
            KvBuffers::F32 { keys, values } => {
                (&mut keys[at..at + kv_dim], &mut values[at..at + kv_dim])
            }
            KvBuffers::F16 { k_row, v_row, .. } => (&mut **k_row, &mut **v_row),
        }
    }

    /// How many KV caches (beams) the buffers hold.
    fn caches(&self, p: &Config) -> usize {
        let n = match self {
            KvBuffers::F32 { keys, .. } => keys.len(),
            KvBuffers::F16 { keys, .. } => keys.len(),
        };
        n / (p.n_layers * p.seq_len * p.kv_dim())
    }

    /// Copies the first `positions` positions of cache `from` into cache
    /// `to` (another), a layer per parallel task: at 2 threads a serial copy
    /// was a tenth of a 4-beam step.
    fn copy(&mut self, exec: &dyn Exec, p: &Config, caches: (usize, usize), positions: usize) {
        let layers = (p.n_layers, p.seq_len * p.kv_dim());
        let len = positions * p.kv_dim();
        match self {
            KvBuffers::F32 { keys, values } => {
                copy_layers(exec, [keys, values], caches, layers, len)
            }
            KvBuffers::F16 { keys, values, .. } => {
                copy_layers(exec, [keys, values], caches, layers, len)
            }
        }
    }

    /// Writes a key and value computed elsewhere at cache index `at`.
    fn put(&mut self, isa: Isa, at: usize, k: &[f32], v: &[f32]) {
        let n = k.len();
        match self {
            KvBuffers::F32 { keys, values } => {
                keys[at..at + n].copy_from_slice(k);
                values[at..at + n].copy_from_slice(v);
            }
            KvBuffers::F16 { keys, values, .. } => {
                f32_to_f16(isa, &mut keys[at..at + n], k);
                f32_to_f16(isa, &mut values[at..at + n], v);
            }
        }
    }

    /// Puts the rows of [`KvBuffers::rows`] into the cache (rounding them
    /// to f16 for an f16 cache).
    fn store(&mut self, isa: Isa, at: usize, kv_dim: usize) {
        if let KvBuffers::F16 {
            keys,
            values,
            k_row,
            v_row,
        } = self
        {
            f32_to_f16(isa, &mut keys[at..at + kv_dim], k_row);
            f32_to_f16(isa, &mut values[at..at + kv_dim], v_row);
        }
    }

    /// One query head's attention over `positions` cached positions of the
    /// KV head starting at `head`; `att` is scratch (`positions` floats for the
    /// f32 cache, twice that for the f16 one).
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        isa: Isa,
        q: &[f32],
        head: usize,
        kv_dim: usize,
        positions: usize,
        att: &mut [f32],
        out: &mut [f32],
    ) {
        let head_size = q.len() as f32;
        match self {
            // llama2.c: scores divided by √head_size, softmax, weighted sum.
            KvBuffers::F32 { keys, values } => {
                let att = &mut att[..positions];
                attention_scores(isa, att, q, &keys[head..], kv_dim, libm::sqrtf(head_size));
                softmax(isa, att);
                attention_mix(isa, out, att, &values[head..], kv_dim);
            }
            // llama.cpp: scores times 1/√head_size, online softmax.
            KvBuffers::F16 { keys, values, .. } => {
                let scale = 1.0 / libm::sqrtf(head_size);
                let scratch = &mut att[..2 * positions];
                attention_f16(
                    isa,
                    out,
                    q,
                    &keys[head..],
                    &values[head..],
                    kv_dim,
                    positions,
                    scale,
                    scratch,
                );
            }
        }
    }
}
