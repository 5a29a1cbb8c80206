//! Invariant 1 for chat: after setup, rendering and tokenizing turns,
//! running them, sampling answers (with min-p and every penalty),
//! turning pieces into text, withholding stop strings and dropping old
//! turns from a full context allocate nothing. Runs without the test
//! harness so no other thread allocates while we count.

use barellama_core::exec::ThreadPool;
use barellama_core::hosted::CountingAlloc;
use barellama_core::tokenizer::Family;
use barellama_core::{
    Chat, Compute, End, Isa, Model, Options, Plan, SamplerConfig, Session, Template, TextSink,
};
use barellama_tests::{data_dir, AlignedBuf, ModelFiles, TextBytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

const TURNS: [&[u8]; 4] = [
    b"Tell me a story about a cat.",
    b"What did the cat eat?",
    b"And then what happened?",
    b"Thank you.",
];

/// Chats four turns with `template`, each answer up to 40 tokens, stopping
/// at `stops`.
fn chat_without_allocating(
    name: &str,
    tokenizer: Option<&str>,
    template: Template,
    stops: &[&str],
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
    // Short enough that later turns drop the oldest ones.
    let options = Options {
        seq_len: 128,
        allow_longer: true,
        kv,
        tokenizer: Family::of(&vocab).unwrap(),
        ..Options::default()
    };
    let plan = Plan::new(&model.config, &options).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let sampler = SamplerConfig {
        seed: 7,
        min_p: 0.05,
        repeat_penalty: 1.1,
        presence_penalty: 0.1,
        frequency_penalty: 0.1,
        ..SamplerConfig::default()
    };
    let mut session = Session::new(&model, vocab, sampler, &plan, arena.get(), compute).unwrap();
    let mut text = vec![0u8; 256];
    let mut log = vec![0u8; 256];
    let mut chat = Chat::new(template, b"You tell short stories.", &mut text, &mut log);
    let (mut tokens, mut text_bytes, mut dropped) = (0usize, 0usize, 0usize);
    let mut ends = [End::Limit; TURNS.len()];

    let before = ALLOC.allocations();
    for (user, end) in TURNS.iter().zip(&mut ends) {
        dropped += chat.user(&mut session, user).unwrap();
        let mut answer = TextSink::new(TextBytes::default(), stops).unwrap();
        *end = session
            .reply(40, |_, piece| {
                tokens += 1;
                Ok(answer.push(piece))
            })
            .unwrap();
        if *end == End::ContextFull {
            dropped += usize::from(chat.make_room(&mut session).unwrap());
        }
        answer.finish().unwrap();
        text_bytes += answer.writer().0;
    }
    let allocations = ALLOC.allocations() - before;

    assert!(tokens >= 40, "{name}: only {tokens} tokens sampled");
    assert_eq!(stops.is_empty(), !ends.contains(&End::Stopped), "{ends:?}");
    assert_eq!(
        allocations,
        0,
        "{name}: {allocations} allocations in {} turns",
        TURNS.len()
    );
    println!(
        "chat_alloc: {name}, {template:?}, {threads} threads: {} positions, {tokens} tokens, \
         {text_bytes} bytes of text, ends {ends:?}, {dropped} turns dropped, 0 allocations",
        session.position()
    );
}

fn main() {
    chat_without_allocating(
        "stories260K.bin",
        Some("tok512.bin"),
        Template::Llama2,
        &["\n", "."],
        1,
    );
    chat_without_allocating(
        "stories260K.bin",
        Some("tok512.bin"),
        Template::Zephyr,
        &["\n\n", "was"],
        2,
    );
    chat_without_allocating(
        "stories260K-f32.gguf",
        None,
        Template::Zephyr,
        &["cat", "said", "."],
        2,
    );
    chat_without_allocating("synsmall-Q8_0.gguf", None, Template::Llama2, &[], 1);
    // Byte-level BPE and special-token markers.
    chat_without_allocating("synl3-Q8_0.gguf", None, Template::Llama3, &[], 2);
}
