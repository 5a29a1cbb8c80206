//! The shape and hyper-parameters of a LLaMA-family transformer, as every
//! reader produces them and every layer of the engine consumes them.

use crate::error::{Error, Result};

/// Most layers a model may have. Llama 3.1 405B has 126; the limit keeps the
/// per-layer table a fixed-size value instead of an allocation.
pub const MAX_LAYERS: usize = 128;

/// The hyper-parameters of a LLaMA-family transformer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub rope_theta: f32,
    /// Every RoPE angle is multiplied by this: 1, or `1 / factor` for
    /// linear scaling (`llama.rope.scaling.factor`), which stretches the
    /// positions a model was trained on over a longer context.
    pub rope_scale: f32,
    pub norm_eps: f32,
}

impl Config {
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of one position's keys (and values): all KV heads together.
    pub fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }

    /// Query heads that share one KV head (1 = MHA, `n_heads` = MQA).
    pub fn kv_mul(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Checks what every reader must: positive sizes, heads that divide the
    /// width, KV heads that divide the heads, RoPE pairs, and a size that
    /// fits the address space. Values are `i64` so negative header fields
    /// are reported as read.
    pub(crate) fn validate(&self) -> Result<()> {
        let fields = [
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("vocab_size", self.vocab_size),
            ("seq_len", self.seq_len),
        ];
        for (field, value) in fields {
            if value == 0 {
                return Err(Error::Invalid { field, value: 0 });
            }
        }
        if self.n_layers > MAX_LAYERS {
            return Err(Error::Unsupported {
                field: "n_layers",
                value: self.n_layers as i64,
            });
        }
        let mismatch = |field, value: usize, rule, other, other_value: usize| Error::Mismatch {
            field,
            value: value as i64,
            rule,
            other,
            other_value: other_value as i64,
        };
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(mismatch(
                "dim",
                self.dim,
                "is not a multiple of",
                "n_heads",
                self.n_heads,
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(mismatch(
                "n_heads",
                self.n_heads,
                "is not a multiple of",
                "n_kv_heads",
                self.n_kv_heads,
            ));
        }
        if !self.head_size().is_multiple_of(2) {
            return Err(Error::Invalid {
                field: "head_size (RoPE rotates pairs)",
                value: self.head_size() as i64,
            });
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::Invalid {
                field: "rope_theta",
                value: self.rope_theta as i64,
            });
        }
        if !(self.rope_scale.is_finite() && self.rope_scale > 0.0) {
            return Err(Error::Invalid {
                field: "rope scale (1 / llama.rope.scaling.factor)",
                value: self.rope_scale as i64,
            });
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(Error::Invalid {
                field: "norm_eps",
                value: self.norm_eps as i64,
            });
        }
        // The KV cache is the largest product the engine forms.
        self.n_layers
            .checked_mul(self.seq_len)
            .and_then(|n| n.checked_mul(self.dim))
            .and_then(|n| n.checked_mul(8))
            .ok_or(Error::Overflow { field: "seq_len" })?;
        Ok(())
    }
}
