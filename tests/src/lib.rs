//! Helpers shared by the integration tests: where the reference data lives,
//! the L2CG golden format, an aligned arena, and logit comparison.

use std::path::PathBuf;

use barellama_core::arena::KvType;
use barellama_core::{Compute, Isa, Model, Options, Plan, Transformer, Vocab};

/// `../shared/data` beside the repository, or `$BARELLAMA_DATA`. `None`
/// (with a note on stderr) when it is missing, except under `CI=true`,
/// where missing data fails the test.
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("BARELLAMA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if dir.join("models").is_dir() && dir.join("golden").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "test data missing at {} and CI=true requires it",
            dir.display()
        );
    }
    eprintln!(
        "skipped: test data not found at {} (set BARELLAMA_DATA)",
        dir.display()
    );
    None
}

/// Reads `models/NAME` or `golden/NAME` from the data directory.
pub fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The seven header integers of a llama2.c checkpoint, in file order.
pub const LLAMA2C_HEADER: [&str; 7] = [
    "dim",
    "hidden_dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "seq_len",
];

/// A model file and, for a llama2.c model, its `tokenizer.bin`.
pub struct ModelFiles {
    pub image: Vec<u8>,
    tokenizer: Option<Vec<u8>>,
}

impl ModelFiles {
    /// `models/{model}` and `models/{tokenizer}` from the data directory.
    pub fn read(dir: &std::path::Path, model: &str, tokenizer: Option<&str>) -> ModelFiles {
        ModelFiles {
            image: read(dir, &format!("models/{model}")),
            tokenizer: tokenizer.map(|t| read(dir, &format!("models/{t}"))),
        }
    }

    /// The vocabulary, and the KV cache type the format's own engine uses:
    /// f32 with llama2.c's tokenizer, f16 with a GGUF file's own (llama.cpp).
    pub fn vocab<'a>(&'a self, model: &Model<'a>) -> (Vocab<'a>, KvType) {
        match &self.tokenizer {
            Some(tok) => (Vocab::Llama2c(tok), KvType::F32),
            None => (Vocab::Gguf(model.gguf.expect("a GGUF model")), KvType::F16),
        }
    }
}

/// Space-separated ids from a `*.tokens.txt` file.
pub fn read_ids(dir: &std::path::Path, name: &str) -> Vec<u32> {
    String::from_utf8(read(dir, name))
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

/// A teacher-forced reference: `logits[t]` follows `tokens[t]` at position `t`.
pub struct Golden {
    pub tokens: Vec<u32>,
    pub n_prompt: usize,
    pub vocab: usize,
    pub logits: Vec<f32>,
}

impl Golden {
    pub fn steps(&self) -> usize {
        self.tokens.len() - 1
    }

    /// Parses the `L2CG` format of `shared/data/README.md`.
    pub fn parse(bytes: &[u8]) -> Golden {
        let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(word(0), 0x4743_324c, "L2CG magic");
        assert_eq!(word(1), 1, "L2CG version");
        let (steps, vocab, n_prompt) = (word(2) as usize, word(3) as usize, word(4) as usize);
        let tokens: Vec<u32> = (0..=steps).map(|i| word(5 + i)).collect();
        let base = 5 + steps + 1;
        let logits: Vec<f32> = (0..steps * vocab)
            .map(|i| f32::from_bits(word(base + i)))
            .collect();
        assert_eq!(bytes.len(), 4 * (base + steps * vocab), "L2CG length");
        Golden {
            tokens,
            n_prompt,
            vocab,
            logits,
        }
    }

    pub fn read(dir: &std::path::Path, name: &str) -> Golden {
        Golden::parse(&read(dir, name))
    }
}

/// A zeroed buffer whose usable part starts on a 64-byte boundary.
pub struct AlignedBuf {
    buf: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let buf = vec![0u8; len + 64];
        let offset = buf.as_ptr().align_offset(64);
        AlignedBuf { buf, offset, len }
    }

    pub fn get(&mut self) -> &mut [u8] {
        &mut self.buf[self.offset..self.offset + self.len]
    }
}

/// Feeds `tokens[..steps]` one at a time and returns every logit row.
pub fn teacher_forced(
    image: &[u8],
    tokens: &[u32],
    steps: usize,
    compute: Compute<'_>,
) -> Vec<f32> {
    teacher_forced_kv(image, tokens, steps, compute, KvType::F32)
}

/// Teacher-forces `models/{model}` on `golden/{golden}`'s tokens with every
/// kernel level this CPU has, and hands `check` each level's name, its
/// logits and the golden. Does nothing (after a note) without the data.
pub fn against_golden(model: &str, golden: &str, mut check: impl FnMut(&str, &[f32], &Golden)) {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, &format!("models/{model}"));
    let g = Golden::read(&dir, &format!("golden/{golden}"));
    for isa in Isa::available() {
        let ours = teacher_forced(&image, &g.tokens, g.steps(), Compute::single(isa));
        check(isa.name(), &ours, &g);
    }
}

/// [`teacher_forced`] with a chosen KV cache type.
pub fn teacher_forced_kv(
    image: &[u8],
    tokens: &[u32],
    steps: usize,
    compute: Compute<'_>,
    kv: KvType,
) -> Vec<f32> {
    let model = Model::load(image).expect("model loads");
    let plan = Plan::new(
        &model.config,
        &Options {
            seq_len: steps,
            // The GGUF goldens run past the files' 128-position context.
            allow_longer: true,
            kv,
            ..Options::default()
        },
    )
    .unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let buffers = plan.carve(arena.get()).unwrap();
    let mut t = Transformer::new(&model, plan.config(), buffers.state, compute).unwrap();
    let mut out = Vec::with_capacity(steps * model.config.vocab_size);
    for (pos, &tok) in tokens[..steps].iter().enumerate() {
        out.extend_from_slice(t.forward(tok, pos).unwrap());
    }
    out
}

/// Largest and mean absolute difference.
pub fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "logit counts differ");
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        assert!(!d.is_nan(), "NaN in logits");
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.len() as f64) as f32)
}

/// A [`TextSink`](barellama_core::TextSink) writer that only counts the
/// bytes of text: it never allocates, for the allocation-counting tests.
#[derive(Default)]
pub struct TextBytes(pub usize);

impl std::fmt::Write for TextBytes {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("barellama-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// The fraction of steps (rows of `vocab` logits) whose argmax agrees.
pub fn argmax_agreement(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let rows = a.len() / vocab;
    let same = (0..rows)
        .filter(|&t| argmax(&a[t * vocab..][..vocab]) == argmax(&b[t * vocab..][..vocab]))
        .count();
    same as f64 / rows as f64
}
