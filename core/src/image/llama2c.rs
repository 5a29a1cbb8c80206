//! llama2.c checkpoints, read in place.
//!
//! - v0 (legacy): seven `i32` (dim, hidden_dim, n_layers, n_heads,
//!   n_kv_heads, vocab_size, seq_len), then fp32 tensors grouped by kind
//!   across layers: embedding, attention norms, wq, wk, wv, wo, ffn norms,
//!   w1, w2, w3, final norm, the unused `freq_cis` tables, and a classifier
//!   only when `vocab_size` is negative. Data is just 4-byte aligned.
//! - v1: magic `ak42`, version, the same seven `i32`, a shared-classifier
//!   byte, zero padding to 256 bytes, then all norms first and the matrices
//!   in the v0 order.
//! - v2 (`runq`'s int8): v1's header plus an `i32` group size, the norms in
//!   fp32, then every matrix (embedding first) as its i8 values followed by
//!   one f32 scale per group of values.

use super::{Format, LayerWeights, Model, Weights};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::tensor::{DType, WeightRef};

/// `"ak42"` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x616b_3432;
/// v1 and v2 headers are zero-padded to this size.
const AK42_HEADER_BYTES: usize = 256;
/// No trained model is this wide; a first word beyond it is not a v0 `dim`
/// but some other file, and is reported as an unknown magic number.
const MAX_V0_DIM: u32 = 1 << 20;

pub(crate) fn parse(image: &[u8]) -> Result<Model<'_>> {
    let mut r = Reader::new(image);
    let first = r.u32("model header")?;
    if first == MAGIC {
        let version = r.i32("version")?;
        match version {
            1 | 2 => parse_ak42(image, r, version as u32),
            _ => Err(Error::Unsupported {
                field: "llama2.c version",
                value: version.into(),
            }),
        }
    } else if first == 0 || first > MAX_V0_DIM {
        Err(Error::Magic {
            what: "model",
            found: first,
        })
    } else {
        parse_v0(image)
    }
}

/// The seven header integers, in file order.
struct Header {
    dim: i32,
    hidden_dim: i32,
    n_layers: i32,
    n_heads: i32,
    n_kv_heads: i32,
    vocab_size: i32,
    seq_len: i32,
}

impl Header {
    fn read(r: &mut Reader<'_>) -> Result<Header> {
        Ok(Header {
            dim: r.i32("dim")?,
            hidden_dim: r.i32("hidden_dim")?,
            n_layers: r.i32("n_layers")?,
            n_heads: r.i32("n_heads")?,
            n_kv_heads: r.i32("n_kv_heads")?,
            vocab_size: r.i32("vocab_size")?,
            seq_len: r.i32("seq_len")?,
        })
    }

    /// `vocab_size` may arrive negated (v0's "separate classifier" flag);
    /// the caller passes its absolute value.
    fn config(&self, vocab_size: i64) -> Result<Config> {
        let field = |field: &'static str, value: i64| -> Result<usize> {
            usize::try_from(value)
                .ok()
                .filter(|&v| v > 0)
                .ok_or(Error::Invalid { field, value })
        };
        let config = Config {
            dim: field("dim", self.dim.into())?,
            hidden_dim: field("hidden_dim", self.hidden_dim.into())?,
            n_layers: field("n_layers", self.n_layers.into())?,
            n_heads: field("n_heads", self.n_heads.into())?,
            n_kv_heads: field("n_kv_heads", self.n_kv_heads.into())?,
            vocab_size: field("vocab_size", vocab_size)?,
            seq_len: field("seq_len", self.seq_len.into())?,
            rope_theta: 10000.0,
            rope_scale: 1.0,
            norm_eps: 1e-5,
        };
        config.validate()?;
        Ok(config)
    }
}

/// `n` tensors of `rows × cols`, one per layer, back to back.
struct Stack<'w> {
    name: &'static str,
    dtype: DType,
    rows: usize,
    cols: usize,
    size: usize,
    data: &'w [u8],
}

