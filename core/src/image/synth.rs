//! Seeded random models of any shape — llama2.c v1 images for fp32, GGUF
//! for the other layouts — so the benchmark and tests run on a fresh
//! machine with nothing downloaded. The numbers are noise; the shapes, the
//! types and the bytes read per token are real.

use super::gguf::{layer_name, Counter, SliceOutput, TensorSpec, Writer, LAYER_TENSORS};
use super::llama2c::MAGIC;
use super::Config;
use crate::app::Output;
use crate::error::{Error, Result};
use crate::sampler::random_u32;
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

/// The weight layouts `bench --format` synthesizes: fp32 as a llama2.c
/// image, the others as GGUF with the type mix llama.cpp's quantizer gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    F32,
    F16,
    Q8_0,
    /// Q4_0 matrices, the classifier Q6_K (as `llama-quantize Q4_0` does).
    Q4_0,
    /// Q4_K with Q6_K for the classifier and, in a third of the layers,
    /// `attn_v` and `ffn_down` (the rule of llama.cpp's Q4_K_M).
    Q4K,
}

impl Layout {
    pub const ALL: [Layout; 5] = [
        Layout::F32,
        Layout::F16,
        Layout::Q8_0,
        Layout::Q4_0,
        Layout::Q4K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layout::F32 => "f32",
            Layout::F16 => "f16",
            Layout::Q8_0 => "q8_0",
            Layout::Q4_0 => "q4_0",
            Layout::Q4K => "q4_k",
        }
    }

    pub fn parse(name: &[u8]) -> Option<Layout> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name().as_bytes() == name)
    }

    /// The type of layer `l`'s tensor `role` (an index into LAYER_TENSORS),
    /// or of the classifier when `l` is `None`.
    fn dtype(self, l: Option<usize>, role: usize, n_layers: usize) -> DType {
        let more_bits =
            |l: usize| l < n_layers / 8 || l >= 7 * n_layers / 8 || (l - n_layers / 8) % 3 == 2;
        match (self, l) {
            (Layout::F32, _) => DType::F32,
            (Layout::F16, _) => DType::F16,
            (Layout::Q8_0, _) => DType::Q8_0,
            (Layout::Q4_0 | Layout::Q4K, None) => DType::Q6K,
            (Layout::Q4_0, Some(_)) => DType::Q4_0,
            (Layout::Q4K, Some(l)) if (role == 3 || role == 7) && more_bits(l) => DType::Q6K,
            (Layout::Q4K, Some(_)) => DType::Q4K,
        }
    }
}

/// Calls `f` with every tensor of `config` in `layout`, in file order.
fn for_each_tensor(
    config: &Config,
    layout: Layout,
    mut f: impl FnMut(TensorSpec<'_>) -> Result<()>,
) -> Result<()> {
    let c = config;
    let (d, h, kv) = (c.dim, c.hidden_dim, c.kv_dim());
    let embd = layout.dtype(Some(0), 1, c.n_layers);
    f(TensorSpec {
        name: b"token_embd.weight",
        dtype: embd,
        rows: c.vocab_size,
        cols: d,
    })?;
    let norm = |name| TensorSpec {
        name,
        dtype: DType::F32,
        rows: 1,
        cols: d,
    };
    f(norm(b"output_norm.weight"))?;
    f(TensorSpec {
        name: b"output.weight",
        dtype: layout.dtype(None, 0, c.n_layers),
        rows: c.vocab_size,
        cols: d,
    })?;
    let shapes = [
        (1, d),
        (d, d),
        (kv, d),
        (kv, d),
        (d, d),
        (1, d),
        (h, d),
        (d, h),
        (h, d),
    ];
    for l in 0..c.n_layers {
        for (role, (&tensor, &(rows, cols))) in LAYER_TENSORS.iter().zip(&shapes).enumerate() {
            let dtype = if rows == 1 {
                DType::F32
            } else {
                layout.dtype(Some(l), role, c.n_layers)
            };
            f(TensorSpec {
                name: &layer_name(l, tensor),
                dtype,
                rows,
                cols,
            })?;
        }
    }
    Ok(())
}

/// Writes the GGUF image of `config` in `layout` (not F32) to `out`.
fn write_gguf_to(config: &Config, layout: Layout, seed: u64, out: &mut dyn Output) -> Result<()> {
    let c = config;
    let mut n = 0u64;
    for_each_tensor(c, layout, |_| {
        n += 1;
        Ok(())
    })?;
    let mut w = Writer::new(out, n, 10)?;
    w.str("general.architecture", b"llama")?;
    let dims = [
        ("llama.embedding_length", c.dim),
        ("llama.feed_forward_length", c.hidden_dim),
        ("llama.block_count", c.n_layers),
        ("llama.attention.head_count", c.n_heads),
        ("llama.attention.head_count_kv", c.n_kv_heads),
        ("llama.context_length", c.seq_len),
        ("llama.rope.dimension_count", c.head_size()),
    ];
    for (key, v) in dims {
        w.u32(
            key,
            u32::try_from(v).map_err(|_| Error::Overflow { field: key })?,
        )?;
    }
    w.f32("llama.rope.freq_base", c.rope_theta)?;
    w.f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps)?;
    let mut offset = 0u64;
    for_each_tensor(c, layout, |t| {
        w.tensor_info(&t, offset)?;
        offset = t.next_offset(offset)?;
        Ok(())
    })?;
    w.align()?;
    let mut rng = seed | 1;
    let mut buf = [0u8; 1 << 14];
    for_each_tensor(c, layout, |t| {
        let (_, block) = t.dtype.block();
        let row = t.bytes()? / t.rows;
        let scale = 1.0 / libm::sqrtf(t.cols as f32);
        for _ in 0..t.rows {
            // Rows are far below 16 KiB for any benchmark shape; longer ones
            // are written in chunks of whole blocks.
            let mut left = row;
            while left > 0 {
                let n = left.min(buf.len() / block * block);
                random_blocks(t.dtype, &mut buf[..n], scale, &mut rng);
                w.data(&buf[..n])?;
                left -= n;
            }
        }
        w.align()
    })
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
            DType::Q4K => {
                b[..2].copy_from_slice(&half(scale / 8.0 / 63.0));
                b[2..4].copy_from_slice(&half(scale / 63.0));
            }
            DType::Q6K => b[208..210].copy_from_slice(&half(scale / 32.0 / 127.0)),
        }
    }
}

/// Size in bytes of the synthetic image of `config` in `layout`.
pub fn image_bytes(config: &Config, layout: Layout) -> Result<usize> {
    if layout == Layout::F32 {
        return llama2c_v1_bytes(config);
    }
    config.validate()?;
    let mut count = Counter::default();
    write_gguf_to(config, layout, 1, &mut count)?;
    usize::try_from(count.0).map_err(|_| Error::Overflow {
        field: "synthetic model",
    })
}

/// Writes the synthetic image of `config` in `layout` into `out`, which
/// must be exactly [`image_bytes`] long.
pub fn write_image(config: &Config, layout: Layout, seed: u64, out: &mut [u8]) -> Result<()> {
    if layout == Layout::F32 {
        return write_llama2c_v1(config, seed, out);
    }
    write_gguf_to(config, layout, seed, &mut SliceOutput { buf: out, pos: 0 })
}
