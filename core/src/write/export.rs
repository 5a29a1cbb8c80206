//! Writing models: GGUF images with llama.cpp's type mixes (what
//! `quantize` writes and `bench` synthesizes) and llama2.c v2 (`runq`)
//! images. Both stream row by row through an [`Output`] with one row of
//! scratch, so a file of any size is written in bounded memory.

use super::gguf::{TensorSpec, Writer};
use super::quant::quantize_row;
use crate::config::Config;
use crate::error::{text, Error, Result};
use crate::image::gguf::{layer_name, ValueType, LAYER_TENSORS};
use crate::image::llama2c::MAGIC;
use crate::image::vocab::{byte_piece, llama2c_records, llama2c_vocab_size, Vocab};
use crate::image::{LayerWeights, Model};
use crate::io::Output;
use crate::kernels;
use crate::tensor::{DType, WeightRef};

/// The GGUF type mixes, named as `quantize --type` and `bench --format`
/// name them. Norms are always F32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    F32,
    F16,
    Q8_0,
    /// Q4_0 matrices, the classifier Q6_K (as `llama-quantize Q4_0` does).
    Q4_0,
    /// Every matrix Q4_0 (`llama-quantize --pure Q4_0`).
    Q4_0Pure,
    /// Q4_1 matrices, the classifier Q6_K (as `llama-quantize Q4_1` does).
    Q4_1,
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the classifier and, in a
    /// third of the layers, `attn_v` and `ffn_down`.
    Q4KM,
    /// Every matrix Q6_K.
    Q6K,
}

/// Which weight of the model a tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Embedding,
    OutputNorm,
    Output,
    /// Layer `layer`'s tensor `LAYER_TENSORS[tensor]`.
    Layer {
        layer: usize,
        tensor: usize,
    },
}

const ATTN_V: usize = 3;
const FFN_DOWN: usize = 7;

impl Layout {
    pub const ALL: [Layout; 8] = [
        Layout::F32,
        Layout::F16,
        Layout::Q8_0,
        Layout::Q4_0,
        Layout::Q4_0Pure,
        Layout::Q4_1,
        Layout::Q4KM,
        Layout::Q6K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layout::F32 => "f32",
            Layout::F16 => "f16",
            Layout::Q8_0 => "q8_0",
            Layout::Q4_0 => "q4_0",
            Layout::Q4_0Pure => "q4_0-pure",
            Layout::Q4_1 => "q4_1",
            Layout::Q4KM => "q4_k",
            Layout::Q6K => "q6_k",
        }
    }

    pub fn parse(name: &[u8]) -> Option<Layout> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name().as_bytes() == name)
    }

    /// llama.cpp's `general.file_type` (its `llama_ftype`) for the mix.
    fn file_type(self) -> u32 {
        match self {
            Layout::F32 => 0,
            Layout::F16 => 1,
            Layout::Q4_0 | Layout::Q4_0Pure => 2,
            Layout::Q4_1 => 3,
            Layout::Q8_0 => 7,
            Layout::Q4KM => 15,
            Layout::Q6K => 18,
        }
    }

    /// The type of the weight `role` in a model of `n_layers` layers.
    pub fn dtype(self, role: Role, n_layers: usize) -> DType {
        let more_bits =
            |l: usize| l < n_layers / 8 || l >= 7 * n_layers / 8 || (l - n_layers / 8) % 3 == 2;
        match (self, role) {
            (_, Role::OutputNorm) => DType::F32,
            (_, Role::Layer { tensor, .. }) if tensor == 0 || tensor == 5 => DType::F32,
            (Layout::F32, _) => DType::F32,
            (Layout::F16, _) => DType::F16,
            (Layout::Q8_0, _) => DType::Q8_0,
            (Layout::Q4_0 | Layout::Q4_1 | Layout::Q4KM | Layout::Q6K, Role::Output) => DType::Q6K,
            (Layout::Q4_0 | Layout::Q4_0Pure, _) => DType::Q4_0,
            (Layout::Q4_1, _) => DType::Q4_1,
            (Layout::Q4KM, Role::Layer { layer, tensor })
                if (tensor == ATTN_V || tensor == FFN_DOWN) && more_bits(layer) =>
            {
                DType::Q6K
            }
            (Layout::Q4KM, _) => DType::Q4K,
            (Layout::Q6K, _) => DType::Q6K,
        }
    }
}