impl<'w> Stack<'w> {
    fn take(
        r: &mut Reader<'w>,
        name: &'static str,
        dtype: DType,
        n: usize,
        (rows, cols): (usize, usize),
    ) -> Result<Self> {
        if let DType::Q8G { group } = dtype {
            // llama2.c's exporter checks only `dim`; a group straddling two
            // rows would make `runq` decode garbage.
            if !cols.is_multiple_of(group as usize) {
                return Err(Error::Mismatch {
                    field: name,
                    value: cols as i64,
                    rule: "values per row are not a multiple of",
                    other: "group_size",
                    other_value: group.into(),
                });
            }
        }
        let size = dtype
            .bytes(rows, cols)
            .ok_or(Error::Overflow { field: name })?;
        let total = size.checked_mul(n).ok_or(Error::Overflow { field: name })?;
        Ok(Stack {
            name,
            dtype,
            rows,
            cols,
            size,
            data: r.take(total, name)?,
        })
    }

    fn get(&self, i: usize) -> Result<WeightRef<'w>> {
        let part = self
            .data
            .get(i * self.size..(i + 1) * self.size)
            .ok_or(Error::Overflow { field: self.name })?;
        WeightRef::new(self.name, self.dtype, self.rows, self.cols, part)
    }
}

/// What both versions hold, whatever their order in the file.
struct Parts<'w> {
    token_embedding: WeightRef<'w>,
    rms_att: Stack<'w>,
    wq: Stack<'w>,
    wk: Stack<'w>,
    wv: Stack<'w>,
    wo: Stack<'w>,
    rms_ffn: Stack<'w>,
    w1: Stack<'w>,
    w2: Stack<'w>,
    w3: Stack<'w>,
    rms_final: WeightRef<'w>,
}

impl<'w> Parts<'w> {
    /// The model, after the classifier (unless `shared` with the
    /// embedding, in `dtype`) that ends the file in both versions.
    fn into_model(
        self,
        r: &mut Reader<'w>,
        shared: bool,
        config: Config,
        (dtype, version): (DType, u32),
    ) -> Result<Model<'w>> {
        let wcls = classifier(r, shared, &config, dtype)?;
        expect_end(r)?;
        let mut layers = heapless::Vec::new();
        for l in 0..config.n_layers {
            let layer = LayerWeights {
                rms_att: self.rms_att.get(l)?,
                wq: self.wq.get(l)?,
                wk: self.wk.get(l)?,
                wv: self.wv.get(l)?,
                wo: self.wo.get(l)?,
                rms_ffn: self.rms_ffn.get(l)?,
                w1: self.w1.get(l)?,
                w2: self.w2.get(l)?,
                w3: self.w3.get(l)?,
            };
            // Config::validate bounds n_layers by MAX_LAYERS.
            let _ = layers.push(layer);
        }
        Ok(Model {
            config,
            weights: Weights {
                token_embedding: self.token_embedding,
                layers,
                rms_final: self.rms_final,
                wcls: wcls.unwrap_or(self.token_embedding),
                rope_freqs: None,
            },
            format: Format::Llama2c {
                version,
                shared_classifier: wcls.is_none(),
            },
            gguf: None,
        })
    }
}

/// Exporters write exactly the tensors the header describes; any other
/// size means the header is not this file's.
fn expect_end(r: &Reader<'_>) -> Result<()> {
    match r.remaining() {
        0 => Ok(()),
        extra => Err(Error::Mismatch {
            field: "file size",
            value: (r.pos() + extra) as i64,
            rule: "bytes differs from what the header describes,",
            other: "bytes",
            other_value: r.pos() as i64,
        }),
    }
}

/// The classifier, when the file stores one of its own.
fn classifier<'w>(
    r: &mut Reader<'w>,
    shared: bool,
    c: &Config,
    dtype: DType,
) -> Result<Option<WeightRef<'w>>> {
    if shared {
        return Ok(None);
    }
    Ok(Some(
        Stack::take(r, "wcls", dtype, 1, (c.vocab_size, c.dim))?.get(0)?,
    ))
}

