//! The hostile-input mutation harness (issue 7): every model and tokenizer in
//! `../shared/data/models`, cut short and mutated by seeded edits, must either
//! load, tokenize and decode a few steps cleanly, or return an `Error`. A
//! panic is caught, recorded with the key that replays it, and fails the test
//! once every case has run.
//!
//! Cases are *truncations* (the file cut to a length) and *mutations* (one to
//! four edits: bit flips, bytes set to 0/0xFF/0x7F/0x80 or at random, and
//! field-aware edits). A field-aware edit sets a header integer, GGUF count,
//! string or array length, value type, metadata value, token type or score,
//! tensor dimension, type or offset, `general.alignment`, tokenizer
//! `max_token_length`, piece length or score to a value chosen to break it
//! (zero, one, all ones, sign and width edges, powers of two, small deltas,
//! the file size, NaN and infinities), or renames a key, tensor or piece to
//! another of the same length (duplicates, swapped roles, `general.alignment`
//! out of `llama.block_count`). A second test feeds NaN, infinities,
//! subnormals and huge values through every quantizer and kernel.
//!
//! Environment:
//! - `BARELLAMA_MUTATIONS`: unset, the CI-sized run (every cut within the
//!   first bytes of each file, a spread after, some tens of thousands of
//!   mutations). `full`: every cut of files up to 2,000,000 bytes, the whole
//!   structure and 10,000+ spread cuts of larger ones, and 1,000,000+
//!   mutations; `.ci/run` runs this. A number: that many mutations in all,
//!   with the CI-sized cuts.
//! - `BARELLAMA_MUTATION_SEED`: the base seed (decimal or `0x` hex) every
//!   case's seed derives from, with the file name and the case index.
//! - `BARELLAMA_MUTATION_CASE`: run only `FILE:tLEN` (FILE cut to LEN bytes),
//!   `FILE:mINDEX` (mutation INDEX) or a range `FILE:mFIRST-LAST`, printing
//!   each case's edits and outcome. Failures print this line.
//! - `BARELLAMA_MUTATION_THREADS`: worker threads (default: every CPU).
//!
//! A crash (a signal, an abort) cannot be caught: each worker writes the
//! range of cases it is running to `mutate-inflight-N` in Cargo's test
//! scratch directory, and the next run prints what an interrupted one left.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use barellama_core::arena::{KvType, TokenizerPlan};
use barellama_core::error::Error;
use barellama_core::image::gguf::{Gguf, ValueType};
use barellama_core::image::llama2c;
use barellama_core::image::vocab::llama2c_vocab_size;
use barellama_core::tensor::DType;
use barellama_core::tokenizer::Family;
use barellama_core::{
    Compute, Isa, Model, Options, Plan, SamplerConfig, Session, TextSink, Tokenizer, Vocab,
};
use barellama_tests::{data_dir, read, AlignedBuf, TextBytes, LLAMA2C_HEADER};

const DEFAULT_SEED: u64 = 0x6d75_7461_7465_0007;
/// Mutations in all when `BARELLAMA_MUTATIONS` is unset; CI runs the
/// aarch64 tests under qemu, several times slower, on two CPU models.
const CI_MUTATIONS: u64 = if cfg!(target_arch = "aarch64") {
    5_000
} else {
    40_000
};
const FULL_MUTATIONS: u64 = 1_000_000;
/// CI-sized cuts: every length below this, then `CI_SPREAD` lengths spread
/// over the rest.
const CI_DENSE: usize = if cfg!(target_arch = "aarch64") {
    8 << 10
} else {
    64 << 10
};
const CI_SPREAD: usize = if cfg!(target_arch = "aarch64") {
    300
} else {
    1_000
};
/// Full runs cut larger files at every length of their headers, metadata
/// and tensor tables (and this much data after), and at this many more.
const FULL_LIMIT: usize = 2_000_000;
const FULL_SPREAD: usize = 10_007;
const STRUCTURE_SLACK: usize = 4096;
/// Metadata longer than twice this (a 128k vocabulary and its merges) is
/// cut at every length of its first and last this many bytes, and at the
/// spread lengths between: every length of synl3's megabytes would take
/// hours in a debug build, each cut parsing all the metadata before it.
const FULL_STRUCTURE_CAP: usize = 1 << 16;
/// A model is left out when one case would cost more than this (a forward
/// pass, in `target`'s rough units): SmolLM2's 135M weights would take the
/// run hours in a debug build. What it brings is in the small files: Q4_1
/// in synsmall-Q4_1, merges, a pre-tokenizer and RoPE factors in synl3.
const MAX_COST: f64 = 10.0;

/// Tokenized with every vocabulary: merges, spaces, tabs, a newline, 2-, 3-
/// and 4-byte characters and invalid UTF-8 (byte fallback).
const PROMPT: &[u8] =
    b"Once upon a time,\n\tLily saw \xF0\x9F\xA6\x80 \xD0\x9F\xD1\x80\xE4\xB8\xAD \xff\xfe ok";
/// Generation starts from a prompt short enough for the tiny context.
const GEN_PROMPT: &[u8] = b"Once";
const SEQ_LEN: usize = 8;
const STEPS: usize = 3;
/// Ample for every unmutated file's plan; a mutated file that wants more
/// gets `ArenaTooSmall`, never a bigger buffer.
const ARENA_BYTES: usize = 16 << 20;
/// Cases a worker claims at once.
const CUT_CHUNK: usize = 256;
const MUTATION_CHUNK: u64 = 16;
/// Failures printed in full; the rest are only counted.
const SHOWN_FAILURES: usize = 10;

// ---- Seeds ----

/// SplitMix64's finalizer: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: seedable from any value, zero included.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A case's seed depends only on the base seed, the file and the index, so
/// a case replays alone whatever the mode or thread count.
fn case_seed(base: u64, file: &str, index: u64) -> u64 {
    mix(mix(base ^ fnv1a(file.as_bytes())) ^ index)
}

// ---- The files and where their fields are ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A llama2.c checkpoint, run with the `tokenizer.bin` of its vocabulary.
    Llama2c,
    /// A GGUF model with its own vocabulary.
    Gguf,
    /// A vocabulary-only GGUF file.
    Vocab,
    /// A llama2.c `tokenizer.bin` of `vocab` pieces.
    Tokenizer { vocab: usize },
}

/// How a field's bytes are read, which decides the values worth trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldKind {
    Int,
    Float,
    Bool,
    /// A GGUF metadata value type.
    ValueType,
    /// A GGML tensor type.
    TensorType,
    /// A GGUF vocabulary entry's type (normal, control, byte, ...).
    TokenType,
    /// A metadata key, tensor name or vocabulary piece (at most
    /// [`MAX_NAME`] bytes): renamed to another of the same length.
    Name,
}

