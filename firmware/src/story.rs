//! The story: the embedded model continues "Once upon a time" greedily,
//! the text streams to the UART as llama2.c prints it, then the token ids
//! (which `.ci/firmware` compares with llama2.c's) and the speed.

use barellama_core::{
    Compute, Isa, Model, Options, Plan, Result, SamplerConfig, Session, TextSink, Vocab,
};

use crate::clock;
use crate::uart::Uart;

/// 64-byte alignment for the arena, and for the weights as a file mapping
/// would have them.
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("BARELLAMA_FW_MODEL")));
static TOKENIZER: &[u8] = include_bytes!(env!("BARELLAMA_FW_TOKENIZER"));

const PROMPT: &[u8] = b"Once upon a time";
/// Positions to run (llama2.c's `-n`), the prompt's included.
const STEPS: usize = 256;
/// Prompt tokens per prefill chunk: fewer than a host's default, to keep
/// the arena small.
const BATCH: usize = 32;
/// About twice what stories260K's plan for `STEPS` positions and `BATCH`
/// takes (553,024 bytes); a model that needs more is refused with the
/// bytes it needs.
const ARENA_BYTES: usize = 1 << 20;

static mut ARENA: Aligned<[u8; ARENA_BYTES]> = Aligned([0; ARENA_BYTES]);

/// Generates the story and prints it. Called once, by `firmware_main`.
pub fn tell(uart: &mut Uart) -> Result<()> {
    let model = Model::load(&MODEL.0)?;
    let options = Options {
        seq_len: STEPS,
        batch: BATCH,
        ..Options::default()
    };
    let plan = Plan::new(&model.config, &options)?;
    let arena = &raw mut ARENA;
    // SAFETY: `tell` runs once, on the only running core, and nothing else
    // names ARENA: this is the only reference to it there ever is.
    let arena = unsafe { &mut (*arena).0 };
    let c = plan.config();
    writeln!(
        uart,
        "barellama firmware: dim {} layers {} heads {} vocab {}; arena {} of {} bytes",
        c.dim,
        c.n_layers,
        c.n_heads,
        c.vocab_size,
        plan.bytes(),
        arena.len()
    );
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    };
    let compute = Compute::single(Isa::from_target());
    let vocab = Vocab::Llama2c(TOKENIZER);
    let mut session = Session::new(&model, vocab, greedy, &plan, arena, compute)?;

    let mut ids = [0u32; STEPS];
    let mut n = 0;
    // The prompt's text is printed too, as llama2.c prints it.
    let mut text = TextSink::plain(&mut *uart);
    let start = clock::micros();
    let positions = session.generate(PROMPT, STEPS, |id, piece| {
        if let Some(slot) = ids.get_mut(n) {
            *slot = id;
            n += 1;
        }
        text.echo(piece);
        Ok(())
    })?;
    let micros = clock::micros() - start;
    // The UART cannot fail.
    let _ = text.finish();

    // The prompt's ids are the first ones reported: all it added but BOS.
    let (prompt, generated) = ids[..n].split_at(session.input().len().saturating_sub(1).min(n));
    write!(uart, "\nprompt ids:");
    for id in prompt {
        write!(uart, " {id}");
    }
    write!(uart, "\ngenerated ids:");
    for id in generated {
        write!(uart, " {id}");
    }
    let per_second = (positions as u64 * 1_000_000)
        .checked_div(micros)
        .unwrap_or(0);
    writeln!(
        uart,
        "\n{positions} positions in {} ms: {per_second} tok/s",
        micros / 1000
    );
    Ok(())
}
