//! GGUF v2/v3, read in place.
//!
//! Layout: magic `GGUF`, version, tensor count (u64), metadata count (u64),
//! the metadata (key string, value type, value), the tensor infos (name,
//! dimension count, dimensions, GGML type, offset into the data section),
//! padding to `general.alignment` (default 32), then the tensor data.
//!
//! Model files come from the internet, so — as the careful readers do since
//! the 2024–2026 GGUF CVEs — every read is bounds-checked, every count and
//! size product is checked, keys and names are length-capped, tensors have
//! at most four dimensions and rows of whole blocks, tensor data must lie
//! inside the file and be aligned, duplicate keys and tensor names are
//! rejected, unknown types are reported by number, and nothing is ever
//! allocated by a size read from the file.

use super::{Format, LayerWeights, Model, Weights};
use crate::config::Config;
use crate::error::{text, Error, Result};
use crate::reader::Reader;
use crate::tensor::{DType, WeightRef};

/// `"GGUF"` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x4655_4747;
/// More metadata entries than any real file has; also sizes the stack
/// table that finds duplicate keys.
const MAX_KV: usize = 1024;
/// More tensors than any llama-architecture model has (9 per layer for
/// [`MAX_LAYERS`](crate::config::MAX_LAYERS) layers, and 3). It also bounds the
/// duplicate-name check, which rescans the names when two share a filter
/// bit: names chosen to collide cost n²/2 name reads.
const MAX_TENSORS: u64 = 1 << 12;
/// Bits of the filter that spots possibly repeated tensor names: four per
/// tensor, so that names which do not collide on purpose rarely rescan.
const NAME_FILTER_BITS: usize = 4 * MAX_TENSORS as usize;
/// GGUF limits keys to 65535 bytes; GGML tensor names to 64.
const MAX_KEY: u64 = u16::MAX as u64;
const MAX_NAME: u64 = 64;
/// Longest string value accepted (chat templates are a few KiB).
const MAX_STRING: u64 = 1 << 24;
/// The alignment of tensor data when `general.alignment` does not say.
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_ALIGNMENT: u64 = 1 << 16;

/// The 13 metadata value types, by their GGUF numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

const VALUE_TYPES: [ValueType; 13] = [
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::F32,
    ValueType::Bool,
    ValueType::String,
    ValueType::Array,
    ValueType::U64,
    ValueType::I64,
    ValueType::F64,
];

impl ValueType {
    fn from_id(id: u32) -> Option<ValueType> {
        VALUE_TYPES.get(id as usize).copied()
    }

    pub fn id(self) -> u32 {
        VALUE_TYPES.iter().position(|&t| t == self).unwrap_or(0) as u32
    }

    pub fn name(self) -> &'static str {
        [
            "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
            "f64",
        ][self.id() as usize]
    }

    /// Bytes of one value of a fixed-size type.
    fn size(self) -> Option<usize> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }
}

/// One metadata value, borrowed from the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(&'a [u8]),
    /// `len` elements of type `elem`; `data` holds them as stored.
    Array {
        elem: ValueType,
        len: u64,
        data: &'a [u8],
    },
}

impl<'a> Value<'a> {
    /// A non-negative integer of any width.
    pub fn as_uint(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// GGML's names of its types, for messages about the ones not supported.
fn ggml_type_name(id: u32) -> &'static str {
    const NAMES: [&str; 43] = [
        "F32", "F16", "Q4_0", "Q4_1", "?", "?", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
        "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "?", "?", "?",
        "TQ1_0", "TQ2_0", "?", "?", "?", "MXFP4", "NVFP4", "Q1_0", "Q2_0",
    ];
    match NAMES.get(id as usize) {
        Some(&"?") | None => "unknown",
        Some(name) => name,
    }
}

/// One tensor's description.
#[derive(Clone, Copy, Debug)]
pub struct TensorInfo<'a> {
    pub name: &'a [u8],
    /// `dims[0]` is the row length (GGML's `ne0`).
    pub dims: [u64; 4],
    pub n_dims: usize,
    pub dtype: DType,
    /// From the start of the data section.
    pub offset: u64,
    pub bytes: usize,
}

impl TensorInfo<'_> {
    /// Rows: the product of every dimension after the first.
    pub fn rows(&self) -> u64 {
        self.dims[1..self.n_dims].iter().product()
    }
}