const MAX_NAME: usize = 64;

/// Keys the readers look for, as renames: `llama.block_count` and
/// `general.alignment` have the same length, so do the four 20-byte keys.
const KNOWN_KEYS: [&str; 22] = [
    "general.alignment",
    "general.architecture",
    "llama.context_length",
    "llama.embedding_length",
    "llama.block_count",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.rope.dimension_count",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.chat_template",
];

#[derive(Clone, Copy, Debug)]
struct Field {
    pos: usize,
    width: usize,
    kind: FieldKind,
}

/// The fields of one role ("tensor offset", "piece length", ...): an edit
/// picks a role first, so a vocabulary's 32,000 string lengths do not drown
/// out its four header counts.
struct Group {
    what: &'static str,
    fields: Vec<Field>,
}

struct Target {
    name: String,
    kind: Kind,
    bytes: Vec<u8>,
    groups: Vec<Group>,
    /// Where headers, metadata and tensor tables end and bulk data begins.
    structure: usize,
    /// About how many milliseconds a mutation case takes (x86_64, one
    /// core): decoding dominates for models, sorting the pieces for
    /// vocabularies.
    cost: f64,
}

#[derive(Default)]
struct Fields(Vec<Group>);

impl Fields {
    fn add(&mut self, what: &'static str, pos: usize, width: usize, kind: FieldKind) {
        let field = Field { pos, width, kind };
        match self.0.iter_mut().find(|g| g.what == what) {
            Some(g) => g.fields.push(field),
            None => self.0.push(Group {
                what,
                fields: vec![field],
            }),
        }
    }
}

fn uint(bytes: &[u8], pos: usize, width: usize) -> Option<u64> {
    let b = bytes.get(pos..pos.checked_add(width)?)?;
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(b);
    Some(u64::from_le_bytes(v))
}

/// A cursor that records every field it reads.
struct Walk<'b> {
    bytes: &'b [u8],
    pos: usize,
    fields: Fields,
}

impl<'b> Walk<'b> {
    fn field(&mut self, what: &'static str, width: usize, kind: FieldKind) -> Option<u64> {
        let v = uint(self.bytes, self.pos, width)?;
        self.fields.add(what, self.pos, width, kind);
        self.pos += width;
        Some(v)
    }

    fn skip(&mut self, n: u64) -> Option<&'b [u8]> {
        let end = self.pos.checked_add(usize::try_from(n).ok()?)?;
        let b = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    /// Skips a string of `n` bytes, a name to rename when it is short.
    fn name(&mut self, what: &'static str, n: u64) -> Option<&'b [u8]> {
        let pos = self.pos;
        let b = self.skip(n)?;
        if (1..=MAX_NAME).contains(&b.len()) {
            self.fields.add(what, pos, b.len(), FieldKind::Name);
        }
        Some(b)
    }

    /// The value of metadata `key`, of type `ty`, grouped as `what`;
    /// returns it when it is an integer.
    fn gguf_value(&mut self, key: &[u8], ty: u64, what: &'static str) -> Option<u64> {
        use FieldKind::*;
        let scalar = |ty| match ty {
            0 | 1 => Some((1, Int)),
            2 | 3 => Some((2, Int)),
            4 | 5 => Some((4, Int)),
            6 => Some((4, Float)),
            7 => Some((1, Bool)),
            10 | 11 => Some((8, Int)),
            12 => Some((8, Float)),
            _ => None,
        };
        if let Some((width, kind)) = scalar(ty) {
            return self.field(what, width, kind);
        }
        match ty {
            8 => {
                let n = self.field("metadata string length", 8, Int)?;
                self.name("metadata string", n)?;
            }
            9 => {
                let elem = self.field("metadata array type", 4, ValueType)?;
                let n = self.field("metadata array length", 8, Int)?;
                let (what, token_types) = match key {
                    b"tokenizer.ggml.token_type" => ("token type", true),
                    b"tokenizer.ggml.scores" => ("token score", false),
                    _ => ("metadata array element", false),
                };
                for _ in 0..n {
                    match scalar(elem) {
                        Some((width, Int)) if token_types => {
                            self.field(what, width, TokenType)?;
                        }
                        Some((width, kind)) => {
                            self.field(what, width, kind)?;
                        }
                        None if elem == 8 => {
                            let len = self.field("metadata array string length", 8, Int)?;
                            self.name("metadata array string", len)?;
                        }
                        None => return None,
                    }
                }
            }
            _ => return None,
        }
        Some(0)
    }
}

/// Every field of a GGUF file, and where its data section starts.
fn gguf_fields(bytes: &[u8]) -> Option<(Fields, usize)> {
    use FieldKind::*;
    let mut w = Walk {
        bytes,
        pos: 0,
        fields: Fields::default(),
    };
    w.field("GGUF magic", 4, Int)?;
    w.field("GGUF version", 4, Int)?;
    let n_tensors = w.field("tensor count", 8, Int)?;
    let n_kv = w.field("metadata count", 8, Int)?;
    let mut alignment = 32;
    for _ in 0..n_kv {
        let len = w.field("metadata key length", 8, Int)?;
        let key = w.name("metadata key", len)?;
        let what = match key {
            b"general.alignment" => "general.alignment",
            k if k.starts_with(b"llama.") => "llama hyper-parameter",
            k if k.ends_with(b"_token_id") => "special token id",
            _ => "metadata value",
        };
        let alignment_key = key == b"general.alignment";
        let ty = w.field("metadata value type", 4, ValueType)?;
        let v = w.gguf_value(key, ty, what)?;
        if alignment_key {
            alignment = v;
        }
    }
    for _ in 0..n_tensors {
        let len = w.field("tensor name length", 8, Int)?;
        w.name("tensor name", len)?;
        let n_dims = w.field("tensor dimension count", 4, Int)?;
        for _ in 0..n_dims {
            w.field("tensor dimension", 8, Int)?;
        }
        w.field("tensor type", 4, TensorType)?;
        w.field("tensor offset", 8, Int)?;
    }
    let data = w.pos.next_multiple_of(usize::try_from(alignment).ok()?);
    Some((w.fields, data))
}

/// The header fields of a llama2.c checkpoint and where they end (the
/// zero padding after them is never read).
fn llama2c_fields(bytes: &[u8]) -> (Fields, usize) {
    use FieldKind::*;
    let mut f = Fields::default();
    let ak42 = uint(bytes, 0, 4) == Some(llama2c::MAGIC.into());
    let first = if ak42 {
        f.add("llama2.c magic", 0, 4, Int);
        f.add("llama2.c version", 4, 4, Int);
        8
    } else {
        0
    };
    for (i, what) in LLAMA2C_HEADER.iter().enumerate() {
        f.add(what, first + 4 * i, 4, Int);
    }
    if !ak42 {
        return (f, 28);
    }
    f.add("shared_classifier", 36, 1, Bool);
    if uint(bytes, 4, 4) != Some(2) {
        return (f, 37);
    }
    f.add("group_size", 37, 4, Int);
    (f, 41)
}

/// `max_token_length` and every piece's score, length and bytes.
fn tokenizer_fields(bytes: &[u8]) -> Fields {
    let mut f = Fields::default();
    f.add("max_token_length", 0, 4, FieldKind::Int);
    let mut pos = 4;
    while let Some(len) = uint(bytes, pos + 4, 4) {
        f.add("piece score", pos, 4, FieldKind::Float);
        f.add("piece length", pos + 4, 4, FieldKind::Int);
        if (1..=MAX_NAME as u64).contains(&len) {
            f.add("piece", pos + 8, len as usize, FieldKind::Name);
        }
        pos += 8 + len as usize;
    }
    f
}

/// Reads `models/NAME` and works out what it is from what loads; `None`
/// for a GGUF file holding a tensor type the engine does not read yet, and
/// for a model too costly to run per case ([`MAX_COST`]).
fn target(dir: &std::path::Path, name: &str) -> Option<Target> {
    let bytes = read(dir, &format!("models/{name}"));
    let model_cost = |m: Model<'_>| {
        let c = m.config;
        let layer = c.dim * (2 * c.dim + 2 * c.kv_dim() + 3 * c.hidden_dim);
        // Groups of other than whole 32-value blocks take the general
        // (scalar) code.
        let slow = match m.weights.wcls.dtype() {
            DType::Q8G { group } if group % 32 != 0 => 4.0,
            _ => 1.0,
        };
        0.03 + slow * 0.5e-6 * (c.n_layers * layer + c.vocab_size * c.dim) as f64
    };
    // Sorting the pieces dominates.
    let vocab_cost = |vocab: usize| 0.01 + 13e-6 * vocab as f64 * (vocab as f64).log2();
    let (kind, fields, structure, cost) = if bytes.starts_with(b"GGUF") {
        let (fields, data) = gguf_fields(&bytes).unwrap_or_else(|| panic!("{name}: GGUF walk"));
        let (kind, cost) = match Model::load(&bytes) {
            Ok(m) => (Kind::Gguf, model_cost(m)),
            Err(_) => {
                let g = match Gguf::parse(&bytes) {
                    Err(e @ Error::TensorType { .. }) => {
                        eprintln!("{name}: skipped, {e}");
                        return None;
                    }
                    parsed => parsed.unwrap_or_else(|e| panic!("{name}: {e}")),
                };
                let (n, _) = g
                    .array("tokenizer.ggml.tokens", ValueType::String)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("{name}: neither a model nor a vocabulary"));
                (Kind::Vocab, vocab_cost(n as usize))
            }
        };
        (kind, fields, data.min(bytes.len()), cost)
    } else if let Ok(m) = Model::load(&bytes) {
        let (fields, header) = llama2c_fields(&bytes);
        (Kind::Llama2c, fields, header, model_cost(m))
    } else {
        let vocab = llama2c_vocab_size(&bytes)
            .unwrap_or_else(|e| panic!("{name} is neither a model nor a tokenizer: {e}"));
        let kind = Kind::Tokenizer { vocab };
        (
            kind,
            tokenizer_fields(&bytes),
            bytes.len(),
            vocab_cost(vocab),
        )
    };
    if cost > MAX_COST {
        eprintln!("{name}: skipped, one case would cost {cost:.0} (at most {MAX_COST})");
        return None;
    }
    Some(Target {
        name: name.to_string(),
        kind,
        bytes,
        groups: fields.0,
        structure,
        cost,
    })
}

