//! Seeded random models of any shape — llama2.c v1 images for fp32, GGUF
//! for the other layouts — so the benchmark and tests run on a fresh
//! machine with nothing downloaded. The numbers are noise; the shapes, the
//! types and the bytes read per token are real.

use super::export::{write_gguf, Layout, Role, Source};
use super::gguf::{TensorSpec, Writer};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::image::llama2c::MAGIC;
use crate::io::{Counter, Output, SliceOutput};
use crate::rng::random_u32;
use crate::tensor::DType;

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
    rope_scale: 1.0,
    norm_eps: 1e-5,
};

/// The v1 and v2 tensors in file order as (count, rows, cols); rows == 0
/// marks a norm (f32, filled with ones) instead of a random matrix.
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

/// Size in bytes of the llama2.c image of `config` (tied classifier) with
/// matrices of type `matrices`: F32 (v1) or [`DType::Q8G`] (v2).
pub fn llama2c_bytes(config: &Config, matrices: DType) -> Result<usize> {
    config.validate()?;
    let overflow = Error::Overflow {
        field: "synthetic model",
    };
    tensors(config)
        .iter()
        .try_fold(HEADER_BYTES, |acc, &(n, rows, cols)| {
            let one = match rows {
                0 => cols.checked_mul(4),
                _ => matrices.bytes(rows, cols),
            };
            one.and_then(|x| x.checked_mul(n))
                .and_then(|x| x.checked_add(acc))
                .ok_or(overflow.clone())
        })
}

