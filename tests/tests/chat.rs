//! Chat: the two templates' token sequences against hand-checked ids,
//! multi-turn sessions against one long prompt, and a full context as an
//! error the caller can report.

use std::ops::ControlFlow;

use barellama_core::arena::TokenizerPlan;
use barellama_core::error::Error;
use barellama_core::image::gguf::Gguf;
use barellama_core::tokenizer::Family;
use barellama_core::{
    tokenize_parts, Chat, Compute, End, Isa, Model, Options, Plan, SamplerConfig, Session,
    Template, Tokenizer, Transformer, Turn, Vocab,
};
use barellama_tests::{data_dir, read, AlignedBuf};

const GREEDY: SamplerConfig = SamplerConfig {
    temperature: 0.0,
    ..SamplerConfig::DEFAULT
};

/// The ids of `turn` in `template`, tokenized with `tok`.
fn turn_ids(tok: &mut Tokenizer<'_, '_>, template: Template, turn: &Turn<'_>) -> Vec<u32> {
    let mut text = vec![0u8; 512];
    let parts = template.render(turn, &mut text).unwrap();
    let mut ids = vec![0u32; 512];
    let n = tokenize_parts(tok, &parts, &mut ids).unwrap();
    ids.truncate(n);
    ids
}

/// Token ids of the Llama 2 vocabulary, with their pieces, checked by hand
/// against the pieces of `tokenizer.bin` and the GGUF vocabulary.
const BOS: u32 = 1;
const EOS: u32 = 2;
/// `▁[` `INST` `]`
const INST: [u32; 3] = [518, 25580, 29962];
/// `▁[` `/` `INST` `]`
const END_INST: [u32; 4] = [518, 29914, 25580, 29962];
/// `▁<<` `SY` `S` `>>` `<0x0A>`
const SYS: [u32; 5] = [3532, 14816, 29903, 6778, 13];
/// `<0x0A>` `<` `</` `SY` `S` `>>` `<0x0A>` `<0x0A>`
const END_SYS: [u32; 8] = [13, 29966, 829, 14816, 29903, 6778, 13, 13];
/// `You` `▁are` `▁helpful` `.`
const HELPFUL: [u32; 4] = [3492, 526, 8444, 29889];
/// `▁<` `|` `system` `|` `>` `<0x0A>`: first in the text, so after the dummy space.
const SYSTEM_MARK: [u32; 6] = [529, 29989, 5205, 29989, 29958, 13];
/// `▁` `<0x0A>` `<` `|` `user` `|` `>` `<0x0A>`: the dummy space stays alone before a newline.
const USER_MARK: [u32; 8] = [29871, 13, 29966, 29989, 1792, 29989, 29958, 13];
/// `▁` `<0x0A>` `<` `|` `ass` `istant` `|` `>` `<0x0A>`
const ASSISTANT_MARK: [u32; 9] = [29871, 13, 29966, 29989, 465, 22137, 29989, 29958, 13];

fn concat(parts: &[&[u32]]) -> Vec<u32> {
    parts.concat()
}

#[test]
fn llama2_turns_are_llama2c_chat_tokens() {
    let Some(dir) = data_dir() else { return };
    let bytes = read(&dir, "models/tokenizer.bin");
    let plan = TokenizerPlan::new(32000, Family::SentencePiece, 256).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut tok = Tokenizer::from_llama2c(&bytes, 32000, plan.carve(arena.get()).unwrap()).unwrap();
    for (id, piece) in [
        (518, "▁["),
        (25580, "INST"),
        (29914, "/"),
        (3532, "▁<<"),
        (829, "</"),
    ] {
        let piece = piece.replace('▁', " ");
        assert_eq!(tok.piece(id), piece.as_bytes(), "id {id}");
    }
    let first = Turn {
        system: b"You are helpful.",
        user: b"Hi there",
        first: true,
        add_bos: true,
        close: false,
    };
    // BOS + "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi there [/INST]"
    let hi_there = [18567, 727]; // `Hi` (after a newline: no space) `▁there`
    assert_eq!(
        turn_ids(&mut tok, Template::Llama2, &first),
        concat(&[
            &[BOS],
            &INST,
            &SYS,
            &HELPFUL,
            &END_SYS,
            &hi_there,
            &END_INST
        ])
    );
    // After an answer the model ended itself (its EOS waits to run), and
    // after one a limit cut: then the turn closes it with EOS.
    let thanks = [1834, 29991]; // `▁Thanks` `!`
    let later = Turn {
        user: b"Thanks!",
        first: false,
        ..first
    };
    let want = concat(&[&[BOS], &INST, &thanks, &END_INST]);
    assert_eq!(turn_ids(&mut tok, Template::Llama2, &later), want);
    let closing = Turn {
        close: true,
        ..later
    };
    assert_eq!(
        turn_ids(&mut tok, Template::Llama2, &closing),
        concat(&[&[EOS], &want])
    );
}

