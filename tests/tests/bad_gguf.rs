//! Hostile GGUF files: every truncation of real files and hand-made bad
//! headers, metadata, tensor tables and models become typed errors that
//! name the field and value, never a panic or an out-of-bounds read.

use barellama_core::arena::TokenizerPlan;
use barellama_core::error::Error;
use barellama_core::image::gguf::Gguf;
use barellama_core::tensor::DType;
use barellama_core::tokenizer::Family;
use barellama_core::Vocab;
use barellama_core::{Model, Tokenizer};
use barellama_tests::{data_dir, read, AlignedBuf};

// ---- A small GGUF encoder that can also write what no valid file holds ----

#[derive(Clone)]
enum V {
    U8(u8),
    I8(i8),
    U16(u16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    Bool(u8),
    Str(Vec<u8>),
    Strs(Vec<Vec<u8>>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
    /// Any type id followed by any bytes.
    Raw(u32, Vec<u8>),
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s);
}

impl V {
    fn put(&self, out: &mut Vec<u8>) {
        let array = |out: &mut Vec<u8>, elem: u32, n: usize| {
            out.extend(9u32.to_le_bytes());
            out.extend(elem.to_le_bytes());
            out.extend((n as u64).to_le_bytes());
        };
        match self {
            V::U8(v) => out.extend([&0u32.to_le_bytes()[..], &[*v]].concat()),
            V::I8(v) => out.extend([&1u32.to_le_bytes()[..], &v.to_le_bytes()].concat()),
            V::U16(v) => out.extend([&2u32.to_le_bytes()[..], &v.to_le_bytes()].concat()),
            V::U32(v) => out.extend([&4u32.to_le_bytes()[..], &v.to_le_bytes()].concat()),
            V::I32(v) => out.extend([&5u32.to_le_bytes()[..], &v.to_le_bytes()].concat()),
            V::F32(v) => out.extend([&6u32.to_le_bytes()[..], &v.to_le_bytes()].concat()),
            V::Bool(v) => out.extend([&7u32.to_le_bytes()[..], &[*v]].concat()),
            V::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(out, s);
            }
            V::U64(v) => out.extend([&10u32.to_le_bytes()[..], &v.to_le_bytes()].concat()),
            V::I64(v) => out.extend([&11u32.to_le_bytes()[..], &v.to_le_bytes()].concat()),
            V::Strs(items) => {
                array(out, 8, items.len());
                for s in items {
                    put_str(out, s);
                }
            }
            V::F32s(items) => {
                array(out, 6, items.len());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
            V::I32s(items) => {
                array(out, 5, items.len());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
            V::Raw(ty, bytes) => {
                out.extend(ty.to_le_bytes());
                out.extend(bytes);
            }
        }
    }
}

struct Tensor {
    name: Vec<u8>,
    dims: Vec<u64>,
    ty: u32,
    /// Where its data starts; by default right after the previous tensor.
    offset: Option<u64>,
}

struct File {
    version: u32,
    kv: Vec<(Vec<u8>, V)>,
    tensors: Vec<Tensor>,
    /// Written instead of the true tensor and metadata counts.
    counts: Option<(u64, u64)>,
    /// Bytes written as one more metadata entry, key included.
    raw_kv: Option<Vec<u8>>,
    alignment: u64,
}

const DIM: u64 = 8;
const HIDDEN: u64 = 16;
const VOCAB: u64 = 8;

impl File {
    /// A valid one-layer llama with a vocabulary: dim 8, 2 heads sharing
    /// one KV head, hidden 16, 8 tokens.
    fn llama() -> File {
        let s = |v: &str| V::Str(v.as_bytes().to_vec());
        let pieces = ["<unk>", "<s>", "</s>", "<0x0A>", "▁", "a", "▁a", "b"];
        let mut f = File {
            version: 3,
            kv: vec![],
            tensors: vec![],
            counts: None,
            raw_kv: None,
            alignment: 32,
        };
        for (k, v) in [
            ("general.architecture", s("llama")),
            ("llama.embedding_length", V::U32(DIM as u32)),
            ("llama.feed_forward_length", V::U32(HIDDEN as u32)),
            ("llama.block_count", V::U32(1)),
            ("llama.attention.head_count", V::U32(2)),
            ("llama.attention.head_count_kv", V::U32(1)),
            ("llama.context_length", V::U32(16)),
            ("llama.rope.dimension_count", V::U32(4)),
            ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
            ("tokenizer.ggml.model", s("llama")),
            (
                "tokenizer.ggml.tokens",
                V::Strs(pieces.iter().map(|p| p.as_bytes().to_vec()).collect()),
            ),
            (
                "tokenizer.ggml.scores",
                V::F32s((0..VOCAB).map(|i| -(i as f32)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                V::I32s(vec![2, 3, 3, 6, 1, 1, 1, 1]),
            ),
            ("tokenizer.ggml.bos_token_id", V::U32(1)),
            ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ] {
            f.kv.push((k.as_bytes().to_vec(), v));
        }
        let mut t = |name: &str, dims: &[u64]| {
            f.tensors.push(Tensor {
                name: name.as_bytes().to_vec(),
                dims: dims.to_vec(),
                ty: 0,
                offset: None,
            })
        };
        t("token_embd.weight", &[DIM, VOCAB]);
        t("output_norm.weight", &[DIM]);
        t("blk.0.attn_norm.weight", &[DIM]);
        t("blk.0.attn_q.weight", &[DIM, DIM]);
        t("blk.0.attn_k.weight", &[DIM, 4]);
        t("blk.0.attn_v.weight", &[DIM, 4]);
        t("blk.0.attn_output.weight", &[DIM, DIM]);
        t("blk.0.ffn_norm.weight", &[DIM]);
        t("blk.0.ffn_gate.weight", &[DIM, HIDDEN]);
        t("blk.0.ffn_down.weight", &[HIDDEN, DIM]);
        t("blk.0.ffn_up.weight", &[DIM, HIDDEN]);
        f
    }

    fn set(&mut self, key: &str, v: V) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key.as_bytes()) {
            Some(kv) => kv.1 = v,
            None => self.kv.push((key.as_bytes().to_vec(), v)),
        }
        self
    }