/// A validated GGUF file; every accessor reads the bytes in place.
#[derive(Clone, Copy, Debug)]
pub struct Gguf<'a> {
    bytes: &'a [u8],
    pub version: u32,
    n_kv: usize,
    n_tensors: usize,
    kv_start: usize,
    tensors_start: usize,
    data_start: usize,
    pub alignment: usize,
}

fn string<'a>(r: &mut Reader<'a>, what: &'static str, max: u64) -> Result<&'a [u8]> {
    let len = r.u64(what)?;
    if len > max {
        return Err(Error::Invalid {
            field: what,
            value: len.min(i64::MAX as u64) as i64,
        });
    }
    r.take(len as usize, what)
}

/// A metadata entry's key and value type.
fn entry_head<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], ValueType)> {
    let key = string(r, "metadata key", MAX_KEY)?;
    let id = r.u32("metadata value type")?;
    let ty = ValueType::from_id(id).ok_or(Error::Unsupported {
        field: "metadata value type",
        value: id.into(),
    })?;
    Ok((key, ty))
}

fn value<'a>(r: &mut Reader<'a>, ty: ValueType) -> Result<Value<'a>> {
    Ok(match ty {
        ValueType::U8 => Value::Uint(r.u8("metadata value")?.into()),
        ValueType::I8 => Value::Int((r.u8("metadata value")? as i8).into()),
        ValueType::U16 => Value::Uint(r.u16("metadata value")?.into()),
        ValueType::I16 => Value::Int((r.u16("metadata value")? as i16).into()),
        ValueType::U32 => Value::Uint(r.u32("metadata value")?.into()),
        ValueType::I32 => Value::Int(r.i32("metadata value")?.into()),
        ValueType::F32 => Value::F32(r.f32("metadata value")?),
        ValueType::U64 => Value::Uint(r.u64("metadata value")?),
        ValueType::I64 => Value::Int(r.u64("metadata value")? as i64),
        ValueType::F64 => Value::F64(f64::from_bits(r.u64("metadata value")?)),
        ValueType::Bool => match r.u8("metadata value")? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => {
                return Err(Error::Invalid {
                    field: "metadata bool",
                    value: b.into(),
                })
            }
        },
        ValueType::String => Value::Str(string(r, "metadata string", MAX_STRING)?),
        ValueType::Array => {
            let id = r.u32("metadata array type")?;
            let elem = ValueType::from_id(id).ok_or(Error::Unsupported {
                field: "metadata array type",
                value: id.into(),
            })?;
            let len = r.u64("metadata array length")?;
            let start = r.pos();
            match elem.size() {
                Some(size) => {
                    let bytes = usize::try_from(len)
                        .ok()
                        .and_then(|n| n.checked_mul(size))
                        .ok_or(Error::Overflow {
                            field: "metadata array length",
                        })?;
                    r.take(bytes, "metadata array")?;
                }
                None if elem == ValueType::String => {
                    // Each string needs at least its 8-byte length: a count
                    // the rest of the file cannot hold fails at once.
                    if len > (r.remaining() / 8) as u64 {
                        return Err(Error::Truncated {
                            what: "metadata array of strings",
                            offset: start as u64,
                            need: len.saturating_mul(8),
                            len: r.len() as u64,
                        });
                    }
                    for _ in 0..len {
                        string(r, "metadata array string", MAX_STRING)?;
                    }
                }
                None => {
                    return Err(Error::Unsupported {
                        field: "nested metadata array",
                        value: id.into(),
                    })
                }
            }
            Value::Array {
                elem,
                len,
                data: r.since(start),
            }
        }
    })
}

fn tensor_info<'a>(r: &mut Reader<'a>) -> Result<TensorInfo<'a>> {
    let name = string(r, "tensor name", MAX_NAME)?;
    let bad = |problem| Error::Text {
        field: "tensor",
        value: text(name),
        problem,
    };
    let n_dims = r.u32("tensor dimension count")? as usize;
    if !(1..=4).contains(&n_dims) {
        return Err(bad("has no dimensions or more than four"));
    }
    let mut dims = [1u64; 4];
    for d in &mut dims[..n_dims] {
        *d = r.u64("tensor dimension")?;
        if *d == 0 {
            return Err(bad("has a zero dimension"));
        }
    }
    let type_id = r.u32("tensor type")?;
    let offset = r.u64("tensor offset")?;
    let dtype = DType::from_ggml(type_id).ok_or(Error::TensorType {
        name: text(name),
        type_id,
        type_name: ggml_type_name(type_id),
    })?;
    let rows = dims[1..n_dims]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|r| usize::try_from(r).ok());
    let cols = usize::try_from(dims[0]).ok();
    let (Some(rows), Some(cols)) = (rows, cols) else {
        return Err(bad("has dimensions that overflow the address space"));
    };
    if cols % dtype.block().0 != 0 {
        return Err(bad("has rows that are not a whole number of blocks"));
    }
    let bytes = dtype
        .bytes(rows, cols)
        .ok_or(bad("has a size that overflows the address space"))?;
    Ok(TensorInfo {
        name,
        dims,
        n_dims,
        dtype,
        offset,
        bytes,
    })
}