/// Zephyr's `</s>` is EOS (id 2): llama.cpp parses special tokens in chat
/// prompts, and `</s>` is a control token of this vocabulary; the text
/// after it starts with the dummy space, as llama.cpp's SPM tokenizer does
/// after every special token.
#[test]
fn zephyr_turns_are_llamacpp_special_parsed_tokens() {
    let Some(dir) = data_dir() else { return };
    let bytes = read(&dir, "models/ggml-vocab-llama-spm.gguf");
    let g = Gguf::parse(&bytes).unwrap();
    let plan = TokenizerPlan::new(32000, Family::SentencePiece, 256).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut tok = Tokenizer::from_gguf(&g, 32000, plan.carve(arena.get()).unwrap()).unwrap();
    assert_eq!(tok.piece(EOS), b"</s>");
    assert_eq!(tok.eos(), EOS);
    assert!(tok.add_bos());
    let first = Turn {
        system: b"You are helpful.",
        user: b"Hi",
        first: true,
        add_bos: tok.add_bos(),
        close: false,
    };
    // <s><|system|>\nYou are helpful.</s>\n<|user|>\nHi</s>\n<|assistant|>\n
    let hi = [18567];
    assert_eq!(
        turn_ids(&mut tok, Template::Zephyr, &first),
        concat(&[
            &[BOS],
            &SYSTEM_MARK,
            &HELPFUL,
            &[EOS],
            &USER_MARK,
            &hi,
            &[EOS],
            &ASSISTANT_MARK
        ])
    );
    // {answer}</s>\n<|user|>\nThanks!</s>\n<|assistant|>\n
    let thanks = [16894, 29991]; // `Thanks` `!`
    let later = Turn {
        user: b"Thanks!",
        first: false,
        close: true,
        ..first
    };
    assert_eq!(
        turn_ids(&mut tok, Template::Zephyr, &later),
        concat(&[&[EOS], &USER_MARK, &thanks, &[EOS], &ASSISTANT_MARK])
    );
}

/// 512 positions, past the GGUF file's 128 (as llama.cpp's -c allows).
fn context() -> Options {
    Options {
        seq_len: 512,
        allow_longer: true,
        ..Options::default()
    }
}

/// One chat through `Session` and `Chat`: each reply's ids and how it
/// ended, each turn's input, and the logits after the last turn.
struct Conversation {
    /// Every token that ran or waits to, in order.
    tokens: Vec<u32>,
    /// Where each reply's sampled tokens start in `tokens`.
    replies: Vec<std::ops::Range<usize>>,
    ends: Vec<End>,
    last_logits: Vec<f32>,
}

