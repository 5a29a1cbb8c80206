//! The forward pass against llama2.c's own logits (teacher forcing), and
//! greedy generation against its token ids.

use barellama_core::{Compute, Isa, Model, Options, Plan, SamplerConfig, Session, Vocab};
use barellama_tests::{against_golden, data_dir, diff, read, read_ids, AlignedBuf};

/// Every kernel level this CPU has must match the reference.
fn check(model: &str, golden: &str, tolerance: f32) {
    against_golden(model, golden, |name, ours, g| {
        let (max, mean) = diff(ours, &g.logits);
        println!("{model} vs {golden} [{name}]: max |Δlogit| {max:.3e}, mean {mean:.3e}");
        assert!(
            max <= tolerance,
            "{model} [{name}]: max |Δlogit| {max} > {tolerance}"
        );
    });
}

#[test]
fn stories260k_once() {
    check("stories260K.bin", "stories260K.once.l2c.bin", 2e-3);
}

#[test]
fn stories260k_lily() {
    check("stories260K.bin", "stories260K.lily.l2c.bin", 2e-3);
}

#[test]
fn stories260k_sun() {
    check("stories260K.bin", "stories260K.sun.l2c.bin", 2e-3);
}

#[test]
fn synsmall_v0() {
    check("synsmall.bin", "synsmall.once.l2c.bin", 1e-2);
}

#[test]
fn synsmall_v1() {
    check("synsmall-v1.bin", "synsmall.once.l2c.bin", 1e-2);
}

/// Generates from `prompt` with `sampler` for `steps` positions; returns the
/// ids, BOS first, as llama2.c's output would list them.
fn generate(
    dir: &std::path::Path,
    prompt: &str,
    steps: usize,
    sampler: SamplerConfig,
    isa: Isa,
) -> Vec<u32> {
    let image = read(dir, "models/stories260K.bin");
    let tok = read(dir, "models/tok512.bin");
    let model = Model::load(&image).unwrap();
    let plan = Plan::new(&model.config, &Options::default()).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut s = Session::new(
        &model,
        Vocab::Llama2c(&tok),
        sampler,
        &plan,
        arena.get(),
        Compute::single(isa),
    )
    .unwrap();
    let mut ids = vec![1];
    s.generate(prompt.as_bytes(), steps, |id, _| {
        ids.push(id);
        Ok(())
    })
    .unwrap();
    ids
}

#[test]
fn greedy_150_steps_equal_llama2c() {
    let Some(dir) = data_dir() else { return };
    let want = read_ids(&dir, "golden/stories260K.once.tokens.txt");
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    };
    for isa in Isa::available() {
        let got = generate(&dir, "Once upon a time", 150, greedy, isa);
        assert_eq!(got, want[..151], "{}", isa.name());
    }
}

#[test]
fn same_seed_same_tokens() {
    let Some(dir) = data_dir() else { return };
    let sampled = |seed| {
        let config = SamplerConfig {
            temperature: 1.0,
            topp: 0.9,
            topk: 0,
            seed,
            ..SamplerConfig::DEFAULT
        };
        generate(&dir, "The sun", 120, config, Isa::detect())
    };
    let a = sampled(1234);
    assert_eq!(a, sampled(1234));
    assert_ne!(a, sampled(99), "different seeds should differ somewhere");
    let topk = SamplerConfig {
        temperature: 0.8,
        topp: 0.0,
        topk: 5,
        seed: 7,
        ..SamplerConfig::DEFAULT
    };
    let isa = Isa::detect();
    let once = generate(&dir, "The sun", 120, topk, isa);
    assert_eq!(once, generate(&dir, "The sun", 120, topk, isa));
}