// ---- Edits ----

#[derive(Clone, Copy)]
struct Edit {
    pos: usize,
    len: usize,
    /// The new bytes: a little-endian integer, or a name.
    value: [u8; MAX_NAME],
    what: &'static str,
    name: bool,
}

impl Edit {
    fn int(pos: usize, len: usize, v: u64, what: &'static str) -> Edit {
        let mut value = [0; MAX_NAME];
        value[..8].copy_from_slice(&v.to_le_bytes());
        Edit {
            pos,
            len,
            value,
            what,
            name: false,
        }
    }
}

impl std::fmt::Display for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, pos, n) = (self.what, self.pos, self.len);
        if self.name {
            let text = String::from_utf8_lossy(&self.value[..n]);
            return write!(f, "{what} @{pos} renamed {text:?}");
        }
        let mut v = [0; 8];
        v.copy_from_slice(&self.value[..8]);
        let v = u64::from_le_bytes(v);
        match n {
            1 => write!(f, "{what} @{pos} = 0x{v:02x}"),
            _ => write!(f, "{what} @{pos} ({n} bytes) = 0x{v:x}"),
        }
    }
}

/// An integer of `width` bytes likely to break whatever the field holds.
fn interesting_int(rng: &mut Rng, old: u64, width: usize, file_len: usize, pos: usize) -> u64 {
    let bits = 8 * width as u32;
    let mask = u64::MAX >> (64 - bits);
    let smax = mask >> 1;
    let len = file_len as u64;
    let delta = (rng.below(16) + 1) as u64;
    let v = match rng.below(16) {
        0 => rng.pick(&[
            0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 64, 255, 256, 4096, 65535, 65536,
        ]),
        1 => mask,
        2 => mask - 1,
        3 => smax,
        4 => smax + 1,
        5 => rng.pick(&[smax - 1, smax + 2]),
        6 => 1 << rng.below(bits as usize),
        7 => (1u64 << rng.below(bits as usize)).wrapping_add(rng.pick(&[1, u64::MAX])),
        8 => old.wrapping_add(delta),
        9 => old.wrapping_sub(delta),
        10 => rng.pick(&[
            old.wrapping_mul(2),
            old / 2,
            old << 8,
            old >> 8,
            old.wrapping_neg(),
        ]),
        11 => {
            let rest = len.saturating_sub(pos as u64);
            rng.pick(&[
                len,
                len + 1,
                len - 1,
                rest,
                rest + 1,
                rest / 8,
                rest / 4 + 1,
            ])
        }
        12 => rng.pick(&[
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            1 << 32,
            (1 << 32) + 1,
        ]),
        13 => rng.pick(&[i32::MIN as u64, -2i64 as u64, i64::MIN as u64, 1 << 62]),
        14 => rng.next(),
        _ => old ^ (1 << rng.below(bits as usize)),
    };
    v & mask
}