    fn remove(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key.as_bytes());
        self
    }

    fn tensor(&mut self, name: &str) -> &mut Tensor {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name.as_bytes())
            .unwrap()
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        let n_kv = self.kv.len() as u64 + u64::from(self.raw_kv.is_some());
        let (n_t, n_kv) = self.counts.unwrap_or((self.tensors.len() as u64, n_kv));
        out.extend(n_t.to_le_bytes());
        out.extend(n_kv.to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            v.put(&mut out);
        }
        if let Some(raw) = &self.raw_kv {
            out.extend(raw);
        }
        let mut at = 0u64;
        let mut data_len = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.ty.to_le_bytes());
            let offset = t.offset.unwrap_or(at);
            out.extend(offset.to_le_bytes());
            let cols = t.dims.first().copied().unwrap_or(1) as usize;
            let rows = t
                .dims
                .iter()
                .skip(1)
                .try_fold(1u64, |r, &d| r.checked_mul(d))
                .unwrap_or(0) as usize;
            let bytes = DType::from_ggml(t.ty)
                .and_then(|d| d.bytes(rows, cols))
                .unwrap_or(0) as u64;
            // An offset a test chose does not grow the file.
            if t.offset.is_none() {
                at = (offset + bytes).next_multiple_of(self.alignment);
                data_len = data_len.max(at);
            }
        }
        out.resize(
            (out.len() as u64).next_multiple_of(self.alignment) as usize,
            0,
        );
        // Zero weights: enough to load and run.
        out.resize(out.len() + data_len as usize, 0);
        out
    }
}

fn load_err(f: &File) -> Error {
    match Model::load(&f.bytes()) {
        Ok(_) => panic!("loaded"),
        Err(e) => {
            assert_eq!(e.exit_code(), 3, "{e}");
            e
        }
    }
}

fn message(f: &File) -> String {
    load_err(f).to_string()
}

// ---- Truncation ----