fn parse_v0(image: &[u8]) -> Result<Model<'_>> {
    let mut r = Reader::new(image);
    let h = Header::read(&mut r)?;
    let shared = h.vocab_size > 0;
    let c = h.config(i64::from(h.vocab_size).abs())?;
    let (l, dim, hid, kv) = (c.n_layers, c.dim, c.hidden_dim, c.kv_dim());
    let r = &mut r;
    let f = DType::F32;
    let token_embedding = Stack::take(r, "token_embedding", f, 1, (c.vocab_size, dim))?.get(0)?;
    let rms_att = Stack::take(r, "rms_att_weight", f, l, (1, dim))?;
    let wq = Stack::take(r, "wq", f, l, (dim, dim))?;
    let wk = Stack::take(r, "wk", f, l, (kv, dim))?;
    let wv = Stack::take(r, "wv", f, l, (kv, dim))?;
    let wo = Stack::take(r, "wo", f, l, (dim, dim))?;
    let rms_ffn = Stack::take(r, "rms_ffn_weight", f, l, (1, dim))?;
    let w1 = Stack::take(r, "w1", f, l, (hid, dim))?;
    let w2 = Stack::take(r, "w2", f, l, (dim, hid))?;
    let w3 = Stack::take(r, "w3", f, l, (hid, dim))?;
    let rms_final = Stack::take(r, "rms_final_weight", f, 1, (1, dim))?.get(0)?;
    // freq_cis_real and freq_cis_imag: RoPE is computed, not read.
    Stack::take(r, "freq_cis", f, 2, (c.seq_len, c.head_size() / 2))?;
    let parts = Parts {
        token_embedding,
        rms_att,
        wq,
        wk,
        wv,
        wo,
        rms_ffn,
        w1,
        w2,
        w3,
        rms_final,
    };
    parts.into_model(r, shared, c, (f, 0))
}

/// v1 and v2: the header after the version, then norms and matrices.
fn parse_ak42<'w>(image: &'w [u8], mut r: Reader<'w>, version: u32) -> Result<Model<'w>> {
    let h = Header::read(&mut r)?;
    let flag = r.u8("shared_classifier")?;
    let shared = match flag {
        0 => false,
        1 => true,
        _ => {
            return Err(Error::Invalid {
                field: "shared_classifier",
                value: flag.into(),
            })
        }
    };
    let matrices = match version {
        1 => DType::F32,
        _ => {
            let group = r.i32("group_size")?;
            match u32::try_from(group) {
                Ok(group) if group > 0 => DType::Q8G { group },
                _ => {
                    return Err(Error::Invalid {
                        field: "group_size",
                        value: group.into(),
                    })
                }
            }
        }
    };
    let c = h.config(h.vocab_size.into())?;
    let (l, dim, hid, kv) = (c.n_layers, c.dim, c.hidden_dim, c.kv_dim());
    let r = &mut Reader::at(image, AK42_HEADER_BYTES);
    let (f, m) = (DType::F32, matrices);
    let rms_att = Stack::take(r, "rms_att_weight", f, l, (1, dim))?;
    let rms_ffn = Stack::take(r, "rms_ffn_weight", f, l, (1, dim))?;
    let rms_final = Stack::take(r, "rms_final_weight", f, 1, (1, dim))?.get(0)?;
    let token_embedding = Stack::take(r, "token_embedding", m, 1, (c.vocab_size, dim))?.get(0)?;
    let wq = Stack::take(r, "wq", m, l, (dim, dim))?;
    let wk = Stack::take(r, "wk", m, l, (kv, dim))?;
    let wv = Stack::take(r, "wv", m, l, (kv, dim))?;
    let wo = Stack::take(r, "wo", m, l, (dim, dim))?;
    let w1 = Stack::take(r, "w1", m, l, (hid, dim))?;
    let w2 = Stack::take(r, "w2", m, l, (dim, hid))?;
    let w3 = Stack::take(r, "w3", m, l, (hid, dim))?;
    // In the order of the file.
    let parts = Parts {
        rms_att,
        rms_ffn,
        rms_final,
        token_embedding,
        wq,
        wk,
        wv,
        wo,
        w1,
        w2,
        w3,
    };
    parts.into_model(r, shared, c, (m, version))
}