impl Role {
    /// The weight of `model` this role names.
    pub fn weight<'w>(self, model: &Model<'w>) -> WeightRef<'w> {
        let w = &model.weights;
        match self {
            Role::Embedding => w.token_embedding,
            Role::OutputNorm => w.rms_final,
            Role::Output => w.wcls,
            Role::Layer { layer, tensor } => {
                let l = &w.layers[layer];
                [
                    l.rms_att, l.wq, l.wk, l.wv, l.wo, l.rms_ffn, l.w1, l.w2, l.w3,
                ][tensor]
            }
        }
    }
}

/// Calls `f` with every tensor of `config` in `layout`, in file order. The
/// classifier is always written, even when the source ties it to the
/// embedding (llama.cpp's converter does the same, and its mixes give the
/// two different types).
fn for_each_tensor(
    config: &Config,
    layout: Layout,
    mut f: impl FnMut(Role, TensorSpec<'_>) -> Result<()>,
) -> Result<()> {
    let c = config;
    let (d, h, kv) = (c.dim, c.hidden_dim, c.kv_dim());
    let mut tensor = |name: &[u8], role, rows, cols| {
        let dtype = layout.dtype(role, c.n_layers);
        f(
            role,
            TensorSpec {
                name,
                dtype,
                rows,
                cols,
            },
        )
    };
    tensor(b"token_embd.weight", Role::Embedding, c.vocab_size, d)?;
    tensor(b"output_norm.weight", Role::OutputNorm, 1, d)?;
    tensor(b"output.weight", Role::Output, c.vocab_size, d)?;
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
    for layer in 0..c.n_layers {
        for (i, (&name, &(rows, cols))) in LAYER_TENSORS.iter().zip(&shapes).enumerate() {
            tensor(
                &layer_name(layer, name),
                Role::Layer { layer, tensor: i },
                rows,
                cols,
            )?;
        }
    }
    Ok(())
}

/// What a GGUF image holds besides the llama metadata and the tensor
/// table: more metadata, and every row's bytes.
pub trait Source {
    /// How many metadata entries [`Source::metadata`] writes.
    fn metadata_count(&self) -> u64;
    fn metadata(&mut self, w: &mut Writer<'_>) -> Result<()>;
    /// Fills `out` with row `r` of the tensor `role`, stored as `spec.dtype`.
    fn row(&mut self, role: Role, spec: &TensorSpec<'_>, r: usize, out: &mut [u8]) -> Result<()>;
    /// Called before each tensor's data: `index` of `count`.
    fn progress(&mut self, index: usize, count: usize, spec: &TensorSpec<'_>);
}

/// The metadata every image gets: architecture, shape, and the mix.
const LLAMA_KVS: u64 = 12;

/// Writes the GGUF v3 image of `config` in `layout` to `out`; `scratch`
/// holds the longest row of any tensor.
pub fn write_gguf(
    config: &Config,
    layout: Layout,
    source: &mut dyn Source,
    out: &mut dyn Output,
    scratch: &mut [u8],
) -> Result<()> {
    let c = config;
    let mut count = 0usize;
    for_each_tensor(c, layout, |_, _| {
        count += 1;
        Ok(())
    })?;
    let mut w = Writer::new(out, count as u64, LLAMA_KVS + source.metadata_count())?;
    w.str("general.architecture", b"llama")?;
    w.str("general.name", b"llama")?;
    let dims = [
        ("llama.context_length", c.seq_len),
        ("llama.embedding_length", c.dim),
        ("llama.feed_forward_length", c.hidden_dim),
        ("llama.block_count", c.n_layers),
        ("llama.attention.head_count", c.n_heads),
        ("llama.attention.head_count_kv", c.n_kv_heads),
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
    w.u32("general.file_type", layout.file_type())?;
    source.metadata(&mut w)?;
    let mut offset = 0u64;
    for_each_tensor(c, layout, |_, t| {
        w.tensor_info(&t, offset)?;
        offset = t.next_offset(offset)?;
        Ok(())
    })?;
    w.align()?;
    let mut index = 0;
    for_each_tensor(c, layout, |role, t| {
        source.progress(index, count, &t);
        index += 1;
        let row_bytes = t.bytes()? / t.rows;
        let given = scratch.len();
        let buf = scratch.get_mut(..row_bytes).ok_or(Error::ArenaTooSmall {
            needed: row_bytes,
            given,
        })?;
        for r in 0..t.rows {
            source.row(role, &t, r, buf)?;
            w.data(buf)?;
        }
        w.align()
    })
}

/// How many of `model`'s tensors the GGUF image has, and the bytes of its
/// longest row in `layout` and in f32: what [`write_gguf`] and a source
/// that converts rows through f32 need as scratch.
pub fn longest_row(config: &Config, layout: Layout) -> Result<usize> {
    let mut longest = 0;
    for_each_tensor(config, layout, |_, t| {
        longest = longest.max(t.bytes()? / t.rows).max(4 * t.cols);
        Ok(())
    })?;
    Ok(longest)
}

/// A model's weights as a GGUF source: each row read as f32 (from F32 or
/// F16) and quantized, and the vocabulary from a llama2.c `tokenizer.bin`
/// or the source's own GGUF metadata.
pub struct Quantize<'m, 'p> {
    pub model: &'m Model<'m>,
    /// A llama2.c vocabulary is converted as llama.cpp's converter does;
    /// a GGUF file's `tokenizer.*` entries are copied.
    pub vocab: Vocab<'m>,
    /// One f32 row of scratch (the widest matrix's columns).
    pub row: &'p mut [f32],
    pub progress: &'p mut dyn FnMut(usize, usize, &TensorSpec<'_>),
}

/// Fails unless every matrix of `model` is F32 or F16: requantizing would
/// compound two roundings, as llama.cpp refuses to by default.
pub fn check_float(model: &Model<'_>) -> Result<()> {
    for_each_tensor(&model.config, Layout::F32, |role, t| {
        match role.weight(model).dtype() {
            DType::F32 | DType::F16 => Ok(()),
            _ => Err(Error::Text {
                field: "tensor",
                value: text(t.name),
                problem: "is already quantized (quantize reads F32 or F16 weights)",
            }),
        }
    })
}

/// Whether the classifier is the embedding table itself.
fn tied(model: &Model<'_>) -> bool {
    let w = &model.weights;
    w.wcls.data().as_ptr() == w.token_embedding.data().as_ptr()
}

impl Source for Quantize<'_, '_> {
    fn metadata_count(&self) -> u64 {
        match &self.vocab {
            Vocab::Llama2c(_) => 7,
            Vocab::Gguf(g) => g
                .metadata()
                .filter(|kv| {
                    kv.as_ref()
                        .is_ok_and(|(k, _, _)| k.starts_with(b"tokenizer."))
                })
                .count() as u64,
        }
    }

    fn metadata(&mut self, w: &mut Writer<'_>) -> Result<()> {
        match &self.vocab {
            Vocab::Llama2c(bytes) => llama2c_vocabulary(w, bytes, self.model.config.vocab_size),
            Vocab::Gguf(g) => {
                for kv in g.raw_metadata() {
                    let (key, ty, value) = kv?;
                    if key.starts_with(b"tokenizer.") {
                        w.entry(key, ty, value)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn row(&mut self, role: Role, spec: &TensorSpec<'_>, r: usize, out: &mut [u8]) -> Result<()> {
        let x = &mut self.row[..spec.cols];
        kernels::row(x, &role.weight(self.model), r);
        quantize_row(spec.dtype, x, out);
        Ok(())
    }

    fn progress(&mut self, index: usize, count: usize, spec: &TensorSpec<'_>) {
        (self.progress)(index, count, spec)
    }
}

/// Fails unless `vocab` can be written as the vocabulary of a model of
/// `vocab_size` tokens: a llama2.c `tokenizer.bin` must read to its end and
/// have that many pieces (a GGUF file's own vocabulary was read when it
/// loaded). `quantize` asks before its output exists.
pub fn check_vocab(vocab: &Vocab<'_>, vocab_size: usize) -> Result<()> {
    match vocab {
        Vocab::Llama2c(bytes) => llama2c_pieces(bytes, vocab_size).map(drop),
        Vocab::Gguf(_) => Ok(()),
    }
}

/// How many pieces the llama2.c `tokenizer.bin` in `bytes` has: all of
/// them readable, and as many as the model's `vocab_size`.
fn llama2c_pieces(bytes: &[u8], vocab_size: usize) -> Result<usize> {
    let n = llama2c_vocab_size(bytes)?;
    if n != vocab_size {
        return Err(Error::Mismatch {
            field: "tokenizer pieces",
            value: n as i64,
            rule: "differ from the model's",
            other: "vocab_size",
            other_value: vocab_size as i64,
        });
    }
    Ok(n)
}

/// llama.cpp's SentencePiece types of `tokenizer.ggml.token_type`.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_BYTE: i32 = 6;

/// A llama2.c piece as SentencePiece spells it: `▁` for spaces, and BOS and
/// EOS without the newlines llama2.c wraps them in.
fn spm_piece(id: usize, piece: &[u8]) -> (&[u8], i32) {
    match (id, piece) {
        (0, _) => (piece, TYPE_UNKNOWN),
        (1 | 2, _) => (piece.trim_ascii(), TYPE_CONTROL),
        _ if byte_piece(piece).is_some() => (piece, TYPE_BYTE),
        _ => (piece, TYPE_NORMAL),
    }
}

/// The vocabulary of a llama2.c `tokenizer.bin` as the seven
/// `tokenizer.ggml.*` entries llama.cpp's converter writes.
fn llama2c_vocabulary(w: &mut Writer<'_>, bytes: &[u8], vocab_size: usize) -> Result<()> {
    let pieces = || llama2c_records(bytes);
    let n = llama2c_pieces(bytes, vocab_size)?;
    w.str("tokenizer.ggml.model", b"llama")?;
    w.array_start("tokenizer.ggml.tokens", ValueType::String, n as u64)?;
    for (id, p) in pieces()?.enumerate() {
        let (piece, _) = spm_piece(id, p?.bytes(bytes));
        let spaces = piece.iter().filter(|&&b| b == b' ').count();
        w.element(&((piece.len() + 2 * spaces) as u64).to_le_bytes())?;
        for (i, part) in piece.split(|&b| b == b' ').enumerate() {
            if i > 0 {
                w.element("▁".as_bytes())?;
            }
            w.element(part)?;
        }
    }
    w.array_start("tokenizer.ggml.scores", ValueType::F32, n as u64)?;
    for p in pieces()? {
        w.element(&p?.score.to_le_bytes())?;
    }
    w.array_start("tokenizer.ggml.token_type", ValueType::I32, n as u64)?;
    for (id, p) in pieces()?.enumerate() {
        w.element(&spm_piece(id, p?.bytes(bytes)).1.to_le_bytes())?;
    }
    w.u32("tokenizer.ggml.unknown_token_id", 0)?;
    w.u32("tokenizer.ggml.bos_token_id", 1)?;
    w.u32("tokenizer.ggml.eos_token_id", 2)
}

/// The llama2.c v2 tensors in file order after the header: the norms, then
/// the matrices (the classifier only when it is not the embedding).
fn v2_matrices<'m, 'w>(
    model: &'m Model<'w>,
) -> impl Iterator<Item = (&'static str, WeightRef<'w>)> + 'm {
    let w = &model.weights;
    let tied = tied(model);
    let layers = |name, pick: fn(&LayerWeights<'w>) -> WeightRef<'w>| {
        w.layers.iter().map(move |l| (name, pick(l)))
    };
    core::iter::once(("token_embedding", w.token_embedding))
        .chain(layers("wq", |l| l.wq))
        .chain(layers("wk", |l| l.wk))
        .chain(layers("wv", |l| l.wv))
        .chain(layers("wo", |l| l.wo))
        .chain(layers("w1", |l| l.w1))
        .chain(layers("w2", |l| l.w2))
        .chain(layers("w3", |l| l.w3))
        .chain((!tied).then_some(("wcls", w.wcls)))
}

/// Fails unless every row of every matrix of `model` is whole groups of
/// `group` values. llama2.c's exporter checks only `dim`, and `runq` then
/// decodes rows whose groups straddle two rows into garbage.
pub fn check_groups(model: &Model<'_>, group: u32) -> Result<()> {
    for (name, m) in v2_matrices(model) {
        if group == 0 || !m.cols().is_multiple_of(group as usize) {
            return Err(Error::Mismatch {
                field: name,
                value: m.cols() as i64,
                rule: "values per row are not a multiple of",
                other: "group_size",
                other_value: group.into(),
            });
        }
    }
    Ok(())
}

/// Writes `model` as a llama2.c v2 image with groups of `group` values;
/// `row` holds one f32 row and `bytes` one quantized row (values and
/// scales) of the widest matrix. Each matrix is read twice: its values go
/// out row by row, then its scales, recomputed.
pub fn write_llama2c_v2(
    model: &Model<'_>,
    group: u32,
    out: &mut dyn Output,
    row: &mut [f32],
    bytes: &mut [u8],
    progress: &mut dyn FnMut(usize, usize, &'static str, (usize, usize)),
) -> Result<()> {
    let dtype = DType::Q8G { group };
    let c = &model.config;
    check_groups(model, group)?;
    let mut header = [0u8; 256];
    let ints = [
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        c.seq_len,
    ];
    header[..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&2i32.to_le_bytes());
    for (i, v) in ints.iter().enumerate() {
        let v = i32::try_from(*v).map_err(|_| Error::Overflow {
            field: "llama2.c header",
        })?;
        header[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    header[36] = u8::from(tied(model));
    let g = i32::try_from(group).map_err(|_| Error::Overflow {
        field: "group_size",
    })?;
    header[37..41].copy_from_slice(&g.to_le_bytes());
    out.write(&header)?;
    let w = &model.weights;
    for norm in w
        .layers
        .iter()
        .map(|l| l.rms_att)
        .chain(w.layers.iter().map(|l| l.rms_ffn))
    {
        out.write(norm.data())?;
    }
    out.write(w.rms_final.data())?;
    let count = v2_matrices(model).count();
    for (i, (name, m)) in v2_matrices(model).enumerate() {
        progress(i, count, name, (m.cols(), m.rows()));
        let cols = m.cols();
        let need = dtype
            .bytes(1, cols)
            .ok_or(Error::Overflow { field: name })?;
        let small = Error::ArenaTooSmall {
            needed: need,
            given: bytes.len(),
        };
        let (x, q) = (
            row.get_mut(..cols).ok_or(small.clone())?,
            bytes.get_mut(..need).ok_or(small)?,
        );
        for values in [true, false] {
            for r in 0..m.rows() {
                kernels::row(x, &m, r);
                quantize_row(dtype, x, q);
                out.write(if values { &q[..cols] } else { &q[cols..] })?;
            }
        }
    }
    Ok(())
}