/// Writes the llama2.c image of `config` into `out` (exactly
/// [`llama2c_bytes`] long): v1 with f32 weights uniform in ±1/√cols, or v2
/// with random int8 values scaled to the same range, from `seed`.
pub fn write_llama2c(config: &Config, matrices: DType, seed: u64, out: &mut [u8]) -> Result<()> {
    let need = llama2c_bytes(config, matrices)?;
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
    let version: i32 = if matrices == DType::F32 { 1 } else { 2 };
    header[4..8].copy_from_slice(&version.to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        let v = i32::try_from(*d).map_err(|_| Error::Overflow {
            field: "synthetic dims",
        })?;
        header[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    header[36] = 1; // shared classifier
    if let DType::Q8G { group } = matrices {
        header[37..41].copy_from_slice(&(group as i32).to_le_bytes());
    }
    let mut rng = seed | 1;
    for (n, rows, cols) in tensors(config) {
        let one = if rows == 0 {
            4 * cols
        } else {
            matrices.bytes(rows, cols).unwrap_or(0)
        };
        let (part, tail) = rest.split_at_mut(n * one);
        rest = tail;
        if rows == 0 {
            for b in part.chunks_exact_mut(4) {
                b.copy_from_slice(&1.0f32.to_le_bytes());
            }
        } else {
            for m in part.chunks_exact_mut(one) {
                random_blocks(matrices, m, 1.0 / libm::sqrtf(cols as f32), &mut rng);
            }
        }
    }
    Ok(())
}

/// Random rows for [`write_gguf`]: no metadata beyond the shape.
struct Random(u64);

impl Source for Random {
    fn metadata_count(&self) -> u64 {
        0
    }

    fn metadata(&mut self, _: &mut Writer<'_>) -> Result<()> {
        Ok(())
    }

    fn row(&mut self, _: Role, spec: &TensorSpec<'_>, _: usize, out: &mut [u8]) -> Result<()> {
        random_blocks(
            spec.dtype,
            out,
            1.0 / libm::sqrtf(spec.cols as f32),
            &mut self.0,
        );
        Ok(())
    }

    fn progress(&mut self, _: usize, _: usize, _: &TensorSpec<'_>) {}
}

/// Writes the GGUF image of `config` in `layout` (not F32) to `out`.
fn write_gguf_to(config: &Config, layout: Layout, seed: u64, out: &mut dyn Output) -> Result<()> {
    // Rows of any benchmark shape are far below this.
    let mut scratch = [0u8; 1 << 15];
    write_gguf(config, layout, &mut Random(seed | 1), out, &mut scratch)
}

/// Fills `out` (whole blocks) with random weights of type `dtype` whose
/// magnitudes stay around `scale`: for benchmarks and tests of any layout.
pub fn fill_random(dtype: DType, out: &mut [u8], scale: f32, seed: u64) {
    random_blocks(dtype, out, scale, &mut (seed | 1));
}

/// Random weights of type `dtype` with scales keeping `|w| ≲ scale`.
fn random_blocks(dtype: DType, out: &mut [u8], scale: f32, rng: &mut u64) {
    for chunk in out.chunks_mut(4) {
        let r = random_u32(rng).to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let (_, block) = dtype.block();
    let half = |x: f32| crate::tensor::f32_to_f16(x).to_le_bytes();
    for b in out.chunks_exact_mut(block) {
        match dtype {
            DType::F32 => {
                let unit =
                    (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 8) as f32 / 8_388_608.0 - 1.0;
                b.copy_from_slice(&(unit * scale).to_le_bytes());
            }
            DType::F16 => {
                let unit = (u16::from_le_bytes([b[0], b[1]]) as f32) / 32768.0 - 1.0;
                b.copy_from_slice(&half(unit * scale));
            }
            DType::Q8_0 => b[..2].copy_from_slice(&half(scale / 127.0)),
            DType::Q4_0 => b[..2].copy_from_slice(&half(scale / 8.0)),
            DType::Q4_1 => {
                b[..2].copy_from_slice(&half(scale / 7.5));
                b[2..4].copy_from_slice(&half(-scale));
            }
            DType::Q4K => {
                b[..2].copy_from_slice(&half(scale / 8.0 / 63.0));
                b[2..4].copy_from_slice(&half(scale / 63.0));
            }
            DType::Q6K => b[208..210].copy_from_slice(&half(scale / 32.0 / 127.0)),
            DType::BF16 => {
                let unit = (u16::from_le_bytes([b[0], b[1]]) as f32) / 32768.0 - 1.0;
                b.copy_from_slice(&crate::tensor::f32_to_bf16(unit * scale).to_le_bytes());
            }
            DType::Q5_0 => b[..2].copy_from_slice(&half(scale / 16.0)),
            DType::Q5_1 => {
                b[..2].copy_from_slice(&half(scale / 15.5));
                b[2..4].copy_from_slice(&half(-scale));
            }
            DType::IQ4NL => b[..2].copy_from_slice(&half(scale / 127.0)),
            DType::IQ4XS => b[..2].copy_from_slice(&half(scale / 127.0 / 32.0)),
            DType::Q5K => {
                b[..2].copy_from_slice(&half(scale / 16.0 / 63.0));
                b[2..4].copy_from_slice(&half(scale / 63.0));
            }
            DType::Q3K => b[108..110].copy_from_slice(&half(scale / 4.0 / 32.0)),
            DType::Q2K => {
                b[80..82].copy_from_slice(&half(scale / 3.0 / 15.0));
                b[82..84].copy_from_slice(&half(scale / 15.0));
            }
            // Values stay random bytes; the scales are set below.
            DType::Q8G { .. } => {}
        }
    }
    if let DType::Q8G { group } = dtype {
        // `n` values and `n / group` scales: the scales are the last part.
        let n = out.len() / (group as usize + 4) * group as usize;
        for s in out[n..].chunks_exact_mut(4) {
            s.copy_from_slice(&(scale / 127.0).to_le_bytes());
        }
    }
}

/// The images `bench --format` synthesizes: a GGUF mix (F32 as a
/// llama2.c v1 image instead), or llama2.c v2 with groups of 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synthetic {
    Gguf(Layout),
    Llama2cV2,
}

impl Synthetic {
    pub fn parse(name: &[u8]) -> Option<Synthetic> {
        match name {
            b"v2" => Some(Synthetic::Llama2cV2),
            _ => Layout::parse(name).map(Synthetic::Gguf),
        }
    }
}

/// The group size of the synthetic llama2.c v2 image (`export.py`'s default).
const V2: DType = DType::Q8G { group: 64 };

/// Size in bytes of the synthetic image of `config` as `kind`.
pub fn image_bytes(config: &Config, kind: Synthetic) -> Result<usize> {
    match kind {
        Synthetic::Gguf(Layout::F32) => llama2c_bytes(config, DType::F32),
        Synthetic::Llama2cV2 => llama2c_bytes(config, V2),
        Synthetic::Gguf(layout) => {
            config.validate()?;
            let mut count = Counter::default();
            write_gguf_to(config, layout, 1, &mut count)?;
            usize::try_from(count.0).map_err(|_| Error::Overflow {
                field: "synthetic model",
            })
        }
    }
}

/// Writes the synthetic image of `config` as `kind` into `out`, which must
/// be exactly [`image_bytes`] long.
pub fn write_image(config: &Config, kind: Synthetic, seed: u64, out: &mut [u8]) -> Result<()> {
    match kind {
        Synthetic::Gguf(Layout::F32) => write_llama2c(config, DType::F32, seed, out),
        Synthetic::Llama2cV2 => write_llama2c(config, V2, seed, out),
        Synthetic::Gguf(layout) => {
            write_gguf_to(config, layout, seed, &mut SliceOutput { buf: out, pos: 0 })
        }
    }
}
