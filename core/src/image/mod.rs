//! Weight images: sniff the format of a `&[u8]` and expose it as a [`Model`],
//! a validated [`Config`] plus zero-copy [`WeightRef`]s into the same bytes.

pub mod gguf;
pub mod llama2c;
pub mod vocab;

use crate::config::{Config, MAX_LAYERS};
use crate::error::Result;
use crate::tensor::WeightRef;

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
    /// Llama 3.1/3.2's RoPE frequency factors, which divide the frequency
    /// of each pair of a head's values (GGUF `rope_freqs.weight`).
    pub rope_freqs: Option<WeightRef<'w>>,
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
