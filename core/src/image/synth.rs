//! Seeded random models of any shape, written as llama2.c v1 images, so the
//! benchmark and tests run on a fresh machine with nothing downloaded.
//! The numbers are noise; the shape and the bytes read per token are real.

use super::llama2c::MAGIC;
use super::Config;
use crate::error::{Error, Result};
use crate::sampler::random_u32;

const HEADER_BYTES: usize = 256;

/// The stories110M shape (llama2.c's largest TinyStories model).
pub const STORIES110M: Config = Config {
    dim: 768,
    hidden_dim: 2048,
    n_layers: 12,
    n_heads: 12,
    n_kv_heads: 12,
    vocab_size: 32000,
    seq_len: 1024,
    rope_theta: 10000.0,
    norm_eps: 1e-5,
};

/// The v1 tensors in file order as (count, rows, cols); rows == 0 marks a
/// norm (filled with ones) instead of a random matrix.
fn tensors(c: &Config) -> [(usize, usize, usize); 9] {
    let (l, d, h, kv) = (c.n_layers, c.dim, c.hidden_dim, c.kv_dim());
    [
        (2 * l + 1, 0, d),    // attention norms, ffn norms, final norm
        (1, c.vocab_size, d), // embedding, tied to the classifier
        (l, d, d),            // wq
        (l, kv, d),           // wk
        (l, kv, d),           // wv
        (l, d, d),            // wo
        (l, h, d),            // w1
        (l, d, h),            // w2
        (l, h, d),            // w3
    ]
}

/// Size in bytes of the v1 image of `config` (tied classifier).
pub fn llama2c_v1_bytes(config: &Config) -> Result<usize> {
    config.validate()?;
    let overflow = Error::Overflow {
        field: "synthetic model",
    };
    tensors(config)
        .iter()
        .try_fold(HEADER_BYTES, |acc, &(n, rows, cols)| {
            n.checked_mul(rows.max(1))
                .and_then(|x| x.checked_mul(cols))
                .and_then(|x| x.checked_mul(4))
                .and_then(|x| x.checked_add(acc))
                .ok_or(overflow.clone())
        })
}

/// Writes the v1 image of `config` into `out` (exactly
/// [`llama2c_v1_bytes`] long), weights uniform in ±1/√cols from `seed`.
pub fn write_llama2c_v1(config: &Config, seed: u64, out: &mut [u8]) -> Result<()> {
    let need = llama2c_v1_bytes(config)?;
    if out.len() != need {
        return Err(Error::Mismatch {
            field: "synthetic image buffer",
            value: out.len() as i64,
            rule: "bytes differs from the",
            other: "needed bytes",
            other_value: need as i64,
        });
    }
    let (header, mut rest) = out.split_at_mut(HEADER_BYTES);
    header.fill(0);
    let dims = [
        config.dim,
        config.hidden_dim,
        config.n_layers,
        config.n_heads,
        config.n_kv_heads,
        config.vocab_size,
        config.seq_len,
    ];
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&1i32.to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        let v = i32::try_from(*d).map_err(|_| Error::Overflow {
            field: "synthetic dims",
        })?;
        header[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    header[36] = 1; // shared classifier
    let mut rng = seed | 1;
    for (n, rows, cols) in tensors(config) {
        let count = n * rows.max(1) * cols;
        let (part, tail) = rest.split_at_mut(count * 4);
        rest = tail;
        let scale = 1.0 / libm::sqrtf(cols as f32);
        for b in part.chunks_exact_mut(4) {
            let v = if rows == 0 {
                1.0
            } else {
                let unit = (random_u32(&mut rng) >> 8) as f32 / 8_388_608.0 - 1.0;
                unit * scale
            };
            b.copy_from_slice(&f32::to_le_bytes(v));
        }
    }
    Ok(())
}