fn interesting_float(rng: &mut Rng, old: u64, width: usize) -> u64 {
    let old = if width == 4 {
        f64::from(f32::from_bits(old as u32))
    } else {
        f64::from_bits(old)
    };
    let v = rng.pick(&[
        0.0,
        -0.0,
        1.0,
        -1.0,
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::from(f32::MAX),
        f64::from(f32::MIN),
        f64::MAX,
        f64::from(f32::MIN_POSITIVE),
        1e-45,
        1e30,
        -1e30,
        65504.0,
        old * 2.0,
        -old,
        old * 1e30,
    ]);
    if width == 4 {
        u64::from((v as f32).to_bits())
    } else {
        v.to_bits()
    }
}

/// A new value for `field`.
fn field_value(rng: &mut Rng, field: &Field, bytes: &[u8]) -> u64 {
    let old = uint(bytes, field.pos, field.width).unwrap_or(0);
    let generic = |rng: &mut Rng| interesting_int(rng, old, field.width, bytes.len(), field.pos);
    match field.kind {
        // Any bit pattern is fair for a float, but most interesting ones
        // are the special values.
        FieldKind::Float if rng.below(4) > 0 => interesting_float(rng, old, field.width),
        FieldKind::Bool if rng.below(2) == 0 => rng.pick(&[0, 1, 2, 0x7f, 0x80, 0xff]),
        FieldKind::ValueType if rng.below(4) > 0 => rng.below(15) as u64,
        FieldKind::TokenType if rng.below(4) > 0 => rng.below(9) as u64,
        FieldKind::TensorType => match rng.below(4) {
            0 => rng.pick(&[0, 1, 2, 8, 12, 14]),
            1 => rng.below(42) as u64,
            2 => rng.pick(&[3, 6, 7, 9, 10, 11, 13, 15, 16, 30]),
            _ => generic(rng),
        },
        _ => generic(rng),
    }
}

/// One to four edits for mutation case `seed`.
fn plan_edits(t: &Target, seed: u64, edits: &mut Vec<Edit>) {
    let mut rng = Rng(seed);
    edits.clear();
    let n = match rng.below(8) {
        0..=3 => 1,
        4 | 5 => 2,
        6 => 3,
        _ => 4,
    };
    let len = t.bytes.len();
    for _ in 0..n {
        // Half the byte edits land in the headers and tables, where a
        // single bit changes what the rest of the file means.
        let pos = if rng.below(2) == 0 {
            rng.below(t.structure)
        } else {
            rng.below(len)
        };
        let byte = |value: u8, what| Edit::int(pos, 1, value.into(), what);
        let edit = match rng.below(10) {
            0..=2 => byte(t.bytes[pos] ^ (1 << rng.below(8)), "bit flip"),
            3 | 4 => byte(rng.pick(&[0, 0xff, 0x7f, 0x80]), "byte set"),
            5 => byte(rng.next() as u8, "random byte"),
            _ if t.groups.is_empty() => byte(t.bytes[pos] ^ 1, "bit flip"),
            _ => {
                let group = &t.groups[rng.below(t.groups.len())];
                let field = group.fields[rng.below(group.fields.len())];
                match field.kind {
                    FieldKind::Name => rename(&mut rng, t, group, field),
                    _ => {
                        let v = field_value(&mut rng, &field, &t.bytes);
                        Edit::int(field.pos, field.width, v, group.what)
                    }
                }
            }
        };
        edits.push(edit);
    }
}

/// Gives the name at `field` another of its group's (or a known key) of
/// the same length: duplicates, swapped roles, a layer that does not exist.
/// Without one, a character changes.
fn rename(rng: &mut Rng, t: &Target, group: &Group, field: Field) -> Edit {
    let n = field.width;
    let mut value = [0; MAX_NAME];
    value[..n].copy_from_slice(&t.bytes[field.pos..field.pos + n]);
    let mut other = None;
    if group.what == "metadata key" && rng.below(2) == 0 {
        let keys: Vec<&str> = KNOWN_KEYS.into_iter().filter(|k| k.len() == n).collect();
        other = (!keys.is_empty()).then(|| rng.pick(&keys).as_bytes());
    }
    // A few probes find a same-length name in a group of thousands.
    for _ in 0..64 {
        if other.is_some() {
            break;
        }
        let f = group.fields[rng.below(group.fields.len())];
        if f.width == n && f.pos != field.pos {
            other = Some(&t.bytes[f.pos..f.pos + n]);
        }
    }
    match other {
        Some(name) => value[..n].copy_from_slice(name),
        None => value[rng.below(n)] = rng.pick(b"0123456789._abcdefghijklmnopqrstuvwxyz"),
    }
    Edit {
        pos: field.pos,
        len: n,
        value,
        what: group.what,
        name: true,
    }
}

/// Writes `edits` into `work`, remembering the bytes they replace.
fn apply(work: &mut [u8], edits: &[Edit], undo: &mut Vec<(usize, u8)>) {
    for e in edits {
        for (i, &b) in e.value[..e.len].iter().enumerate() {
            undo.push((e.pos + i, work[e.pos + i]));
            work[e.pos + i] = b;
        }
    }
}

fn restore(work: &mut [u8], undo: &mut Vec<(usize, u8)>) {
    while let Some((pos, b)) = undo.pop() {
        work[pos] = b;
    }
}

// ---- Running one case ----

/// A worker's buffers and the unmutated vocabularies models run with.
struct Cx<'s> {
    arena: &'s mut AlignedBuf,
    vocabularies: &'s [(usize, &'s [u8])],
    isas: &'s [Isa],
}

/// A case that did not panic: it ran, or it stopped at an error.
enum Outcome {
    Ran,
    Refused(Error),
}

/// Runs one case on `bytes`; `cut` marks a truncation.
fn run_case(kind: Kind, bytes: &[u8], cut: bool, cx: &mut Cx<'_>, seed: u64) -> Outcome {
    let mut rng = Rng(mix(seed ^ 0x5eed));
    let r = match kind {
        Kind::Llama2c | Kind::Gguf => run_model(bytes, cx, &mut rng),
        Kind::Vocab => Gguf::parse(bytes).and_then(|g| run_vocab(&g, cx, &mut rng)),
        Kind::Tokenizer { vocab } => run_tokenizer(bytes, vocab, cut, cx, &mut rng),
    };
    match r {
        Ok(()) => Outcome::Ran,
        Err(e) => {
            // The message must format without panicking too.
            let _ = write!(std::io::sink(), "{e}");
            Outcome::Refused(e)
        }
    }
}