fn converse(
    model: &Model<'_>,
    vocab: Vocab<'_>,
    template: Template,
    system: &[u8],
    turns: &[(&[u8], usize)],
) -> Conversation {
    let plan = Plan::new(&model.config, &context()).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let compute = Compute::single(Isa::detect());
    let mut s = Session::new(model, vocab, GREEDY, &plan, arena.get(), compute).unwrap();
    let mut text = vec![0u8; 1024];
    let mut log = vec![0u8; 1024];
    let mut chat = Chat::new(template, system, &mut text, &mut log);
    let eos = s.tokenizer.eos();
    let mut c = Conversation {
        tokens: vec![],
        replies: vec![],
        ends: vec![],
        last_logits: vec![],
    };
    for &(user, max_tokens) in turns {
        let before = s.position();
        chat.user(&mut s, user).unwrap();
        c.tokens.extend_from_slice(s.input());
        assert_eq!(s.position() + 1, c.tokens.len(), "all but the last ran");
        // An answer the model did not end with EOS is closed by one.
        if before > 0 {
            let closed_by_model = c.tokens[c.tokens.len() - s.input().len() - 1] == eos;
            assert_eq!(
                s.input()[0] == eos,
                !closed_by_model,
                "{template:?}: EOS before the turn"
            );
        }
        let start = c.tokens.len();
        let end = s
            .reply(max_tokens, |id, _| {
                c.tokens.push(id);
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
        c.replies.push(start..c.tokens.len());
        if end == End::Eos {
            c.tokens.push(s.next_token().unwrap());
        }
        c.ends.push(end);
    }
    let next = s.next_token().unwrap();
    assert_eq!(Some(&next), c.tokens.last());
    let pos = s.position();
    c.last_logits = s.transformer.forward(next, pos).unwrap().to_vec();
    c
}

/// Feeding a chat turn by turn gives bitwise the logits of feeding its
/// whole token sequence at once, and greedy answers are their argmax.
fn multi_turn_equals_one_prompt(
    model: &str,
    vocab: Option<&str>,
    (template, system): (Template, &[u8]),
    turns: &[(&[u8], usize)],
    ends: &[End],
) {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, &format!("models/{model}"));
    let tok = vocab.map(|v| read(&dir, &format!("models/{v}")));
    let m = Model::load(&image).unwrap();
    let vocab = match &tok {
        Some(t) => Vocab::Llama2c(t),
        None => Vocab::Gguf(m.gguf.unwrap()),
    };
    let c = converse(&m, vocab, template, system, turns);
    assert_eq!(c.ends, ends, "{model}");

    let plan = Plan::new(&m.config, &context()).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let b = plan.carve(arena.get()).unwrap();
    let compute = Compute::single(Isa::detect());
    let mut t = Transformer::new(&m, plan.config(), b.state, compute).unwrap();
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > l[best] { i } else { best }) as u32
    };
    let mut predicted = vec![];
    let mut last = vec![];
    for (pos, &id) in c.tokens.iter().enumerate() {
        let logits = t.forward(id, pos).unwrap();
        predicted.push(argmax(logits));
        last = logits.to_vec();
    }
    assert!(
        last.iter()
            .zip(&c.last_logits)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{model}: the last turn's logits differ from one long prompt's"
    );
    for r in &c.replies {
        for p in r.clone() {
            assert_eq!(
                predicted[p - 1],
                c.tokens[p],
                "{model}: answer token at {p}"
            );
        }
    }
}

#[test]
fn multi_turn_llama2_equals_one_long_prompt() {
    multi_turn_equals_one_prompt(
        "stories260K.bin",
        Some("tok512.bin"),
        (Template::Llama2, b"You tell stories."),
        // The most tokens of each answer: the last gets none, so the
        // logits after its turn are the session's last.
        &[
            (b"Tell me a story about a cat.", 24),
            (b"What did the cat eat?", 300),
            (b"And then?", 9),
            (b"The end.", 0),
        ],
        // stories260K ends a story with BOS, which the next turn closes.
        &[End::Limit, End::Eos, End::Limit, End::Limit],
    );
}

#[test]
fn multi_turn_zephyr_equals_one_long_prompt() {
    multi_turn_equals_one_prompt(
        "stories260K-f32.gguf",
        None,
        (Template::Zephyr, b""),
        &[
            (b"Tell me about a dog.", 400),
            (b"And then?", 9),
            (b"The end.", 0),
        ],
        &[End::Eos, End::Limit, End::Limit],
    );
}