/// Every prefix of `image` shorter than `keep` bytes fails to load with a
/// typed error; every byte up to `dense`, then a spread.
fn every_cut_fails(name: &str, image: &[u8], dense: usize) {
    // Under qemu each parse is slow: the spread is wider there.
    let step = if cfg!(target_arch = "aarch64") {
        4099
    } else {
        509
    };
    let dense = if cfg!(target_arch = "aarch64") {
        dense.min(8192)
    } else {
        dense
    };
    let cuts = (0..dense.min(image.len())).chain((dense..image.len()).step_by(step));
    for len in cuts.chain(image.len().saturating_sub(64)..image.len()) {
        match Model::load(&image[..len]) {
            Err(e) => assert_eq!(e.exit_code(), 3, "{name} cut at {len}: {e}"),
            Ok(_) => panic!("{name} cut at {len} bytes loaded"),
        }
    }
}

#[test]
fn every_truncation_of_a_gguf_model_is_an_error() {
    let tiny = File::llama().bytes();
    assert!(Model::load(&tiny).is_ok());
    every_cut_fails("tiny", &tiny, tiny.len());
    let Some(dir) = data_dir() else { return };
    for name in [
        "stories260K-f32.gguf",
        "synsmall-Q4_K_M.gguf",
        "synsmall-Q4_0.gguf",
    ] {
        let image = read(&dir, &format!("models/{name}"));
        let g = Gguf::parse(&image).unwrap();
        // Every byte of the header, metadata and tensor table.
        let header = g
            .file_offset(&g.tensors().next().unwrap().unwrap())
            .min(g.bytes().len());
        assert!(Model::load(&image).is_ok());
        every_cut_fails(name, &image, header + 4096);
    }
}

#[test]
fn every_truncation_of_a_vocabulary_is_an_error() {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, "models/ggml-vocab-llama-spm.gguf");
    let g = Gguf::parse(&image).unwrap();
    let vocab = g.array(
        "tokenizer.ggml.tokens",
        barellama_core::image::gguf::ValueType::String,
    );
    let n = vocab.unwrap().unwrap().0 as usize;
    let plan = TokenizerPlan::new(n, Family::SentencePiece, 64).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    // The file is all metadata: parsing a cut is linear in its length, so
    // every byte of the first and last few kilobytes, a spread between.
    let step = if cfg!(target_arch = "aarch64") {
        9973
    } else {
        211
    };
    let cuts = (0..4096)
        .chain((4096..image.len()).step_by(step))
        .chain(image.len() - 4096..image.len());
    for len in cuts {
        if let Ok(g) = Gguf::parse(&image[..len]) {
            panic!(
                "vocabulary cut at {len} parsed ({} keys)",
                g.metadata().count()
            );
        }
    }
    // Whole, it gives a tokenizer.
    assert!(Tokenizer::from_gguf(&g, n, plan.carve(arena.get()).unwrap()).is_ok());
}

// ---- Header ----

#[test]
fn bad_headers_name_the_field() {
    let mut f = File::llama();
    f.version = 1;
    assert_eq!(message(&f), "GGUF version = 1 is not supported");
    f.version = 4;
    assert_eq!(message(&f), "GGUF version = 4 is not supported");
    f.version = 2;
    assert!(Model::load(&f.bytes()).is_ok(), "v2 is v3's layout");

    let mut f = File::llama();
    f.counts = Some((u64::MAX, 15));
    assert!(
        message(&f).starts_with("tensor count = "),
        "{}",
        message(&f)
    );
    f.counts = Some((11, u64::MAX));
    assert!(
        message(&f).starts_with("metadata count = "),
        "{}",
        message(&f)
    );
    // Plausible counts larger than the file: the parse runs into the
    // bytes that follow and stops at the first that cannot be an entry.
    f.counts = Some((11, 1000));
    load_err(&f);
    f.counts = Some((16000, 15));
    load_err(&f);

    let mut bytes = File::llama().bytes();
    bytes[..4].copy_from_slice(b"GGUG");
    assert!(Model::load(&bytes).is_err());
}

// ---- Metadata ----

/// A metadata entry from raw bytes: key length, key, then anything.
fn raw_entry(key_len: u64, key: &[u8], rest: &[u8]) -> Vec<u8> {
    [&key_len.to_le_bytes()[..], key, rest].concat()
}