fn sampler(rng: &mut Rng) -> SamplerConfig {
    let seed = rng.next() | 1;
    let (temperature, topp, topk) = match rng.below(4) {
        0 => (0.0, 0.9, 0),
        1 => (1.0, 0.9, 0),
        2 => (0.7, 0.95, 40),
        _ => (1.0, 1.0, 0),
    };
    SamplerConfig {
        temperature,
        topp,
        topk,
        seed,
        ..SamplerConfig::DEFAULT
    }
}

fn run_model(bytes: &[u8], cx: &mut Cx<'_>, rng: &mut Rng) -> Result<(), Error> {
    let gguf = if bytes.starts_with(b"GGUF") {
        Some(Gguf::parse(bytes)?)
    } else {
        None
    };
    let model = match Model::load(bytes) {
        Ok(model) => model,
        Err(e) => {
            // A file the model reader refuses may still hold a vocabulary.
            if let Some(g) = &gguf {
                let _ = run_vocab(g, cx, rng);
            }
            return Err(e);
        }
    };
    let vocab = match model.gguf {
        Some(g) => Vocab::Gguf(g),
        None => {
            let n = model.config.vocab_size;
            let (_, bytes) = cx
                .vocabularies
                .iter()
                .find(|(v, _)| *v == n)
                .unwrap_or(&cx.vocabularies[0]);
            Vocab::Llama2c(bytes)
        }
    };
    let kv = if rng.below(4) == 0 {
        KvType::F16
    } else {
        KvType::F32
    };
    // Mostly a tiny context; sometimes the model's own (planned from a
    // possibly hostile seq_len), or a longer one than it declares.
    let (seq_len, allow_longer) = match rng.below(8) {
        0 => (0, false),
        1 => (SEQ_LEN, true),
        _ => (model.config.seq_len.min(SEQ_LEN), false),
    };
    let options = Options {
        seq_len,
        allow_longer,
        prompt_bytes: PROMPT.len(),
        kv,
        tokenizer: Family::of(&vocab)?,
        ..Options::default()
    };
    let plan = Plan::new(&model.config, &options)?;
    // Scalar kernels are slow but bounds-checked: an eighth of the cases.
    let isa = match rng.below(8) {
        0 => Isa::SCALAR,
        _ => rng.pick(cx.isas),
    };
    let compute = Compute::single(isa);
    let mut session = Session::new(&model, vocab, sampler(rng), &plan, cx.arena.get(), compute)?;
    tokenize(&mut session.tokenizer, rng)?;
    let mut text = TextSink::plain(TextBytes::default());
    let steps = STEPS.min(plan.config().seq_len);
    session.generate(GEN_PROMPT, steps, |_, piece| {
        text.echo(piece);
        Ok(())
    })?;
    let _ = text.finish();
    Ok(())
}

fn run_vocab(g: &Gguf<'_>, cx: &mut Cx<'_>, rng: &mut Rng) -> Result<(), Error> {
    // The accessors walk the untrusted bytes again.
    for kv in g.metadata() {
        kv?;
    }
    let n = match g.array("tokenizer.ggml.tokens", ValueType::String)? {
        Some((n, _)) => usize::try_from(n).unwrap_or(usize::MAX),
        None => 0,
    };
    let plan = TokenizerPlan::new(n, Family::of(&Vocab::Gguf(*g))?, PROMPT.len())?;
    let mut tok = Tokenizer::from_gguf(g, n, plan.carve(cx.arena.get())?)?;
    tokenize(&mut tok, rng)
}

fn run_tokenizer(
    bytes: &[u8],
    vocab: usize,
    cut: bool,
    cx: &mut Cx<'_>,
    rng: &mut Rng,
) -> Result<(), Error> {
    // A mutated file may still parse with a count of its own: build that
    // vocabulary too, as the `tokenize` command would without a model. (A
    // cut one only has a prefix of the pieces: costly to sort, nothing new.)
    if !cut {
        if let Ok(own) = llama2c_vocab_size(bytes) {
            if own != vocab {
                let _ = tokenizer_alone(bytes, own, cx, rng);
            }
        }
    }
    tokenizer_alone(bytes, vocab, cx, rng)
}

fn tokenizer_alone(
    bytes: &[u8],
    vocab: usize,
    cx: &mut Cx<'_>,
    rng: &mut Rng,
) -> Result<(), Error> {
    let plan = TokenizerPlan::new(vocab, Family::SentencePiece, PROMPT.len())?;
    let mut tok = Tokenizer::from_llama2c(bytes, vocab, plan.carve(cx.arena.get())?)?;
    tokenize(&mut tok, rng)
}

/// Encodes [`PROMPT`] and decodes what came out, then a few other ids.
fn tokenize(tok: &mut Tokenizer<'_, '_>, rng: &mut Rng) -> Result<(), Error> {
    let vocab = tok.vocab_size();
    let mut ids = [0u32; 3 * PROMPT.len() + 4];
    let n = {
        let got = tok.encode(PROMPT, true, true)?;
        ids[..got.len()].copy_from_slice(got);
        got.len()
    };
    let mut text = TextSink::plain(TextBytes::default());
    let mut prev = tok.bos();
    let others = [0, vocab.saturating_sub(1), rng.below(vocab)];
    for &id in ids[..n].iter().chain(others.map(|i| i as u32).iter()) {
        if vocab == 0 {
            break;
        }
        assert!(
            (id as usize) < vocab,
            "encode gave token {id}, outside the vocabulary of {vocab}"
        );
        text.echo(tok.decode(prev, id));
        prev = id;
    }
    let _ = text.finish();
    Ok(())
}

// ---- Panics ----

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Inside a case a panic is recorded, not printed: a failing file would
/// otherwise print thousands of backtraces. Elsewhere the default hook runs.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(Cell::get) {
                PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs `f` with panics caught: `Err` holds the panic's message.
fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    IN_CASE.with(|c| c.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    IN_CASE.with(|c| c.set(false));
    r.map_err(|_| {
        PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic without a message".into())
    })
}

fn guarded(
    kind: Kind,
    bytes: &[u8],
    cut: bool,
    cx: &mut Cx<'_>,
    seed: u64,
) -> Result<Outcome, String> {
    caught(|| run_case(kind, bytes, cut, cx, seed))
}

// ---- Bookkeeping ----

struct Failure {
    key: String,
    message: String,
    edits: String,
}

