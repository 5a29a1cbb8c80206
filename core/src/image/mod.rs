//! Weight images: sniff the format of a `&[u8]` and expose it as a [`Model`],
//! a validated [`Config`] plus zero-copy [`WeightRef`]s into the same bytes.

pub mod export;
pub mod gguf;
pub mod llama2c;
pub mod synth;

use crate::error::{Error, Result};
use crate::tensor::WeightRef;

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

/// One transformer block's weights.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'w> {
    pub rms_att: WeightRef<'w>,
    pub wq: WeightRef<'w>,
    pub wk: WeightRef<'w>,
    pub wv: WeightRef<'w>,
    pub wo: WeightRef<'w>,
    pub rms_ffn: WeightRef<'w>,
    pub w1: WeightRef<'w>,
    pub w2: WeightRef<'w>,
    pub w3: WeightRef<'w>,
}

/// Every weight of the model, borrowed from the image.
#[derive(Clone, Debug)]
pub struct Weights<'w> {
    pub token_embedding: WeightRef<'w>,
    pub layers: heapless::Vec<LayerWeights<'w>, MAX_LAYERS>,
    pub rms_final: WeightRef<'w>,
    /// The classifier; the same bytes as `token_embedding` when tied.
    pub wcls: WeightRef<'w>,
}

/// Which file format the image was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// llama2.c checkpoint: version 0 (legacy header) or 1 (`ak42`).
    Llama2c {
        version: u32,
        shared_classifier: bool,
    },
    /// GGUF, version 2 or 3.
    Gguf { version: u32 },
}

/// A parsed, validated weight image.
#[derive(Clone, Debug)]
pub struct Model<'w> {
    pub config: Config,
    pub weights: Weights<'w>,
    pub format: Format,
    /// The GGUF file, for its metadata and vocabulary.
    pub gguf: Option<gguf::Gguf<'w>>,
}

impl<'w> Model<'w> {
    /// Reads any supported format from `image`, told apart by its magic.
    pub fn load(image: &'w [u8]) -> Result<Self> {
        if image.starts_with(b"GGUF") {
            gguf::model(gguf::Gguf::parse(image)?)
        } else {
            llama2c::parse(image)
        }
    }

    /// Bytes of weights read to produce one token: every layer matrix, the
    /// norms, the classifier and one embedding row. The roofline divides by it.
    pub fn bytes_per_token(&self) -> usize {
        let w = &self.weights;
        let layer: usize = w
            .layers
            .iter()
            .map(|l| {
                [
                    l.rms_att, l.wq, l.wk, l.wv, l.wo, l.rms_ffn, l.w1, l.w2, l.w3,
                ]
                .iter()
                .map(|t| t.data().len())
                .sum::<usize>()
            })
            .sum();
        let row = w.token_embedding.data().len() / w.token_embedding.rows();
        layer + w.rms_final.data().len() + w.wcls.data().len() + row
    }
}