#[test]
fn bad_metadata_names_the_field() {
    let with_raw = |raw: Vec<u8>| {
        let mut f = File::llama();
        f.raw_kv = Some(raw);
        message(&f)
    };
    let ty = |id: u32| id.to_le_bytes().to_vec();
    // A key or string longer than any file could hold.
    assert!(with_raw(raw_entry(u64::MAX, b"k", &[])).starts_with("metadata key = "));
    let huge_string = [ty(8), u64::MAX.to_le_bytes().to_vec()].concat();
    assert!(with_raw(raw_entry(1, b"k", &huge_string)).starts_with("metadata string = "));
    // Unknown value types, reported by number.
    assert_eq!(
        with_raw(raw_entry(1, b"k", &ty(13))),
        "metadata value type = 13 is not supported"
    );
    assert_eq!(
        with_raw(raw_entry(1, b"k", &ty(u32::MAX))),
        "metadata value type = 4294967295 is not supported"
    );
    // A bool that is neither 0 nor 1.
    assert_eq!(
        with_raw(raw_entry(1, b"k", &[ty(7), vec![2]].concat())),
        "metadata bool = 2 is invalid"
    );
    // Arrays: of arrays, of an unknown type, longer than the file, with a
    // byte size that overflows.
    let array = |elem: u32, n: u64| [ty(9), ty(elem), n.to_le_bytes().to_vec()].concat();
    assert_eq!(
        with_raw(raw_entry(1, b"k", &array(9, 1))),
        "nested metadata array = 9 is not supported"
    );
    assert_eq!(
        with_raw(raw_entry(1, b"k", &array(77, 1))),
        "metadata array type = 77 is not supported"
    );
    assert!(
        with_raw(raw_entry(1, b"k", &array(4, 1 << 40))).starts_with("metadata array: input ends")
    );
    assert_eq!(
        with_raw(raw_entry(1, b"k", &array(10, u64::MAX / 4))),
        "metadata array length: size overflows the address space"
    );
    assert!(with_raw(raw_entry(1, b"k", &array(8, u64::MAX)))
        .starts_with("metadata array of strings: input ends"));

    // The same key twice.
    let mut f = File::llama();
    f.kv.push((b"llama.block_count".to_vec(), V::U32(1)));
    assert_eq!(
        message(&f),
        "metadata key 'llama.block_count' appears twice"
    );

    // Alignment: a power of two up to 64 KiB, an unsigned integer.
    for (v, want) in [(0u64, "0"), (3, "3"), (1 << 20, "1048576")] {
        let mut f = File::llama();
        f.set("general.alignment", V::U64(v));
        assert_eq!(
            message(&f),
            format!("general.alignment = {want} is invalid")
        );
    }
    let mut f = File::llama();
    f.set("general.alignment", V::Str(b"32".to_vec()));
    assert_eq!(
        message(&f),
        "general.alignment has value type 8, expected an unsigned integer"
    );
    let mut f = File::llama();
    f.alignment = 64;
    f.set("general.alignment", V::U8(64));
    assert!(Model::load(&f.bytes()).is_ok(), "any integer width");
}

// ---- Tensor table ----