#[derive(Default)]
struct Stats {
    cuts: u64,
    mutations: u64,
    errors: u64,
    ran: u64,
    failed: u64,
    failures: Vec<Failure>,
    /// How many cases stopped at each kind of error.
    kinds: BTreeMap<&'static str, u64>,
    /// Time spent in cuts and in mutations, summed over the workers.
    cut_time: Duration,
    mutation_time: Duration,
    slowest: (Duration, String),
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.cuts += o.cuts;
        self.mutations += o.mutations;
        self.errors += o.errors;
        self.ran += o.ran;
        self.failed += o.failed;
        self.cut_time += o.cut_time;
        self.mutation_time += o.mutation_time;
        for f in o.failures {
            if self.failures.len() < SHOWN_FAILURES {
                self.failures.push(f);
            }
        }
        for (k, n) in o.kinds {
            *self.kinds.entry(k).or_default() += n;
        }
        if o.slowest.0 > self.slowest.0 {
            self.slowest = o.slowest;
        }
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ran => self.ran += 1,
            Outcome::Refused(e) => {
                self.errors += 1;
                *self.kinds.entry(variant(e)).or_default() += 1;
            }
        }
    }
}

/// The error's kind, for the summary.
fn variant(e: &Error) -> &'static str {
    match e {
        Error::Truncated { .. } => "Truncated",
        Error::Magic { .. } => "Magic",
        Error::Invalid { .. } => "Invalid",
        Error::Unsupported { .. } => "Unsupported",
        Error::Mismatch { .. } => "Mismatch",
        Error::Text { .. } => "Text",
        Error::KeyType { .. } => "KeyType",
        Error::TensorType { .. } => "TensorType",
        Error::MissingTensor { .. } => "MissingTensor",
        Error::Shape { .. } => "Shape",
        Error::Overflow { .. } => "Overflow",
        Error::ArenaTooSmall { .. } => "ArenaTooSmall",
        Error::ArenaMisaligned { .. } => "ArenaMisaligned",
        Error::ContextFull { .. } => "ContextFull",
        Error::PromptTooLong { .. } => "PromptTooLong",
        Error::Token { .. } => "Token",
        Error::Usage { .. } => "Usage",
        Error::File { .. } => "File",
        Error::Io { .. } => "Io",
        Error::OutOfMemory { .. } => "OutOfMemory",
        Error::Threads { .. } => "Threads",
        // Variants added later are counted, unnamed, until named here.
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// What each worker is running, kept on disk so that a crash, which no
/// handler sees, still leaves the cases to replay.
struct Inflight(Option<File>);

impl Inflight {
    fn path(worker: usize) -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("mutate-inflight-{worker}"))
    }

    fn open(worker: usize) -> Inflight {
        Inflight(File::create(Self::path(worker)).ok())
    }

    fn set(&self, replay: &str) {
        if let Some(f) = &self.0 {
            let _ = f.write_at(format!("{replay:<200}\n").as_bytes(), 0);
        }
    }

    /// Empties the record: the run ended normally.
    fn clear(&self) {
        if let Some(f) = &self.0 {
            let _ = f.set_len(0);
        }
    }

    /// What an earlier run was doing when it died, if it did.
    fn left_over() -> Vec<String> {
        (0..256)
            .map_while(|w| std::fs::read_to_string(Self::path(w)).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

struct Run {
    base: u64,
    threads: usize,
}

impl Run {
    fn replay(&self, key: &str) -> String {
        format!(
            "BARELLAMA_MUTATION_SEED={:#x} BARELLAMA_MUTATION_CASE={key} \
             cargo test -p barellama-tests --test mutate -- --nocapture",
            self.base
        )
    }
}

/// A worker's share of one file: claims chunks of cuts, then of
/// mutations, until none is left.
fn worker(
    run: &Run,
    t: &Target,
    cuts: &[usize],
    mutations: u64,
    next: &AtomicUsize,
    cx: &mut Cx<'_>,
    inflight: &Inflight,
) -> Stats {
    let mut stats = Stats::default();
    let mut work = t.bytes.clone();
    let mut edits = Vec::with_capacity(4);
    let mut undo = Vec::with_capacity(64);
    let cut_chunks = cuts.len().div_ceil(CUT_CHUNK);
    let mutation_chunks = mutations.div_ceil(MUTATION_CHUNK) as usize;
    let time = |stats: &mut Stats, start: Instant, key: &dyn Fn() -> String| {
        let took = start.elapsed();
        if took > stats.slowest.0 {
            stats.slowest = (took, key());
        }
    };
    let fail = |stats: &mut Stats, key: String, message: String, edits: String| {
        stats.failed += 1;
        if stats.failures.len() < SHOWN_FAILURES {
            stats.failures.push(Failure {
                key,
                message,
                edits,
            });
        }
    };
    loop {
        let chunk = next.fetch_add(1, Ordering::Relaxed);
        if chunk < cut_chunks {
            let lens = &cuts[chunk * CUT_CHUNK..((chunk + 1) * CUT_CHUNK).min(cuts.len())];
            let range = format!("{}:t{}-{}", t.name, lens[0], lens[lens.len() - 1]);
            inflight.set(&run.replay(&range));
            for &len in lens {
                let start = Instant::now();
                let seed = case_seed(run.base, &t.name, len as u64);
                match guarded(t.kind, &t.bytes[..len], true, cx, seed) {
                    Ok(outcome) => stats.count(&outcome),
                    Err(message) => fail(
                        &mut stats,
                        format!("{}:t{len}", t.name),
                        message,
                        String::new(),
                    ),
                }
                stats.cuts += 1;
                stats.cut_time += start.elapsed();
                time(&mut stats, start, &|| format!("{}:t{len}", t.name));
            }
        } else if chunk < cut_chunks + mutation_chunks {
            let first = (chunk - cut_chunks) as u64 * MUTATION_CHUNK;
            let last = (first + MUTATION_CHUNK).min(mutations) - 1;
            inflight.set(&run.replay(&format!("{}:m{first}-{last}", t.name)));
            for index in first..=last {
                let start = Instant::now();
                let seed = case_seed(run.base, &t.name, index);
                plan_edits(t, seed, &mut edits);
                apply(&mut work, &edits, &mut undo);
                let r = guarded(t.kind, &work, false, cx, seed);
                restore(&mut work, &mut undo);
                match r {
                    Ok(outcome) => stats.count(&outcome),
                    Err(message) => {
                        let list: Vec<String> = edits.iter().map(|e| e.to_string()).collect();
                        let key = format!("{}:m{index}", t.name);
                        fail(&mut stats, key, message, list.join("; "));
                    }
                }
                stats.mutations += 1;
                stats.mutation_time += start.elapsed();
                time(&mut stats, start, &|| format!("{}:m{index}", t.name));
            }
        } else {
            return stats;
        }
    }
}

/// The lengths a file is cut to.
fn cuts(t: &Target, full: bool) -> Vec<usize> {
    let len = t.bytes.len();
    let (dense, spread) = match full {
        true if len <= FULL_LIMIT => (len, 0),
        true => (t.structure + STRUCTURE_SLACK, FULL_SPREAD),
        false => (CI_DENSE, CI_SPREAD),
    };
    let dense = dense.min(len);
    let head = match full && len > FULL_LIMIT && dense > 2 * FULL_STRUCTURE_CAP {
        true => FULL_STRUCTURE_CAP,
        false => dense,
    };
    let tail = dense - (dense - head).min(FULL_STRUCTURE_CAP);
    let mut v: Vec<usize> = (0..head).chain(tail..dense).collect();
    if spread > 0 && head < len {
        let step = ((len - head) / spread).max(1);
        v.extend((head..len).step_by(step));
    }
    v.extend(len.saturating_sub(64)..len);
    v.sort_unstable();
    v.dedup();
    v
}

/// Shares `total` mutations out: 0.3% of them to each file, the rest in
/// proportion to cost^-1.5, so that cheap files take many more cases
/// without the costly ones taking much longer.
fn mutation_counts(targets: &[Target], total: u64) -> Vec<u64> {
    let floor = total * 3 / 1000;
    let rest = total.saturating_sub(floor * targets.len() as u64) as f64;
    let weight = |t: &Target| t.cost.powf(-1.5);
    let sum: f64 = targets.iter().map(weight).sum();
    targets
        .iter()
        .map(|t| floor + (rest * weight(t) / sum).ceil() as u64)
        .collect()
}

// ---- Replaying one case ----

/// Runs the cases of a `BARELLAMA_MUTATION_CASE` key, loudly.
fn replay(run: &Run, targets: &[Target], key: &str, cx: &mut Cx<'_>) -> u64 {
    let (name, spec) = key.rsplit_once(':').expect("FILE:tLEN or FILE:mINDEX");
    let t = targets
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no file {name}"));
    let (first, last) = match spec[1..].split_once('-') {
        Some((a, b)) => (a.parse().expect("first"), b.parse().expect("last")),
        None => {
            let i: u64 = spec[1..].parse().expect("index");
            (i, i)
        }
    };
    let mut work = t.bytes.clone();
    let mut edits = Vec::new();
    let mut undo = Vec::new();
    let mut failed = 0;
    for i in first..=last {
        let seed = case_seed(run.base, name, i);
        println!("mutate: case {name}:{}{i}", &spec[..1]);
        let _ = std::io::stdout().flush();
        let r = if spec.starts_with('t') {
            guarded(
                t.kind,
                &t.bytes[..(i as usize).min(t.bytes.len())],
                true,
                cx,
                seed,
            )
        } else {
            plan_edits(t, seed, &mut edits);
            for e in &edits {
                println!("  edit: {e}");
            }
            apply(&mut work, &edits, &mut undo);
            let r = guarded(t.kind, &work, false, cx, seed);
            restore(&mut work, &mut undo);
            r
        };
        match r {
            Ok(Outcome::Ran) => println!("  loaded, tokenized and decoded"),
            Ok(Outcome::Refused(e)) => println!("  error: {e}"),
            Err(message) => {
                failed += 1;
                println!("  PANIC: {message}");
            }
        }
    }
    failed
}

// ---- The test ----

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

#[test]
fn mutated_models_and_tokenizers_load_run_or_fail_cleanly() {
    let Some(dir) = data_dir() else { return };
    install_hook();
    let mode = std::env::var("BARELLAMA_MUTATIONS").unwrap_or_default();
    let (full, total) = match mode.as_str() {
        "" => (false, CI_MUTATIONS),
        "full" => (true, FULL_MUTATIONS),
        n => (
            false,
            n.parse()
                .expect("BARELLAMA_MUTATIONS is `full` or a number"),
        ),
    };
    let run = Run {
        base: env_u64("BARELLAMA_MUTATION_SEED").unwrap_or(DEFAULT_SEED),
        threads: env_u64("BARELLAMA_MUTATION_THREADS").map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n.max(1) as usize,
        ),
    };

    let mut names: Vec<String> = std::fs::read_dir(dir.join("models"))
        .expect("models directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .into_string()
                .unwrap()
        })
        .collect();
    names.sort();
    let targets: Vec<Target> = names.iter().filter_map(|n| target(&dir, n)).collect();
    let vocabularies: Vec<(usize, &[u8])> = targets
        .iter()
        .filter_map(|t| match t.kind {
            Kind::Tokenizer { vocab } => Some((vocab, &t.bytes[..])),
            _ => None,
        })
        .collect();
    assert!(
        !vocabularies.is_empty(),
        "no tokenizer.bin among the models"
    );
    // The SIMD levels; scalar is picked separately.
    let mut isas: Vec<Isa> = Isa::available().filter(|&i| i != Isa::SCALAR).collect();
    if isas.is_empty() {
        isas.push(Isa::SCALAR);
    }
    let mut arenas: Vec<AlignedBuf> = (0..run.threads)
        .map(|_| AlignedBuf::new(ARENA_BYTES))
        .collect();

    if let Ok(key) = std::env::var("BARELLAMA_MUTATION_CASE") {
        let mut cx = Cx {
            arena: &mut arenas[0],
            vocabularies: &vocabularies,
            isas: &isas,
        };
        let failed = replay(&run, &targets, &key, &mut cx);
        assert_eq!(failed, 0, "{failed} cases panicked");
        return;
    }

    for left in Inflight::left_over() {
        println!("mutate: an earlier run stopped (crashed?) while running: {left}");
    }
    let inflight: Vec<Inflight> = (0..run.threads).map(Inflight::open).collect();
    let counts = mutation_counts(&targets, total);
    let started = Instant::now();
    let mut all = Stats::default();
    for (t, &mutations) in targets.iter().zip(&counts) {
        // The unmutated file must get all the way through: otherwise the
        // harness would only ever see errors.
        let mut cx = Cx {
            arena: &mut arenas[0],
            vocabularies: &vocabularies,
            isas: &isas,
        };
        match guarded(t.kind, &t.bytes, false, &mut cx, run.base) {
            Ok(Outcome::Ran) => {}
            Ok(Outcome::Refused(e)) => panic!("{}: unmutated file fails: {e}", t.name),
            Err(message) => panic!("{}: unmutated file panics: {message}", t.name),
        }

        let cuts = cuts(t, full);
        let next = AtomicUsize::new(0);
        let file_start = Instant::now();
        let mut stats = Stats::default();
        std::thread::scope(|s| {
            let workers: Vec<_> = arenas
                .iter_mut()
                .zip(&inflight)
                .map(|(arena, inflight)| {
                    let (run, cuts, next) = (&run, &cuts, &next);
                    let (vocabularies, isas) = (&vocabularies, &isas);
                    s.spawn(move || {
                        let mut cx = Cx {
                            arena,
                            vocabularies,
                            isas,
                        };
                        worker(run, t, cuts, mutations, next, &mut cx, inflight)
                    })
                })
                .collect();
            for w in workers {
                stats.merge(w.join().expect("worker"));
            }
        });
        println!(
            "mutate: {:<26} {:>9} bytes: {:>8} cuts ({:.1} s), {:>7} mutations ({:.1} s), \
             {:>8} errors, {:>6} ran, {} failures, {:.1} s (slowest case {:.1} ms: {})",
            t.name,
            t.bytes.len(),
            stats.cuts,
            stats.cut_time.as_secs_f64(),
            stats.mutations,
            stats.mutation_time.as_secs_f64(),
            stats.errors,
            stats.ran,
            stats.failed,
            file_start.elapsed().as_secs_f64(),
            stats.slowest.0.as_secs_f64() * 1e3,
            stats.slowest.1
        );
        all.merge(stats);
    }
    for f in &inflight {
        f.clear();
    }

    let kinds: Vec<String> = all.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("mutate: errors by kind: {}", kinds.join(", "));
    println!(
        "mutate: {} cases ({} truncations, {} mutations) over {} files, {} errors, \
         {} loaded cleanly, {} failures, seed {:#x}, {} threads, {:.1} s",
        all.cuts + all.mutations,
        all.cuts,
        all.mutations,
        targets.len(),
        all.errors,
        all.ran,
        all.failed,
        run.base,
        run.threads,
        started.elapsed().as_secs_f64()
    );
    for f in &all.failures {
        println!("mutate: FAILED {}: {}", f.key, f.message);
        if !f.edits.is_empty() {
            println!("  edits: {}", f.edits);
        }
        println!("  replay: {}", run.replay(&f.key));
    }
    assert_eq!(all.failed, 0, "{} cases panicked (see above)", all.failed);
    if full {
        assert!(all.mutations >= FULL_MUTATIONS);
    }
}