/// A full context ends an answer with `End::ContextFull`; the next turn
/// then drops the oldest turns (all of them if need be), keeping the
/// system message, and the session goes on exactly as one fed the kept
/// conversation from the start would. A turn that does not fit even alone
/// is refused before anything runs.
#[test]
fn a_full_context_drops_the_oldest_turns() {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, "models/stories260K.bin");
    let tok = read(&dir, "models/tok512.bin");
    let m = Model::load(&image).unwrap();
    let options = Options {
        seq_len: 64,
        prompt_bytes: 512,
        ..Options::default()
    };
    let plan = Plan::new(&m.config, &options).unwrap();
    fn session<'a>(
        m: &'a Model<'a>,
        tok: &'a [u8],
        plan: &Plan,
        arena: &'a mut AlignedBuf,
    ) -> Session<'a, 'a> {
        let compute = Compute::single(Isa::detect());
        Session::new(m, Vocab::Llama2c(tok), GREEDY, plan, arena.get(), compute).unwrap()
    }
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut s = session(&m, &tok, &plan, &mut arena);
    let (mut text, mut log) = (vec![0u8; 600], vec![0u8; 600]);
    let system = b"Be brief.";
    let mut chat = Chat::new(Template::Llama2, system, &mut text, &mut log);
    let go_on = |_, _| Ok(ControlFlow::Continue(()));

    chat.user(&mut s, b"Tell me a story.").unwrap();
    assert_eq!(s.reply(usize::MAX, go_on).unwrap(), End::ContextFull);
    assert_eq!(s.position(), 64);
    assert!(
        !chat.make_room(&mut s).unwrap(),
        "the answer's own turn stays"
    );
    // The only turn gives way to the next.
    assert_eq!(chat.user(&mut s, b"More!").unwrap(), 1);
    let alone = Turn {
        system,
        user: b"More!",
        first: true,
        add_bos: true,
        close: false,
    };
    let tplan = TokenizerPlan::new(512, Family::SentencePiece, 256).unwrap();
    let mut tarena = AlignedBuf::new(tplan.bytes());
    let mut t = Tokenizer::from_llama2c(&tok, 512, tplan.carve(tarena.get()).unwrap()).unwrap();
    let first = turn_ids(&mut t, Template::Llama2, &alone);
    assert_eq!(s.history(), &first[..first.len() - 1]);
    assert_eq!(s.next_token(), first.last().copied());

    // Short answers: turns pile up until the oldest must go.
    let mut dropped = 0;
    for user in [&b"Hi."[..], b"A cat?", b"A dog?", b"The end?"] {
        s.reply(9, go_on).unwrap();
        dropped += chat.user(&mut s, user).unwrap();
    }
    assert!(dropped > 0, "64 positions hold five turns");
    // The kept conversation, fed from the start, continues the same way.
    let mut held: Vec<u32> = s.history().to_vec();
    held.push(s.next_token().unwrap());
    assert_eq!(&held[..3], &first[..3], "BOS [INST] <<SYS>> stays");
    let mut fresh_arena = AlignedBuf::new(plan.bytes());
    let mut fresh = session(&m, &tok, &plan, &mut fresh_arena);
    let mut theirs = vec![fresh.extend_tokens(&held).unwrap()];
    theirs.extend((1..8).map(|_| fresh.step().unwrap()));
    let ours: Vec<u32> = (0..8).map(|_| s.step().unwrap()).collect();
    assert_eq!(ours, theirs);

    // A turn longer than the context, at the start, runs nothing.
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut s = session(&m, &tok, &plan, &mut arena);
    let (mut text, mut log) = (vec![0u8; 600], vec![0u8; 600]);
    let mut chat = Chat::new(Template::Llama2, b"", &mut text, &mut log);
    let e = chat.user(&mut s, &[b'a'; 200]).unwrap_err();
    assert!(matches!(e, Error::ContextFull { max: 64, .. }), "{e:?}");
    assert_eq!(e.exit_code(), 4);
    assert_eq!((s.position(), s.next_token()), (0, None));
    // And one longer than the text buffer.
    let e = chat.user(&mut s, &[b'a'; 590]).unwrap_err();
    assert!(matches!(e, Error::PromptTooLong { .. }), "{e:?}");
    chat.user(&mut s, b"Hi.").unwrap();
    assert_eq!(s.reply(4, go_on).unwrap(), End::Limit);
}

/// A Llama 3 chat on Llama 3's vocabulary gives the ids llama.cpp's
/// tokenizer gives the prompt it renders (hand-checked with an independent
/// tokenizer): the markers are special tokens, what the user typed is text
/// even where it spells one, and a turn after a cut answer first closes it.
#[test]
fn llama3_turns_are_llama_cpp_s_ids_and_users_cannot_forge_markers() {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, "models/synl3-Q8_0.gguf");
    let m = Model::load(&image).unwrap();
    let vocab = Vocab::Gguf(m.gguf.unwrap());
    let options = Options {
        tokenizer: Family::of(&vocab).unwrap(),
        ..context()
    };
    let plan = Plan::new(&m.config, &options).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    };
    let compute = Compute::single(Isa::detect());
    let mut s = Session::new(&m, vocab, greedy, &plan, arena.get(), compute).unwrap();
    let mut text = vec![0u8; 256];
    let mut log = vec![0u8; 256];
    let mut chat = Chat::new(Template::Llama3, b"Be brief.", &mut text, &mut log);
    chat.user(&mut s, b"Hi <|eot_id|> there").unwrap();
    assert_eq!(
        s.input(),
        [
            128000, 128006, 9125, 128007, 271, 3513, 10015, 13, 128009, 128006, 882, 128007, 271,
            13347, 83739, 68, 354, 851, 91, 29, 1070, 128009, 128006, 78191, 128007, 271
        ]
    );
    // Two tokens of an answer (this random model never ends one), then
    // the next turn.
    s.reply(2, |_, _| Ok(ControlFlow::Continue(()))).unwrap();
    assert_ne!(s.next_token(), Some(128009));
    chat.user(&mut s, b"And then?").unwrap();
    assert_eq!(
        s.input(),
        [128009, 128006, 882, 128007, 271, 3112, 1243, 30, 128009, 128006, 78191, 128007, 271]
    );
}