#[test]
fn bad_tensor_infos_name_the_tensor() {
    let edit = |change: &dyn Fn(&mut Tensor)| {
        let mut f = File::llama();
        change(f.tensor("blk.0.attn_q.weight"));
        message(&f)
    };
    let q = "tensor 'blk.0.attn_q.weight'";
    assert_eq!(
        edit(&|t| t.dims = vec![]),
        format!("{q} has no dimensions or more than four")
    );
    assert_eq!(
        edit(&|t| t.dims = vec![8, 8, 1, 1, 1]),
        format!("{q} has no dimensions or more than four")
    );
    assert_eq!(
        edit(&|t| t.dims = vec![8, 0]),
        format!("{q} has a zero dimension")
    );
    assert_eq!(
        edit(&|t| t.dims = vec![8, u64::MAX, u64::MAX]),
        format!("{q} has dimensions that overflow the address space")
    );
    assert_eq!(
        edit(&|t| t.dims = vec![1 << 62, 4]),
        format!("{q} has a size that overflows the address space")
    );
    // Unknown types by number; known ones this engine does not compute.
    assert_eq!(
        edit(&|t| t.ty = 99),
        format!("{q} has GGML type 99 (unknown), which is not supported")
    );
    assert_eq!(
        edit(&|t| t.ty = 16),
        format!("{q} has GGML type 16 (IQ2_XXS), which is not supported")
    );
    assert_eq!(
        edit(&|t| t.ty = 39),
        format!("{q} has GGML type 39 (MXFP4), which is not supported")
    );
    // Rows must be whole blocks.
    assert_eq!(
        edit(&|t| t.ty = 8),
        format!("{q} has rows that are not a whole number of blocks")
    );
    // Data: aligned, inside the file, offsets that overflow.
    assert_eq!(
        edit(&|t| t.offset = Some(4)),
        format!("{q} has data that is not aligned")
    );
    assert_eq!(
        edit(&|t| t.offset = Some(1 << 40)),
        format!("{q} has data outside the file")
    );
    assert_eq!(
        edit(&|t| t.offset = Some(u64::MAX - 31)),
        format!("{q} has data outside the file")
    );
    // A name too long to be a tensor's.
    assert!(edit(&|t| t.name = vec![b'x'; 65]).starts_with("tensor name = 65 is invalid"));

    let mut f = File::llama();
    f.tensor("blk.0.attn_k.weight").name = b"blk.0.attn_q.weight".to_vec();
    assert_eq!(message(&f), format!("{q} appears twice"));
}

/// A file of one-value F32 tensors named `names`, all at offset 0.
fn tensor_table(names: &[String]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((names.len() as u64).to_le_bytes());
    out.extend(0u64.to_le_bytes());
    for name in names {
        put_str(&mut out, name.as_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32) + 32, 0);
    out
}

/// The duplicate-name check rescans names that share a filter bit: the
/// table is bounded (4096 tensors, over three times a 128-layer llama's)
/// so that names chosen to collide cannot make it quadratic in a large
/// count (16384 tensors took ten seconds in a 640 KB file).
#[test]
fn tensor_tables_are_bounded_and_repeats_found() {
    let mut f = File::llama();
    f.counts = Some((4097, 15));
    assert_eq!(message(&f), "tensor count = 4097 is not supported");
    let mut names: Vec<String> = (0..4095).map(|i| format!("t{i}")).collect();
    assert_eq!(
        Gguf::parse(&tensor_table(&names)).map(|g| g.tensor_count()),
        Ok(4095)
    );
    names.push("t2047".into());
    assert_eq!(
        Gguf::parse(&tensor_table(&names)).unwrap_err().to_string(),
        "tensor 't2047' appears twice"
    );
}

// ---- The llama model ----

#[test]
fn bad_llama_metadata_names_the_key() {
    let msg = |edit: &dyn Fn(&mut File)| {
        let mut f = File::llama();
        edit(&mut f);
        message(&f)
    };
    assert_eq!(
        msg(&|f| {
            f.set("general.architecture", V::Str(b"gpt2".to_vec()));
        }),
        "general.architecture 'gpt2' is not supported (only llama)"
    );
    assert_eq!(
        msg(&|f| {
            f.remove("llama.embedding_length");
        }),
        "metadata key 'llama.embedding_length' is missing"
    );
    assert_eq!(
        msg(&|f| {
            f.set("llama.block_count", V::I32(-3));
        }),
        "llama.block_count = -3 is invalid"
    );
    assert_eq!(
        msg(&|f| {
            f.set("llama.block_count", V::U64(0));
        }),
        "llama.block_count = 0 is invalid"
    );
    assert_eq!(
        msg(&|f| {
            f.set("llama.attention.head_count", V::U64(1 << 40));
        }),
        "llama.attention.head_count = 1099511627776 is invalid"
    );
    assert_eq!(
        msg(&|f| {
            f.set("llama.block_count", V::F32(1.0));
        }),
        "llama.block_count has value type 6, expected a non-negative integer"
    );
    assert_eq!(
        msg(&|f| {
            f.set("llama.rope.dimension_count", V::U16(2));
        }),
        "llama.rope.dimension_count = 2 differs from (partial rotary is not supported) head_size = 4"
    );
    // Integers of any width that fit are accepted.
    for v in [
        V::U8(1),
        V::I8(1),
        V::U16(1),
        V::I32(1),
        V::U64(1),
        V::I64(1),
    ] {
        let mut f = File::llama();
        f.set("llama.block_count", v);
        assert!(Model::load(&f.bytes()).is_ok());
    }
    // And floats of either width.
    let mut f = File::llama();
    let eps = V::Raw(12, 1e-6f64.to_le_bytes().to_vec());
    f.set("llama.attention.layer_norm_rms_epsilon", eps);
    assert_eq!(Model::load(&f.bytes()).unwrap().config.norm_eps, 1e-6);
}