// ---- Hostile values ----

/// A row of `n` floats: ordinary values of a random magnitude, with a
/// random share of them replaced by the values that break arithmetic.
fn hostile_row(rng: &mut Rng, n: usize) -> Vec<f32> {
    const SPECIAL: [f32; 14] = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        65504.0,
        65520.0,
        1e30,
        -1e30,
    ];
    let share = rng.pick(&[0, 1, 16, 128, 256]);
    let scale = 10f32.powi(rng.below(61) as i32 - 30);
    (0..n)
        .map(|_| match rng.below(256) < share {
            true => rng.pick(&SPECIAL),
            false => (rng.next() as i64 as f32 / i64::MAX as f32) * scale,
        })
        .collect()
}

/// Mutated weights reach the kernels as NaN, infinities, subnormals and
/// huge values, and `quantize`/`convert` requantize them: every type's
/// quantizer, dequantizer, input quantizer and dot product, and the
/// elementwise kernels, on every instruction set, must take any float.
#[test]
fn quantizers_and_kernels_take_any_float() {
    use barellama_core::kernels::{matvec, prepare, rmsnorm, row, softmax, InputBuffers};
    use barellama_core::tensor::WeightRef;
    use barellama_core::write::quant::quantize_row;

    install_hook();
    let full = std::env::var("BARELLAMA_MUTATIONS").as_deref() == Ok("full");
    let cases = match (full, cfg!(target_arch = "aarch64")) {
        (true, _) => 10_000,
        (false, false) => 1_000,
        (false, true) => 200,
    };
    let base = env_u64("BARELLAMA_MUTATION_SEED").unwrap_or(DEFAULT_SEED);
    let (rows, cols) = (4, 512);
    let groups = [4, 64].map(|group| DType::Q8G { group });
    let quantized = [
        DType::F32,
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4K,
        DType::Q6K,
    ];
    let dtypes: Vec<DType> = DType::GGML
        .into_iter()
        .filter(|t| quantized.contains(t))
        .chain(groups)
        .collect();
    let isas: Vec<Isa> = Isa::available().collect();
    let (mut qs, mut d, mut bsums) = (vec![0i8; cols], vec![0f32; cols], vec![0i16; cols]);
    let mut failures = Vec::new();
    for case in 0..cases {
        let seed = case_seed(base, "kernels", case);
        let r = caught(|| {
            let mut rng = Rng(seed);
            let weights: Vec<Vec<f32>> = (0..rows).map(|_| hostile_row(&mut rng, cols)).collect();
            let x = hostile_row(&mut rng, cols);
            let mut out = vec![0f32; cols];
            let mut y = vec![0f32; rows];
            for &dtype in &dtypes {
                // A matrix is its rows' values, then (for Q8G) their scales.
                let row_bytes = dtype.bytes(1, cols).unwrap();
                let mut quantized = vec![0u8; row_bytes];
                let mut values = Vec::new();
                let mut scales = Vec::new();
                for w in &weights {
                    quantize_row(dtype, w, &mut quantized);
                    let (v, s) = match dtype {
                        DType::Q8G { .. } => quantized.split_at(cols),
                        _ => quantized.split_at(row_bytes),
                    };
                    values.extend_from_slice(v);
                    scales.extend_from_slice(s);
                }
                values.extend(scales);
                let w = WeightRef::new("w", dtype, rows, cols, &values).unwrap();
                for r in 0..rows {
                    row(&mut out, &w, r);
                }
                for &isa in &isas {
                    let mut buf = InputBuffers {
                        qs: &mut qs,
                        d: &mut d,
                        bsums: &mut bsums,
                    };
                    let input = prepare(isa, dtype, &x, &mut buf);
                    matvec(isa, &mut y, &w, &input);
                }
            }
            let bytes: Vec<u8> = weights[0].iter().flat_map(|v| v.to_le_bytes()).collect();
            let norm = WeightRef::new("norm", DType::F32, 1, cols, &bytes).unwrap();
            for &isa in &isas {
                rmsnorm(isa, &mut out, &x, &norm, 1e-5);
                let mut probs = x.clone();
                softmax(isa, &mut probs);
            }
        });
        if let Err(message) = r {
            failures.push(format!("kernels case {case} (seed {seed:#x}): {message}"));
        }
    }
    println!(
        "mutate: {cases} hostile-value cases through {} types on {} instruction sets, {} failures",
        dtypes.len(),
        isas.len(),
        failures.len()
    );
    for f in failures.iter().take(SHOWN_FAILURES) {
        println!("mutate: FAILED {f}");
    }
    assert!(failures.is_empty(), "{} cases panicked", failures.len());
}
