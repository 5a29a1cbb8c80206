//! Invariant 1: after setup, tokenizing, decoding, sampling and turning
//! pieces into text allocate nothing. Runs without the test harness so no
//! other thread allocates while we count.

use barellama_core::exec::ThreadPool;
use barellama_core::hosted::CountingAlloc;
use barellama_core::tokenizer::Family;
use barellama_core::{Compute, Isa, Model, Options, Plan, SamplerConfig, Session, TextSink, Vocab};
use barellama_tests::{data_dir, read, AlignedBuf, ModelFiles, TextBytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// `tokenizer` names a llama2.c `tokenizer.bin`; without one the model is
/// a GGUF file, decoded with its own vocabulary and llama.cpp's f16 cache.
fn decode_without_allocating(
    name: &str,
    tokenizer: Option<&str>,
    sampler: SamplerConfig,
    threads: usize,
) {
    let Some(dir) = data_dir() else { return };
    let files = ModelFiles::read(&dir, name, tokenizer);
    let model = Model::load(&files.image).unwrap();
    let pool = ThreadPool::new(threads).unwrap();
    let compute = Compute {
        isa: Isa::detect(),
        exec: &pool,
    };
    let (vocab, kv) = files.vocab(&model);
    let options = Options {
        kv,
        tokenizer: Family::of(&vocab).unwrap(),
        ..Options::default()
    };
    let plan = Plan::new(&model.config, &options).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut session = Session::new(&model, vocab, sampler, &plan, arena.get(), compute).unwrap();
    let mut text = TextSink::plain(TextBytes::default());
    let mut tokens = 0usize;

    let before = ALLOC.allocations();
    let prompt = "Once upon a time, in a garden";
    let steps = session
        .generate(prompt.as_bytes(), 64 + 12, |_, piece| {
            tokens += 1;
            text.echo(piece);
            Ok(())
        })
        .unwrap();
    text.finish().unwrap();
    let allocations = ALLOC.allocations() - before;
    let text_bytes = text.writer().0;

    assert!(
        steps >= 64 && tokens >= 63,
        "{name}: only {steps} steps ran"
    );
    assert!(text_bytes > 0);
    assert_eq!(
        allocations, 0,
        "{name}: {allocations} allocations in {steps} steps"
    );
    println!("alloc: {name}, {threads} threads, {kv:?} cache: {steps} steps, {text_bytes} bytes of text, 0 allocations");
}

fn main() {
    let sampled = SamplerConfig {
        temperature: 1.0,
        topp: 0.9,
        topk: 0,
        seed: 42,
        ..SamplerConfig::DEFAULT
    };
    decode_without_allocating("stories260K.bin", Some("tok512.bin"), sampled, 1);
    decode_without_allocating("stories260K.bin", Some("tok512.bin"), sampled, 2);
    let topk = SamplerConfig {
        topk: 40,
        ..sampled
    };
    decode_without_allocating("synsmall.bin", Some("tok512.bin"), topk, 2);
    decode_without_allocating("synsmall-Q4_K_M.gguf", None, topk, 2);
    decode_without_allocating("synsmall-Q4_0.gguf", None, sampled, 1);
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..sampled
    };
    decode_without_allocating("synsmall-v1.bin", Some("tok512.bin"), greedy, 3);
    decode_without_allocating("synsmall-Q8_0.gguf", None, greedy, 3);
    // Byte-level BPE: Llama 3's vocabulary and pre-tokenizer.
    decode_without_allocating("synl3-Q8_0.gguf", None, sampled, 2);
    search_without_allocating("stories260K.bin", 2);
}

/// Beam search with four beams: prefill, batched steps, cache copies.
fn search_without_allocating(name: &str, threads: usize) {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, &format!("models/{name}"));
    let tok = read(&dir, "models/tok512.bin");
    let model = Model::load(&image).unwrap();
    let pool = ThreadPool::new(threads).unwrap();
    let compute = Compute {
        isa: Isa::detect(),
        exec: &pool,
    };
    let options = Options {
        seq_len: 128,
        beams: 4,
        ..Options::default()
    };
    let plan = Plan::new(&model.config, &options).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let greedy = SamplerConfig::default();
    let vocab = Vocab::Llama2c(&tok);
    let mut session = Session::new(&model, vocab, greedy, &plan, arena.get(), compute).unwrap();
    let before = ALLOC.allocations();
    let outcome = session.beam_search(b"Once upon a time", 128, 4).unwrap();
    let allocations = ALLOC.allocations() - before;
    assert!(outcome.len >= 64, "{outcome:?}");
    assert_eq!(allocations, 0, "{name}: beam search allocated");
    println!(
        "alloc: {name}, {threads} threads, 4 beams: {} tokens, 0 allocations",
        outcome.len
    );
}