#[test]
fn bad_llama_tensors_name_the_tensor() {
    let msg = |edit: &dyn Fn(&mut File)| {
        let mut f = File::llama();
        edit(&mut f);
        message(&f)
    };
    assert_eq!(
        msg(&|f| f.tensors.retain(|t| t.name != b"blk.0.ffn_up.weight")),
        "tensor 'blk.0.ffn_up.weight' is missing"
    );
    assert_eq!(
        msg(&|f| f.tensor("blk.0.ffn_up.weight").dims = vec![HIDDEN, DIM]),
        "tensor 'blk.0.ffn_up.weight' is 16x8, expected 8x16"
    );
    assert_eq!(
        msg(&|f| f.tensor("blk.0.ffn_norm.weight").ty = 1),
        "tensor 'blk.0.ffn_norm.weight' is a norm but not F32"
    );
    assert_eq!(
        msg(&|f| f.tensor("blk.0.attn_q.weight").dims = vec![DIM, DIM, 1, 2]),
        "tensor 'blk.0.attn_q.weight' is 8x16, expected 8x8"
    );
    // Tensors this engine would ignore change the arithmetic: refused.
    for extra in [
        "blk.0.attn_q.bias",
        "blk.1.attn_q.weight",
        "blk.0.rope_freqs.weight",
        "blk.x.attn_q.weight",
        // Layer 0 in spellings no lookup asks for: never read.
        "blk.00.attn_q.weight",
        "blk.+0.attn_q.weight",
    ] {
        let mut f = File::llama();
        f.tensors.push(Tensor {
            name: extra.as_bytes().to_vec(),
            dims: vec![DIM],
            ty: 0,
            offset: None,
        });
        assert_eq!(
            message(&f),
            format!("tensor '{extra}' is not part of a llama model")
        );
    }
    // Llama 3's RoPE frequency factors: one F32 per pair of a head, each
    // a positive number; scaling other than linear changes the arithmetic.
    let rope_freqs = |dims: Vec<u64>, ty: u32| {
        let mut f = File::llama();
        f.tensors.push(Tensor {
            name: b"rope_freqs.weight".to_vec(),
            dims,
            ty,
            offset: None,
        });
        f
    };
    // (The test file's tensor data is zeros.)
    assert_eq!(
        message(&rope_freqs(vec![2], 0)),
        "tensor 'rope_freqs.weight' holds a factor that is not a positive number"
    );
    assert_eq!(
        message(&rope_freqs(vec![4], 0)),
        "tensor 'rope_freqs.weight' is 4x1, expected 2x1"
    );
    assert_eq!(
        message(&rope_freqs(vec![2], 1)),
        "tensor 'rope_freqs.weight' is a norm but not F32"
    );
    let mut f = File::llama();
    f.set("llama.rope.scaling.type", V::Str(b"yarn".to_vec()));
    assert_eq!(
        message(&f),
        "llama.rope.scaling.type 'yarn' is not supported (none, linear)"
    );
    f.set("llama.rope.scaling.type", V::Str(b"linear".to_vec()));
    f.set("llama.rope.scaling.factor", V::F32(4.0));
    assert_eq!(Model::load(&f.bytes()).unwrap().config.rope_scale, 0.25);
    f.set("llama.attention.key_length", V::U32(8));
    assert_eq!(
        message(&f),
        "llama.attention.key_length = 8 differs from (other head widths are not supported) \
         head_size = 4"
    );

    // No output.weight: the classifier is the embedding table.
    let mut f = File::llama();
    f.tensors.retain(|t| t.name != b"output.weight");
    assert!(Model::load(&f.bytes()).is_ok());
}