/// SmolLM2's ChatML, with its template's default system message: the
/// prompt llama.cpp renders and tokenizes (the first 38 ids of its haiku
/// golden); a user who types `<|im_end|>` gets text, not the marker.
#[test]
fn smollm2_chatml_prompt_is_llama_cpp_s() {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let want: Vec<u32> = std::fs::read_to_string(dir.join("golden/smollm2.haiku.tokens.txt"))
        .unwrap()
        .split_whitespace()
        .take(38)
        .map(|t| t.parse().unwrap())
        .collect();
    let m = Model::load(&image).unwrap();
    let g = m.gguf.unwrap();
    let jinja = g.string("tokenizer.chat_template").unwrap().unwrap();
    assert_eq!(Template::recognize(jinja), Some(Template::ChatMl));
    let system = barellama_core::chat::default_system(jinja).unwrap();
    let vocab = Vocab::Gguf(g);
    let options = Options {
        tokenizer: Family::of(&vocab).unwrap(),
        ..context()
    };
    let plan = Plan::new(&m.config, &options).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let compute = Compute::single(Isa::detect());
    let mut s = Session::new(&m, vocab, GREEDY, &plan, arena.get(), compute).unwrap();
    let mut text = vec![0u8; 512];
    let mut log = vec![0u8; 512];
    let mut chat = Chat::new(Template::ChatMl, system, &mut text, &mut log);
    chat.user(&mut s, b"Write a haiku about the sea.").unwrap();
    assert_eq!(s.input(), want);
    // After a cut answer: `<|im_end|>\n<|im_start|>user\n`, the text,
    // `<|im_end|>\n<|im_start|>assistant\n`.
    s.reply(1, |_, _| Ok(ControlFlow::Continue(()))).unwrap();
    chat.user(&mut s, b"<|im_end|>").unwrap();
    let ids = s.input();
    assert_eq!(ids[..5], [2, 198, 1, 4093, 198]);
    assert_eq!(ids[ids.len() - 6..], [2, 198, 1, 520, 9531, 198]);
    assert!(!ids[5..ids.len() - 6].contains(&2), "{ids:?}");
}

/// Mistral: Llama-2's `[INST]` without `<<SYS>>`, the system message
/// joined to the first user's text by a blank line.
#[test]
fn mistral_turns_join_the_system_message_to_the_first_user_turn() {
    let Some(dir) = data_dir() else { return };
    let bytes = read(&dir, "models/ggml-vocab-llama-spm.gguf");
    let g = Gguf::parse(&bytes).unwrap();
    let plan = TokenizerPlan::new(32000, Family::SentencePiece, 256).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut tok = Tokenizer::from_gguf(&g, 32000, plan.carve(arena.get()).unwrap()).unwrap();
    let first = Turn {
        system: b"You are helpful.",
        user: b"Hi there",
        first: true,
        add_bos: true,
        close: false,
    };
    // <s>[INST] You are helpful.\n\nHi there [/INST]
    let helpful = [887, 526, 8444, 29889]; // `▁You` `▁are` `▁helpful` `.`
    let blank = [13, 13]; // `<0x0A>` `<0x0A>`
    let hi_there = [18567, 727]; // `Hi` (after a newline: no space) `▁there`
    assert_eq!(
        turn_ids(&mut tok, Template::Mistral, &first),
        concat(&[&[BOS], &INST, &helpful, &blank, &hi_there, &END_INST])
    );
    // Later turns as Llama-2's, a cut answer closed with EOS.
    let later = Turn {
        first: false,
        close: true,
        ..first
    };
    assert_eq!(
        turn_ids(&mut tok, Template::Mistral, &later),
        concat(&[&[EOS, BOS], &INST, &[6324, 727], &END_INST]) // `▁Hi` `▁there`
    );
}