/// FNV-1a, to spot possible duplicate names without storing them.
fn hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl<'a> Gguf<'a> {
    /// Validates the whole file: header, metadata, tensor infos and where
    /// every tensor's data lies.
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("GGUF magic")?;
        if magic != MAGIC {
            return Err(Error::Magic {
                what: "GGUF",
                found: magic,
            });
        }
        let version = r.u32("GGUF version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::Unsupported {
                field: "GGUF version",
                value: version.into(),
            });
        }
        let n_tensors = r.u64("tensor count")?;
        if n_tensors > MAX_TENSORS {
            return Err(Error::Unsupported {
                field: "tensor count",
                value: n_tensors.min(i64::MAX as u64) as i64,
            });
        }
        let n_kv = r.u64("metadata count")?;
        if n_kv > MAX_KV as u64 {
            return Err(Error::Unsupported {
                field: "metadata count",
                value: n_kv.min(i64::MAX as u64) as i64,
            });
        }
        let (n_tensors, n_kv) = (n_tensors as usize, n_kv as usize);

        let kv_start = r.pos();
        let mut keys = [(0u32, 0u32); MAX_KV];
        let mut alignment = DEFAULT_ALIGNMENT;
        for i in 0..n_kv {
            let (key, ty) = entry_head(&mut r)?;
            // The key's bytes end where the value type's 4 bytes begin.
            let at = u32::try_from(r.pos() - 4 - key.len())
                .map_err(|_| Error::Overflow { field: "metadata" })?;
            for &(o, l) in &keys[..i] {
                if &bytes[o as usize..(o + l) as usize] == key {
                    return Err(Error::Text {
                        field: "metadata key",
                        value: text(key),
                        problem: "appears twice",
                    });
                }
            }
            keys[i] = (at, key.len() as u32);
            let v = value(&mut r, ty)?;
            if key == b"general.alignment" {
                alignment = v.as_uint().ok_or(Error::KeyType {
                    key: "general.alignment",
                    found: ty.id(),
                    expected: "an unsigned integer",
                })?;
                if !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
                    return Err(Error::Invalid {
                        field: "general.alignment",
                        value: alignment.min(i64::MAX as u64) as i64,
                    });
                }
            }
        }

        let tensors_start = r.pos();
        for _ in 0..n_tensors {
            tensor_info(&mut r)?;
        }
        // Without tensors (a vocabulary-only file) the padding may be absent.
        let data_start = r.pos().next_multiple_of(alignment as usize);
        let g = Gguf {
            bytes,
            version,
            n_kv,
            n_tensors,
            kv_start,
            tensors_start,
            data_start,
            alignment: alignment as usize,
        };

        let mut seen = [0u64; NAME_FILTER_BITS / 64];
        for (i, t) in g.tensors().enumerate() {
            let t = t?;
            let bad = |problem| Error::Text {
                field: "tensor",
                value: text(t.name),
                problem,
            };
            if t.offset % alignment != 0 {
                return Err(bad("has data that is not aligned"));
            }
            let end = usize::try_from(t.offset)
                .ok()
                .and_then(|o| o.checked_add(data_start))
                .and_then(|o| o.checked_add(t.bytes));
            if end.is_none_or(|e| e > bytes.len()) {
                return Err(bad("has data outside the file"));
            }
            // Only a possible repeat is compared in full.
            let h = (hash(t.name) % NAME_FILTER_BITS as u64) as usize;
            if seen[h / 64] & (1 << (h % 64)) != 0
                && g.tensor_names().take(i).any(|(other, _)| other == t.name)
            {
                return Err(bad("appears twice"));
            }
            seen[h / 64] |= 1 << (h % 64);
        }
        Ok(g)
    }

    /// Every metadata entry: key, type, value.
    pub fn metadata(&self) -> impl Iterator<Item = Result<(&'a [u8], ValueType, Value<'a>)>> + 'a {
        let mut r = Reader::at(self.bytes, self.kv_start);
        (0..self.n_kv).map(move |_| {
            let (key, ty) = entry_head(&mut r)?;
            Ok((key, ty, value(&mut r, ty)?))
        })
    }

    /// Every metadata entry with its value's bytes as stored: for copying
    /// entries into another file.
    pub fn raw_metadata(
        &self,
    ) -> impl Iterator<Item = Result<(&'a [u8], ValueType, &'a [u8])>> + 'a {
        let mut r = Reader::at(self.bytes, self.kv_start);
        (0..self.n_kv).map(move |_| {
            let (key, ty) = entry_head(&mut r)?;
            let start = r.pos();
            value(&mut r, ty)?;
            Ok((key, ty, r.since(start)))
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Result<Option<(ValueType, Value<'a>)>> {
        for kv in self.metadata() {
            let (k, ty, v) = kv?;
            if k == key.as_bytes() {
                return Ok(Some((ty, v)));
            }
        }
        Ok(None)
    }

    /// An unsigned integer of any width, range-checked by the caller.
    pub fn uint(&self, key: &'static str) -> Result<Option<u64>> {
        match self.get(key)? {
            None => Ok(None),
            Some((_, Value::Int(v))) if v < 0 => Err(Error::Invalid {
                field: key,
                value: v,
            }),
            Some((ty, v)) => v.as_uint().map(Some).ok_or(Error::KeyType {
                key,
                found: ty.id(),
                expected: "a non-negative integer",
            }),
        }
    }

    /// A float (f32 or f64).
    pub fn float(&self, key: &'static str) -> Result<Option<f32>> {
        match self.get(key)? {
            None => Ok(None),
            Some((_, Value::F32(v))) => Ok(Some(v)),
            Some((_, Value::F64(v))) => Ok(Some(v as f32)),
            Some((ty, _)) => Err(Error::KeyType {
                key,
                found: ty.id(),
                expected: "a float",
            }),
        }
    }

    pub fn boolean(&self, key: &'static str) -> Result<Option<bool>> {
        match self.get(key)? {
            None => Ok(None),
            Some((_, Value::Bool(b))) => Ok(Some(b)),
            Some((ty, _)) => Err(Error::KeyType {
                key,
                found: ty.id(),
                expected: "a bool",
            }),
        }
    }

    pub fn string(&self, key: &'static str) -> Result<Option<&'a [u8]>> {
        match self.get(key)? {
            None => Ok(None),
            Some((_, Value::Str(s))) => Ok(Some(s)),
            Some((ty, _)) => Err(Error::KeyType {
                key,
                found: ty.id(),
                expected: "a string",
            }),
        }
    }

    /// An array whose elements are of type `elem`: its length and bytes.
    pub fn array(&self, key: &'static str, elem: ValueType) -> Result<Option<(u64, &'a [u8])>> {
        match self.get(key)? {
            None => Ok(None),
            Some((_, Value::Array { elem: e, len, data })) if e == elem => Ok(Some((len, data))),
            Some((ty, v)) => Err(Error::KeyType {
                key,
                found: match v {
                    Value::Array { elem, .. } => elem.id(),
                    _ => ty.id(),
                },
                expected: elem.name(),
            }),
        }
    }

    /// Every tensor's description, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = Result<TensorInfo<'a>>> + 'a {
        let mut r = Reader::at(self.bytes, self.tensors_start);
        (0..self.n_tensors).map(move |_| tensor_info(&mut r))
    }

    /// Every tensor's name and where its info starts. `parse` validated
    /// the infos, so only the lengths are read again: a lookup or the
    /// duplicate check skips an info in a few reads, not a full parse.
    fn tensor_names(&self) -> impl Iterator<Item = (&'a [u8], usize)> + 'a {
        let mut r = Reader::at(self.bytes, self.tensors_start);
        (0..self.n_tensors).map_while(move |_| {
            let at = r.pos();
            let len = usize::try_from(r.u64("tensor name").ok()?).ok()?;
            let name = r.take(len, "tensor name").ok()?;
            let n_dims = r.u32("tensor dimension count").ok()? as usize;
            // The dimensions, then the type (u32) and the offset (u64).
            let rest = n_dims.checked_mul(8)?.checked_add(12)?;
            r.take(rest, "tensor info").ok()?;
            Some((name, at))
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn tensor_count(&self) -> usize {
        self.n_tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &[u8]) -> Result<Option<TensorInfo<'a>>> {
        match self.tensor_names().find(|&(n, _)| n == name) {
            Some((_, at)) => tensor_info(&mut Reader::at(self.bytes, at)).map(Some),
            None => Ok(None),
        }
    }

    /// The bytes of `t` (validated to lie inside the file by `parse`).
    pub fn data(&self, t: &TensorInfo<'_>) -> &'a [u8] {
        let start = self.data_start + t.offset as usize;
        &self.bytes[start..start + t.bytes]
    }

    /// Offset of `t`'s data in the file.
    pub fn file_offset(&self, t: &TensorInfo<'_>) -> usize {
        self.data_start + t.offset as usize
    }
}

/// The tensors of one block, by their GGUF names, in llama2.c's roles:
/// norm, wq, wk, wv, wo, norm, w1, w2, w3.
pub const LAYER_TENSORS: [&str; 9] = [
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_down",
    "ffn_up",
];

/// A `usize` dimension from metadata: present, positive and in range.
fn dimension(g: &Gguf<'_>, key: &'static str, default: Option<u64>) -> Result<usize> {
    let v = g.uint(key)?.or(default).ok_or(Error::Text {
        field: "metadata key",
        value: text(key.as_bytes()),
        problem: "is missing",
    })?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0 && v <= u32::MAX as usize)
        .ok_or(Error::Invalid {
            field: key,
            value: v.min(i64::MAX as u64) as i64,
        })
}

/// The llama-architecture model in a GGUF file.
pub(crate) fn model(g: Gguf<'_>) -> Result<Model<'_>> {
    let arch = g.string("general.architecture")?.unwrap_or(b"");
    if arch != b"llama" {
        return Err(Error::Text {
            field: "general.architecture",
            value: text(arch),
            problem: "is not supported (only llama)",
        });
    }
    let dim = dimension(&g, "llama.embedding_length", None)?;
    let n_heads = dimension(&g, "llama.attention.head_count", None)?;
    let embd = g
        .tensor(b"token_embd.weight")?
        .ok_or(Error::MissingTensor {
            name: text(b"token_embd.weight"),
        })?;
    let config = Config {
        dim,
        hidden_dim: dimension(&g, "llama.feed_forward_length", None)?,
        n_layers: dimension(&g, "llama.block_count", None)?,
        n_heads,
        n_kv_heads: dimension(&g, "llama.attention.head_count_kv", Some(n_heads as u64))?,
        vocab_size: usize::try_from(embd.rows()).unwrap_or(0),
        seq_len: dimension(&g, "llama.context_length", None)?,
        rope_theta: g.float("llama.rope.freq_base")?.unwrap_or(10000.0),
        rope_scale: rope_scale(&g)?,
        norm_eps: g
            .float("llama.attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5),
    };
    config.validate()?;
    // A head of another width than dim / heads, or rotated only in part,
    // would change the arithmetic: refused by name.
    for (key, rule) in [
        (
            "llama.rope.dimension_count",
            "differs from (partial rotary is not supported)",
        ),
        (
            "llama.attention.key_length",
            "differs from (other head widths are not supported)",
        ),
        (
            "llama.attention.value_length",
            "differs from (other head widths are not supported)",
        ),
    ] {
        if let Some(n) = g.uint(key)? {
            if n != config.head_size() as u64 {
                return Err(Error::Mismatch {
                    field: key,
                    value: n.min(i64::MAX as u64) as i64,
                    rule,
                    other: "head_size",
                    other_value: config.head_size() as i64,
                });
            }
        }
    }
    check_names(&g, config.n_layers)?;

    let (d, h, kv, v) = (
        config.dim,
        config.hidden_dim,
        config.kv_dim(),
        config.vocab_size,
    );
    let get = |name: &[u8], cols: usize, rows: usize| -> Result<WeightRef<'_>> {
        let t = g
            .tensor(name)?
            .ok_or(Error::MissingTensor { name: text(name) })?;
        let (ne0, ne1) = (t.dims[0], t.rows());
        if t.n_dims > 2 || (ne0, ne1) != (cols as u64, rows as u64) {
            return Err(Error::Shape {
                name: text(name),
                found: [ne0, ne1],
                expected: [cols as u64, rows as u64],
            });
        }
        if rows == 1 && t.dtype != DType::F32 {
            return Err(Error::Text {
                field: "tensor",
                value: text(name),
                problem: "is a norm but not F32",
            });
        }
        WeightRef::new("tensor", t.dtype, rows, cols, g.data(&t))
    };
    let mut layers = heapless::Vec::new();
    for l in 0..config.n_layers {
        let [an, q, k, vv, o, fnm, gate, down, up] = LAYER_TENSORS.map(|t| layer_name(l, t));
        let layer = LayerWeights {
            rms_att: get(&an, d, 1)?,
            wq: get(&q, d, d)?,
            wk: get(&k, d, kv)?,
            wv: get(&vv, d, kv)?,
            wo: get(&o, d, d)?,
            rms_ffn: get(&fnm, d, 1)?,
            w1: get(&gate, d, h)?,
            w2: get(&down, h, d)?,
            w3: get(&up, d, h)?,
        };
        // Config::validate bounds n_layers by MAX_LAYERS.
        let _ = layers.push(layer);
    }
    let token_embedding = get(b"token_embd.weight", d, v)?;
    // Llama 3.1/3.2's frequency factors: one per pair of a head's values,
    // shared by every layer.
    let rope_freqs = match g.tensor(ROPE_FREQS)? {
        Some(_) => Some(get(ROPE_FREQS, config.head_size() / 2, 1)?),
        None => None,
    };
    let factor = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let bad = |f: f32| !(f.is_finite() && f > 0.0);
    if rope_freqs.is_some_and(|t| t.data().chunks_exact(4).any(|b| bad(factor(b)))) {
        return Err(Error::Text {
            field: "tensor",
            value: text(ROPE_FREQS),
            problem: "holds a factor that is not a positive number",
        });
    }
    let wcls = match g.tensor(b"output.weight")? {
        Some(_) => get(b"output.weight", d, v)?,
        None => token_embedding,
    };
    Ok(Model {
        config,
        weights: Weights {
            token_embedding,
            layers,
            rms_final: get(b"output_norm.weight", d, 1)?,
            wcls,
            rope_freqs,
        },
        format: Format::Gguf { version: g.version },
        gguf: Some(g),
    })
}

/// The tensor of Llama 3's RoPE frequency factors.
pub const ROPE_FREQS: &[u8] = b"rope_freqs.weight";

/// The factor every RoPE angle is multiplied by: llama.cpp's
/// `freq_scale`, 1 / `llama.rope.scaling.factor` for linear scaling (the
/// type it assumes when the key is missing). YaRN and LongRoPE change the
/// arithmetic further and are refused.
fn rope_scale(g: &Gguf<'_>) -> Result<f32> {
    match g.string("llama.rope.scaling.type")? {
        None | Some(b"linear") => {}
        Some(b"none") => return Ok(1.0),
        Some(other) => {
            return Err(Error::Text {
                field: "llama.rope.scaling.type",
                value: text(other),
                problem: "is not supported (none, linear)",
            })
        }
    }
    let factor = match g.float("llama.rope.scaling.factor")? {
        Some(f) => Some(f),
        None => g.float("llama.rope.scale_linear")?,
    };
    Ok(match factor {
        Some(f) if f != 0.0 => 1.0 / f,
        _ => 1.0,
    })
}

/// `blk.{layer}.{tensor}.weight`.
pub fn layer_name(layer: usize, tensor: &str) -> heapless::Vec<u8, 64> {
    use core::fmt::Write;
    let mut s = heapless::String::<64>::new();
    let _ = write!(s, "blk.{layer}.{tensor}.weight");
    s.into_bytes()
}

/// Every tensor must be one this engine reads: an extra one (a bias, RoPE
/// frequencies) means a variant whose arithmetic this engine would get wrong.
fn check_names(g: &Gguf<'_>, n_layers: usize) -> Result<()> {
    for t in g.tensors() {
        let name = t?.name;
        let known = match name {
            b"token_embd.weight" | b"output_norm.weight" | b"output.weight" | ROPE_FREQS => true,
            _ => name
                .strip_prefix(b"blk.")
                .and_then(|rest| {
                    let dot = rest.iter().position(|&c| c == b'.')?;
                    let layer: usize = core::str::from_utf8(&rest[..dot]).ok()?.parse().ok()?;
                    let tail = rest[dot + 1..].strip_suffix(b".weight")?;
                    let role = LAYER_TENSORS.iter().find(|t| t.as_bytes() == tail)?;
                    // Only the spelling lookups use: `parse` also takes
                    // `00` and `+0`, whose tensors would never be read.
                    Some(layer < n_layers && layer_name(layer, role)[..] == *name)
                })
                .unwrap_or(false),
        };
        if !known {
            return Err(Error::Text {
                field: "tensor",
                value: text(name),
                problem: "is not part of a llama model",
            });
        }
    }
    Ok(())
}