// ---- The vocabulary ----

fn vocab_err(f: &File) -> String {
    let bytes = f.bytes();
    let g = Gguf::parse(&bytes).unwrap();
    // A vocabulary of no family this engine knows has no plan of its own.
    let family = Family::of(&Vocab::Gguf(g)).unwrap_or_default();
    let plan = TokenizerPlan::new(VOCAB as usize, family, 64).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let err = Tokenizer::from_gguf(&g, VOCAB as usize, plan.carve(arena.get()).unwrap()).err();
    let e = err.expect("tokenizer built");
    assert_eq!(e.exit_code(), 3);
    e.to_string()
}

#[test]
fn bad_vocabularies_name_the_key() {
    let msg = |edit: &dyn Fn(&mut File)| {
        let mut f = File::llama();
        edit(&mut f);
        vocab_err(&f)
    };
    assert_eq!(
        msg(&|f| {
            f.set("tokenizer.ggml.model", V::Str(b"bert".to_vec()));
        }),
        "tokenizer.ggml.model 'bert' is not supported (llama: SentencePiece; gpt2: byte-level BPE)"
    );
    let bpe = |f: &mut File| {
        f.set("tokenizer.ggml.model", V::Str(b"gpt2".to_vec()));
    };
    assert_eq!(
        msg(&|f| {
            bpe(f);
            f.set("tokenizer.ggml.pre", V::Str(b"gpt2".to_vec()));
        }),
        "tokenizer.ggml.pre 'gpt2' is not a pre-tokenizer this engine knows \
         (llama-bpe, smollm, gpt-2, default)"
    );
    assert_eq!(
        msg(&|f| {
            bpe(f);
            f.set("tokenizer.ggml.merges", V::Strs(vec![b"a b".to_vec()]));
        }),
        "tokenizer.ggml.merges 'a b' joins pieces that are not tokens"
    );
    assert_eq!(
        msg(&|f| {
            f.remove("tokenizer.ggml.tokens");
        }),
        "metadata key 'tokenizer.ggml.tokens' is missing"
    );
    assert_eq!(
        msg(&|f| {
            f.set("tokenizer.ggml.tokens", V::Strs(vec![b"a".to_vec(); 7]));
        }),
        "tokenizer.ggml.tokens = 7 entries differ from the model's vocab_size = 8"
    );
    assert_eq!(
        msg(&|f| {
            f.set("tokenizer.ggml.scores", V::F32s(vec![0.0; 9]));
        }),
        "tokenizer.ggml.scores = 9 entries differ from the model's vocab_size = 8"
    );
    assert!(msg(&|f| {
        f.set("tokenizer.ggml.token_type", V::F32s(vec![0.0; 8]));
    })
    .starts_with("tokenizer.ggml.token_type has value type"));
    assert_eq!(
        msg(&|f| {
            f.set("tokenizer.ggml.bos_token_id", V::U32(8));
        }),
        "tokenizer.ggml.bos_token_id = 8 is invalid"
    );
    assert_eq!(
        msg(&|f| {
            f.set("tokenizer.ggml.eos_token_id", V::I32(-1));
        }),
        "tokenizer.ggml.eos_token_id = -1 is invalid"
    );
}

#[test]
fn add_bos_token_decides_whether_prompts_start_with_bos() {
    let encode = |add_bos: Option<bool>| {
        let mut f = File::llama();
        if let Some(b) = add_bos {
            f.set("tokenizer.ggml.add_bos_token", V::Bool(b.into()));
        }
        let bytes = f.bytes();
        let g = Gguf::parse(&bytes).unwrap();
        let plan = TokenizerPlan::new(VOCAB as usize, Family::SentencePiece, 64).unwrap();
        let mut arena = AlignedBuf::new(plan.bytes());
        let t = Tokenizer::from_gguf(&g, VOCAB as usize, plan.carve(arena.get()).unwrap()).unwrap();
        t.add_bos()
    };
    assert!(encode(None), "llama.cpp's default for SentencePiece");
    assert!(encode(Some(true)));
    assert!(!encode(Some(false)));
}
