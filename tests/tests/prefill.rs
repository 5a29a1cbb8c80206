//! Batched prefill against token-by-token feeding: the logits after the
//! prompt and after the decode steps that follow (which read the cache the
//! prefill wrote) must be bitwise the same, for every format, cache type,
//! instruction set, thread count and chunk size (chunks that do not divide
//! the prompt included).

use barellama_core::arena::KvType;
use barellama_core::exec::ThreadPool;
use barellama_core::{Compute, Isa, Model, Options, Plan, Transformer};
use barellama_tests::{data_dir, read, AlignedBuf};

/// The prompt's logits and three decode steps' logits, concatenated.
fn logits(
    image: &[u8],
    prompt: &[u32],
    batch: usize,
    kv: KvType,
    compute: Compute<'_>,
) -> Vec<f32> {
    let model = Model::load(image).unwrap();
    let options = Options {
        seq_len: 64,
        kv,
        batch,
        ..Options::default()
    };
    let plan = Plan::new(&model.config, &options).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let buffers = plan.carve(arena.get()).unwrap();
    let mut t = Transformer::new(&model, plan.config(), buffers.state, compute).unwrap();
    let mut out = t.prefill(prompt, 0).unwrap().to_vec();
    for (i, &token) in [7u32, 300, 2].iter().enumerate() {
        out.extend_from_slice(t.forward(token, prompt.len() + i).unwrap());
    }
    out
}

#[test]
fn prefill_equals_token_by_token() {
    let Some(dir) = data_dir() else { return };
    let prompt: Vec<u32> = (0..29u32).map(|i| 1 + (i * 37) % 500).collect();
    let pool = ThreadPool::new(2).unwrap();
    for model in [
        "stories260K.bin",
        "stories260K-q80.bin",
        "stories260K-f32.gguf",
        "synsmall.bin",
        "synsmall-v1.bin",
        "synsmall-q80.bin",
        "synsmall-F16.gguf",
        "synsmall-Q8_0.gguf",
        "synsmall-Q4_0.gguf",
        "synsmall-Q4_K_M.gguf",
    ] {
        let image = read(&dir, &format!("models/{model}"));
        // Both caches on the small model; the format's own on the others.
        let kvs: &[KvType] = match (model.starts_with("stories"), model.ends_with(".gguf")) {
            (true, _) => &[KvType::F32, KvType::F16],
            (false, true) => &[KvType::F16],
            (false, false) => &[KvType::F32],
        };
        for isa in Isa::available() {
            for &kv in kvs {
                let one = Compute::single(isa);
                let sequential = logits(&image, &prompt, 1, kv, one);
                for (batch, compute) in [(5, Compute { isa, exec: &pool }), (32, one)] {
                    let batched = logits(&image, &prompt, batch, kv, compute);
                    let same = sequential
                        .iter()
                        .zip(&batched)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{model} [{}] {kv:?} batch {batch}: prefill differs",
                        isa.name()
                    );
                }
            }
        }
        println!("{model}: batched prefill is bitwise token-by-token");
    }
}
