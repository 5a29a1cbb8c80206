//! Resource limits are errors a caller can report, never aborts: an arena
//! too small (needed and given bytes), a context longer than the model's, a
//! prompt longer than the context or than the tokenizer was planned for, a
//! tokenizer whose size is not the model's. (Sizes beyond a 32-bit address
//! space: `arena::tests`, with the limit given explicitly.)

use barellama_core::error::Error;
use barellama_core::{Compute, Isa, Model, Options, Plan, SamplerConfig, Session, Vocab};
use barellama_tests::{data_dir, read, AlignedBuf};

const GREEDY: SamplerConfig = SamplerConfig {
    temperature: 0.0,
    ..SamplerConfig::DEFAULT
};

#[test]
fn limits_are_errors() {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, "models/stories260K.bin");
    let tok512 = read(&dir, "models/tok512.bin");
    let tok32k = read(&dir, "models/tokenizer.bin");
    let model = Model::load(&image).unwrap();
    let compute = Compute::single(Isa::detect());
    let vocab = Vocab::Llama2c(&tok512);
    let plan_with = |options: Options| Plan::new(&model.config, &options);

    // The arena: one byte short.
    let plan = plan_with(Options::default()).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let short = &mut arena.get()[..plan.bytes() - 1];
    let e = Session::new(&model, vocab, GREEDY, &plan, short, compute).err();
    let (needed, given) = (plan.bytes(), plan.bytes() - 1);
    assert_eq!(e, Some(Error::ArenaTooSmall { needed, given }));
    assert!(e.unwrap().to_string().contains("bytes needed"));

    // A context beyond the model's 512 positions, unless asked for.
    let longer = Options {
        seq_len: 513,
        ..Options::default()
    };
    let e = plan_with(longer).err().unwrap();
    assert_eq!(
        e,
        Error::ContextFull {
            needed: 513,
            max: 512
        }
    );
    assert_eq!(e.exit_code(), 4);
    let allowed = Options {
        allow_longer: true,
        ..longer
    };
    assert_eq!(plan_with(allowed).unwrap().config().seq_len, 513);

    // A prompt of more tokens than positions; more bytes than planned.
    let prompt = b"Once upon a time there was a little girl named Lily.";
    let small = plan_with(Options {
        seq_len: 8,
        prompt_bytes: 16,
        ..Options::default()
    })
    .unwrap();
    let mut arena = AlignedBuf::new(small.bytes());
    let mut session = Session::new(&model, vocab, GREEDY, &small, arena.get(), compute).unwrap();
    let bytes = b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6"; // a byte token each
    let e = session.generate(bytes, 8, |_, _| Ok(())).err();
    assert!(
        matches!(e, Some(Error::ContextFull { max: 8, .. })),
        "{e:?}"
    );
    let e = session.generate(prompt, 8, |_, _| Ok(())).err();
    assert_eq!(e, Some(Error::PromptTooLong { bytes: 52, max: 16 }));
    let e = session.generate(b"Once", 9, |_, _| Ok(())).err();
    assert_eq!(e, Some(Error::ContextFull { needed: 9, max: 8 }));
    // The session is still usable after every refusal.
    assert_eq!(session.generate(b"Once", 8, |_, _| Ok(())), Ok(8));

    // The 32000-piece tokenizer for a 512-token model.
    let mut arena = AlignedBuf::new(plan.bytes());
    let e = Session::new(
        &model,
        Vocab::Llama2c(&tok32k),
        GREEDY,
        &plan,
        arena.get(),
        compute,
    );
    let e = e.err().unwrap();
    assert_eq!(e.exit_code(), 3);
    assert!(e.to_string().contains("vocab_size = 512"), "{e}");
}
