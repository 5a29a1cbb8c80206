//! Beam search: one beam is greedy decoding, four find a sequence scored at
//! least as well, and the result is the same for any thread count.

use barellama_core::arena::KvType;
use barellama_core::beam::Outcome;
use barellama_core::exec::ThreadPool;
use barellama_core::{Compute, Isa, Model, Options, Plan, SamplerConfig, Session, Vocab};
use barellama_tests::{data_dir, read, AlignedBuf};

const GREEDY: SamplerConfig = SamplerConfig {
    temperature: 0.0,
    ..SamplerConfig::DEFAULT
};

struct Case {
    image: Vec<u8>,
    tokenizer: Option<Vec<u8>>,
}

impl Case {
    fn load(dir: &std::path::Path, model: &str, tokenizer: Option<&str>) -> Case {
        Case {
            image: read(dir, &format!("models/{model}")),
            tokenizer: tokenizer.map(|t| read(dir, &format!("models/{t}"))),
        }
    }

    /// Runs `f` on a session planned for `beams` beams over 64 positions.
    fn with<R>(&self, beams: usize, compute: Compute<'_>, f: impl FnOnce(&mut Session) -> R) -> R {
        let model = Model::load(&self.image).unwrap();
        let (vocab, kv) = match &self.tokenizer {
            Some(t) => (Vocab::Llama2c(t), KvType::F32),
            None => (Vocab::Gguf(model.gguf.unwrap()), KvType::F16),
        };
        let options = Options {
            seq_len: 64,
            kv,
            beams,
            ..Options::default()
        };
        let plan = Plan::new(&model.config, &options).unwrap();
        let mut arena = AlignedBuf::new(plan.bytes());
        let mut session = Session::new(&model, vocab, GREEDY, &plan, arena.get(), compute).unwrap();
        f(&mut session)
    }
}

fn search(s: &mut Session, prompt: &str, steps: usize, width: usize) -> (Outcome, Vec<u32>) {
    let outcome = s.beam_search(prompt.as_bytes(), steps, width).unwrap();
    (outcome, s.beam_tokens(&outcome).to_vec())
}

const PROMPTS: [&str; 2] = ["Once upon a time", "The sun"];

#[test]
fn one_beam_is_greedy_and_four_score_at_least_as_well() {
    let Some(dir) = data_dir() else { return };
    let pool = ThreadPool::new(2).unwrap();
    for (model, tok) in [
        ("stories260K.bin", Some("tok512.bin")),
        ("stories260K-f32.gguf", None),
        ("synsmall-Q8_0.gguf", None),
    ] {
        let case = Case::load(&dir, model, tok);
        for isa in Isa::available() {
            let one = Compute::single(isa);
            for prompt in PROMPTS {
                let mut greedy = Vec::new();
                case.with(0, one, |s| {
                    s.generate(prompt.as_bytes(), 64, |id, _| {
                        greedy.push(id);
                        Ok(())
                    })
                    .unwrap();
                    // generate also reports the prompt's tokens.
                    greedy.drain(..s.input().len() - 1);
                });
                let (b1, tokens1) = case.with(1, one, |s| search(s, prompt, 64, 1));
                assert_eq!(tokens1, greedy, "{model} [{}] {prompt:?}", isa.name());
                let (b4, tokens4) = case.with(4, one, |s| search(s, prompt, 64, 4));
                assert!(
                    b4.score >= b1.score,
                    "{model} {prompt:?}: 4 beams {b4:?} < greedy {b1:?}"
                );
                let threads = Compute { isa, exec: &pool };
                let (b4t, tokens4t) = case.with(4, threads, |s| search(s, prompt, 64, 4));
                assert_eq!(
                    (b4t.score.to_bits(), tokens4t),
                    (b4.score.to_bits(), tokens4)
                );
                println!(
                    "{model} [{}] {prompt:?}: greedy {:.4} ({} tokens), 4 beams {:.4} ({} tokens)",
                    isa.name(),
                    b1.score,
                    b1.len,
                    b4.score,
                    b4.len
                );
            }
        }
    }
}

#[test]
fn more_beams_than_planned_is_an_error() {
    let Some(dir) = data_dir() else { return };
    let case = Case::load(&dir, "stories260K.bin", Some("tok512.bin"));
    let one = Compute::single(Isa::detect());
    case.with(2, one, |s| {
        assert!(s.beam_search(b"Once", 16, 3).is_err());
        assert!(s.beam_search(b"Once", 16, 2).is_ok());
    });
    case.with(0, one, |s| assert!(s.beam_search(b"Once", 16, 1).is_err()));
}
