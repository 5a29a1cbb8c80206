//! The transformer forward pass, in the shape of llama2.c's `run.c`: one
//! token at one position in, logits out, with activations and the KV cache
//! in arena buffers and the weights read in place from the image.

use crate::arena::StateBuffers;
use crate::error::{Error, Result};
use crate::exec::{for_each_pair, for_rows, Compute, Exec};
use crate::image::{Config, Model};
use crate::kernels::{
    add, attention_mix, attention_scores, matvec, rmsnorm, rope, row, softmax, swiglu, Isa,
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

/// `out = w · x` with the rows split across the threads.
fn matmul(compute: Compute<'_>, out: &mut [f32], w: &WeightRef<'_>, x: &[f32]) {
    let Compute { isa, exec } = compute;
    for_rows(exec, out, &|start, rows| {
        matvec(isa, rows, &w.rows_at(start, rows.len()), x)
    });
}

impl<'m, 'a> Transformer<'m, 'a> {
    /// Binds `model` to its carved state; `config` is the plan's, which may
    /// only differ from the model's by a shorter `seq_len`. The arithmetic
    /// runs on `compute`.
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
        if config.seq_len > m.seq_len {
            return Err(Error::Mismatch {
                field: "plan seq_len",
                value: config.seq_len as i64,
                rule: "exceeds the model's",
                other: "seq_len",
                other_value: m.seq_len as i64,
            });
        }
        let head_size = config.head_size();
        // RoPE frequencies, as llama2.c computes them per pair.
        for (i, f) in s.inv_freq.iter_mut().enumerate() {
            let head_dim = (2 * i) as f32;
            *f = 1.0 / libm::powf(config.rope_theta, head_dim / head_size as f32);
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
        if token as usize >= p.vocab_size {
            return Err(Error::Token {
                id: token.into(),
                vocab: p.vocab_size,
            });
        }
        if pos >= p.seq_len {
            return Err(Error::ContextFull {
                needed: pos + 1,
                max: p.seq_len,
            });
        }
        let kv_dim = p.kv_dim();
        let kv_mul = p.kv_mul();
        let head_size = p.head_size();
        let scale = libm::sqrtf(head_size as f32);

        // Copy the token embedding into x.
        row(s.x, &w.token_embedding, token as usize);

        // This position's RoPE rotation, shared by every head.
        for ((c, sn), &f) in s
            .cos
            .iter_mut()
            .zip(s.sin.iter_mut())
            .zip(s.inv_freq.iter())
        {
            let val = pos as f32 * f;
            *c = libm::cosf(val);
            *sn = libm::sinf(val);
        }

        for (l, lw) in w.layers.iter().enumerate() {
            // Attention rmsnorm.
            rmsnorm(isa, s.xb, s.x, &lw.rms_att, p.norm_eps);

            // Key and value at this position go straight into the cache.
            let loff = l * p.seq_len * kv_dim;
            let at = loff + pos * kv_dim;
            let k = &mut s.key_cache[at..at + kv_dim];
            let v = &mut s.value_cache[at..at + kv_dim];

            // qkv matmuls for this position.
            matmul(compute, s.q, &lw.wq, s.xb);
            matmul(compute, k, &lw.wk, s.xb);
            matmul(compute, v, &lw.wv, s.xb);

            // RoPE: rotate q and k in every head.
            rope(isa, s.q, s.cos, s.sin);
            rope(isa, k, s.cos, s.sin);

            // Multi-head attention, heads in parallel; query head h reads
            // KV head h / kv_mul.
            let (q, keys, values) = (&*s.q, &*s.key_cache, &*s.value_cache);
            for_each_pair(
                exec,
                p.n_heads,
                s.att,
                p.seq_len,
                s.xb,
                head_size,
                &|h, att, xb| {
                    let q = &q[h * head_size..(h + 1) * head_size];
                    let att = &mut att[..pos + 1];
                    let kv_head = loff + (h / kv_mul) * head_size;
                    // Scores of q against every cached key, then their softmax.
                    attention_scores(isa, att, q, &keys[kv_head..], kv_dim, scale);
                    softmax(isa, att);
                    // The weighted sum of the cached values, into xb.
                    attention_mix(isa, xb, att, &values[kv_head..], kv_dim);
                },
            );

            // Output projection and residual.
            matmul(compute, s.xb2, &lw.wo, s.xb);
            add(isa, s.x, s.xb2);

            // Feed-forward: w2(silu(w1·x) * w3·x), and residual.
            rmsnorm(isa, s.xb, s.x, &lw.rms_ffn, p.norm_eps);
            matmul(compute, s.hb, &lw.w1, s.xb);
            matmul(compute, s.hb2, &lw.w3, s.xb);
            swiglu(isa, s.hb, s.hb2);
            matmul(compute, s.xb, &lw.w2, s.hb);
            add(isa, s.x, s.xb);
        }

        // Final rmsnorm and the classifier.
        rmsnorm(isa, s.xb, s.x, &w.rms_final, p.norm_eps);
        matmul(compute, s.logits, &w.wcls, s.xb);
        Ok(s.logits)
    }
}
