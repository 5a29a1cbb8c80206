//! Chat formats: a user's turn written the way a chat model was trained to
//! read it and fed into a [`Session`] after the conversation so far, so
//! only the new turn's tokens run.
//!
//! Five formats, told apart by the markers of the Jinja template a GGUF
//! file carries (as llama.cpp tells them apart) rather than by running it:
//!
//! - **Llama-2** (llama2.c's chat mode): every user turn is BOS +
//!   `[INST] {user} [/INST]`, the first with `<<SYS>>\n{system}\n<</SYS>>\n\n`
//!   before the user's text; an answer is closed by EOS.
//! - **Mistral**: as Llama-2, the system message joined to the first
//!   user's text by a blank line.
//! - **Zephyr** (TinyLlama-Chat): `<|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n`.
//! - **ChatML** (SmolLM2): `<|im_start|>{role}\n{content}<|im_end|>\n` per
//!   message, then `<|im_start|>assistant\n`; a template that writes a
//!   default system message gives it ([`default_system`]).
//! - **Llama 3**: `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>`
//!   per message (content trimmed), then the assistant's header.
//!
//! BOS comes first when the vocabulary adds one (Llama-2 and Mistral put
//! it before every turn). Markers that are special tokens of their
//! vocabulary (`</s>`, `<|im_start|>`, `<|eot_id|>` …) are those tokens,
//! as llama.cpp's special-token parsing makes them; the text between two
//! of them is one fragment, encoded as text: what the user types cannot
//! become a marker. `[INST]` and `<|user|>` are ordinary text of the Llama
//! vocabulary. A SentencePiece vocabulary encodes each fragment with its
//! dummy leading space, as llama.cpp does after a special token.
//!
//! ```no_run
//! use barellama_core::{Chat, Session, Template};
//! # fn demo(session: &mut Session<'_, '_>, text: &mut [u8], log: &mut [u8]) -> barellama_core::Result<()> {
//! // `text` holds a rendered turn: system + user + TEMPLATE_BYTES; `log`
//! // the user texts of the turns in the context.
//! let mut chat = Chat::new(Template::Llama2, b"You are a storyteller.", text, log);
//! for question in [&b"Tell me about a cat."[..], b"And a dog?"] {
//!     chat.user(session, question)?;
//!     session.reply(256, |_id, piece| {
//!         piece.bytes(|text| { let _ = text; /* to a UART, a buffer, ... */ });
//!         Ok(core::ops::ControlFlow::Continue(()))
//!     })?;
//! }
//! # Ok(()) }
//! ```

use crate::error::{Error, Result};
use crate::generate::{Part, Session};

/// The most bytes a template adds around the system message and the
/// user's text.
pub const TEMPLATE_BYTES: usize = 64;

/// A chat format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    Llama2,
    Mistral,
    Zephyr,
    ChatMl,
    Llama3,
}

/// One user turn and where it falls in the conversation.
#[derive(Clone, Copy, Debug)]
pub struct Turn<'u> {
    /// Used only by the first turn; empty means none.
    pub system: &'u [u8],
    pub user: &'u [u8],
    /// The turn opens the conversation.
    pub first: bool,
    /// The vocabulary starts text with BOS (GGUF `add_bos_token`).
    pub add_bos: bool,
    /// The previous answer did not end with the format's end of turn (a
    /// stop string or a token limit cut it), so the turn first closes it.
    pub close: bool,
}

/// A rendered turn: pieces of text and markers, in order.
pub type Parts<'b> = heapless::Vec<Part<'b>, 24>;

/// A piece of a turn before it is laid out: a marker, or text made of
/// several slices.
enum Item<'x> {
    Mark(Part<'static>),
    Text(&'x [&'x [u8]]),
}

const IM_START: Part<'static> = Part::Special(b"<|im_start|>");
const IM_END: Part<'static> = Part::Special(b"<|im_end|>");
const HEADER: Part<'static> = Part::Special(b"<|start_header_id|>");
const HEADER_END: Part<'static> = Part::Special(b"<|end_header_id|>");
const EOT: Part<'static> = Part::Special(b"<|eot_id|>");

impl Template {
    pub const ALL: [Template; 5] = [
        Template::Llama2,
        Template::Mistral,
        Template::Zephyr,
        Template::ChatMl,
        Template::Llama3,
    ];

    /// The names `--template` takes.
    pub fn parse(name: &[u8]) -> Option<Template> {
        Template::ALL
            .into_iter()
            .find(|t| t.name().as_bytes() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Template::Llama2 => "llama2",
            Template::Mistral => "mistral",
            Template::Zephyr => "zephyr",
            Template::ChatMl => "chatml",
            Template::Llama3 => "llama3",
        }
    }

    /// Recognizes a GGUF `tokenizer.chat_template` by its markers, in
    /// llama.cpp's order: `<|im_start|>` is ChatML; `[INST]` is Llama-2
    /// with `<<SYS>>` and Mistral without; `<|user|>` with
    /// `<|assistant|>` is Zephyr; `<|start_header_id|>` with
    /// `<|end_header_id|>` is Llama 3. Anything else is not known here.
    pub fn recognize(jinja: &[u8]) -> Option<Template> {
        let has = |marker: &[u8]| jinja.windows(marker.len()).any(|w| w == marker);
        if has(b"<|im_start|>") {
            Some(Template::ChatMl)
        } else if has(b"[INST]") {
            Some(match has(b"<<SYS>>") {
                true => Template::Llama2,
                false => Template::Mistral,
            })
        } else if has(b"<|user|>") && has(b"<|assistant|>") {
            Some(Template::Zephyr)
        } else if has(b"<|start_header_id|>") && has(b"<|end_header_id|>") {
            Some(Template::Llama3)
        } else {
            None
        }
    }

    /// The marker that ends an answer in this format.
    pub fn end_of_turn(self) -> Part<'static> {
        match self {
            Template::Llama2 | Template::Mistral | Template::Zephyr => Part::Eos,
            Template::ChatMl => IM_END,
            Template::Llama3 => EOT,
        }
    }

    /// Writes `turn`'s text into `text` and returns its parts, which end
    /// where the assistant's answer begins. `text` needs the system
    /// message's and the user's bytes plus [`TEMPLATE_BYTES`].
    pub fn render<'b>(self, turn: &Turn<'_>, text: &'b mut [u8]) -> Result<Parts<'b>> {
        let with_system = turn.first && !turn.system.is_empty();
        let (system, user) = match self {
            Template::Llama3 => (turn.system.trim_ascii(), turn.user.trim_ascii()),
            _ => (turn.system, turn.user),
        };
        let bos = turn.first && turn.add_bos;
        // Llama-2 and Mistral: BOS and one fragment each turn.
        let llama_first: [&[u8]; 5] = [
            b"[INST] <<SYS>>\n",
            system,
            b"\n<</SYS>>\n\n",
            user,
            b" [/INST]",
        ];
        let llama: [&[u8]; 3] = [b"[INST] ", user, b" [/INST]"];
        let mistral_first: [&[u8]; 5] = [b"[INST] ", system, b"\n\n", user, b" [/INST]"];
        // Zephyr: after `</s>` a new line; at the very start none.
        let zephyr_system: [&[u8]; 2] = [b"<|system|>\n", system];
        let zephyr_user: [&[u8]; 2] = [
            match turn.first && !with_system {
                true => b"<|user|>\n",
                false => b"\n<|user|>\n",
            },
            user,
        ];
        let zephyr_assistant: [&[u8]; 1] = [b"\n<|assistant|>\n"];
        // ChatML and Llama 3: a role after the opening marker.
        let newline: [&[u8]; 1] = [b"\n"];
        let chatml_system: [&[u8]; 2] = [b"system\n", system];
        let chatml_user: [&[u8]; 2] = [b"user\n", user];
        let chatml_assistant: [&[u8]; 1] = [b"assistant\n"];
        let role = |r: &'static [u8]| -> [&'static [u8]; 1] { [r] };
        let (l3_system, l3_user, l3_assistant) =
            (role(b"system"), role(b"user"), role(b"assistant"));
        let l3_system_text: [&[u8]; 2] = [b"\n\n", system];
        let l3_user_text: [&[u8]; 2] = [b"\n\n", user];
        let blank: [&[u8]; 1] = [b"\n\n"];
        let mut items = heapless::Vec::<Item<'_>, 24>::new();
        let mut add = |item| {
            let _ = items.push(item);
        };
        if turn.close {
            add(Item::Mark(self.end_of_turn()));
        }
        match self {
            Template::Llama2 | Template::Mistral => {
                add(Item::Mark(Part::Bos));
                add(Item::Text(match (self, with_system) {
                    (Template::Llama2, true) => &llama_first,
                    (_, true) => &mistral_first,
                    (_, false) => &llama,
                }));
            }
            Template::Zephyr => {
                if bos {
                    add(Item::Mark(Part::Bos));
                }
                if with_system {
                    add(Item::Text(&zephyr_system));
                    add(Item::Mark(Part::Eos));
                }
                add(Item::Text(&zephyr_user));
                add(Item::Mark(Part::Eos));
                add(Item::Text(&zephyr_assistant));
            }
            Template::ChatMl => {
                if !turn.first {
                    add(Item::Text(&newline));
                }
                if bos {
                    add(Item::Mark(Part::Bos));
                }
                if with_system {
                    for item in [
                        Item::Mark(IM_START),
                        Item::Text(&chatml_system),
                        Item::Mark(IM_END),
                        Item::Text(&newline),
                    ] {
                        add(item);
                    }
                }
                for item in [
                    Item::Mark(IM_START),
                    Item::Text(&chatml_user),
                    Item::Mark(IM_END),
                    Item::Text(&newline),
                    Item::Mark(IM_START),
                    Item::Text(&chatml_assistant),
                ] {
                    add(item);
                }
            }
            Template::Llama3 => {
                if bos {
                    add(Item::Mark(Part::Bos));
                }
                let message = |role, content| {
                    [
                        Item::Mark(HEADER),
                        Item::Text(role),
                        Item::Mark(HEADER_END),
                        Item::Text(content),
                        Item::Mark(EOT),
                    ]
                };
                if with_system {
                    for item in message(&l3_system, &l3_system_text) {
                        add(item);
                    }
                }
                for item in message(&l3_user, &l3_user_text) {
                    add(item);
                }
                for item in [
                    Item::Mark(HEADER),
                    Item::Text(&l3_assistant),
                    Item::Mark(HEADER_END),
                    Item::Text(&blank),
                ] {
                    add(item);
                }
            }
        }
        lay_out(&items, text)
    }
}

/// The system message a ChatML template writes when the conversation has
/// none (SmolLM2's `<|im_start|>system\n…<|im_end|>` literal): llama.cpp's
/// own chat formats leave it out, the model's template does not.
pub fn default_system(jinja: &[u8]) -> Option<&[u8]> {
    // The new line as a character (SmolLM2's file) or as Jinja's escape.
    let rest = [&b"<|im_start|>system\n"[..], b"<|im_start|>system\\n"]
        .iter()
        .find_map(|open| {
            let at = jinja.windows(open.len()).position(|w| w == *open)?;
            Some(&jinja[at + open.len()..])
        })?;
    let end = rest.windows(10).position(|w| w == b"<|im_end|>")?;
    // A literal inside the template's quotes, not an expression.
    let text = &rest[..end];
    (!text.is_empty()
        && !text
            .iter()
            .any(|&b| matches!(b, b'\'' | b'"' | b'{' | b'}')))
    .then_some(text)
}

/// Copies the items' text into `text`, one fragment after another.
fn lay_out<'b>(items: &[Item<'_>], text: &'b mut [u8]) -> Result<Parts<'b>> {
    let slices = || {
        items.iter().flat_map(|item| match item {
            Item::Text(t) => *t,
            Item::Mark(_) => &[],
        })
    };
    let bytes = slices().fold(0usize, |n, s| n.saturating_add(s.len()));
    if bytes > text.len() {
        return Err(Error::PromptTooLong {
            bytes,
            max: text.len(),
        });
    }
    let mut at = 0;
    for s in slices() {
        text[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    let text: &'b [u8] = text;
    let mut parts = Parts::new();
    let mut at = 0;
    for item in items {
        let part = match item {
            Item::Mark(m) => *m,
            Item::Text(t) => {
                let len = t.iter().map(|s| s.len()).sum::<usize>();
                at += len;
                Part::Text(&text[at - len..at])
            }
        };
        let _ = parts.push(part);
    }
    Ok(parts)
}

/// Most turns a conversation holds at once; a new turn beyond them drops
/// the oldest.
pub const MAX_TURNS: usize = 64;

/// A turn the context holds: where its answer begins, and how long its
/// user text is in the log.
#[derive(Clone, Copy, Debug)]
struct Held {
    answer: usize,
    len: usize,
}

/// A conversation in one chat format, fed into a [`Session`] turn by turn.
/// When the context fills, the oldest turns are dropped and the system
/// message kept: the oldest turn still held is written again as the first
/// (with the system message), its answer and everything after it follow
/// as they were, and [`Session::rewrite`] runs only what changed.
pub struct Chat<'c> {
    template: Template,
    system: &'c [u8],
    /// Where each turn is rendered.
    text: &'c mut [u8],
    /// The user texts of the held turns, oldest first, back to back.
    log: &'c mut [u8],
    held: heapless::Deque<Held, MAX_TURNS>,
}

impl<'c> Chat<'c> {
    /// `text` holds each rendered turn: it needs `system`'s bytes, the
    /// longest user turn's and [`TEMPLATE_BYTES`]. `log` keeps the held
    /// turns' user texts: at least the longest turn's bytes; the more, the
    /// more turns can stay.
    pub fn new(
        template: Template,
        system: &'c [u8],
        text: &'c mut [u8],
        log: &'c mut [u8],
    ) -> Self {
        Chat {
            template,
            system,
            text,
            log,
            held: heapless::Deque::new(),
        }
    }

    /// Adds the user's turn after what `session` holds: the first opens
    /// the conversation with the system message; a later one first closes
    /// the previous answer with the format's end of turn unless the model
    /// ended it so. Then [`Session::reply`] gives the answer. When the turn
    /// does not fit (in the context, the log or [`MAX_TURNS`]), the oldest
    /// turns are dropped until it does; returns how many were. A turn that
    /// does not fit even alone is refused and leaves the session as it was.
    pub fn user(&mut self, session: &mut Session<'_, '_>, user: &[u8]) -> Result<usize> {
        if user.len() > self.log.len() {
            return Err(Error::PromptTooLong {
                bytes: user.len(),
                max: self.log.len(),
            });
        }
        let mut dropped = 0;
        loop {
            let full = self.held.is_full() || self.logged() + user.len() > self.log.len();
            let added = match full {
                true => Err(Error::ContextFull {
                    needed: 0,
                    max: session.transformer.config().seq_len,
                }),
                false => self.add(session, user),
            };
            match added {
                Err(Error::ContextFull { .. }) if self.make_room(session)? => dropped += 1,
                Err(Error::ContextFull { .. }) if self.held.len() == 1 => {
                    self.restart(session, user)?;
                    return Ok(dropped + 1);
                }
                added => return added.map(|()| dropped),
            }
        }
    }

    /// Drops the oldest turn while a newer one stays (an answer that fills
    /// the context goes on after it); whether there was one to drop.
    pub fn make_room(&mut self, session: &mut Session<'_, '_>) -> Result<bool> {
        let (Some(&oldest), Some(&next)) = (self.held.front(), self.held.iter().nth(1)) else {
            return Ok(false);
        };
        let logged = self.logged();
        let user = &self.log[oldest.len..oldest.len + next.len];
        let turn = self.first_turn(session, user);
        let count = session.rewrite(&self.template.render(&turn, self.text)?, next.answer)?;
        self.held.pop_front();
        for h in self.held.iter_mut() {
            h.answer = h.answer - next.answer + count;
        }
        self.log.copy_within(oldest.len..logged, 0);
        Ok(true)
    }

    /// Renders the turn after the conversation so far and runs it.
    fn add(&mut self, session: &mut Session<'_, '_>, user: &[u8]) -> Result<()> {
        let waiting = session.next_token();
        let tokenizer = &session.tokenizer;
        let end = match self.template.end_of_turn() {
            Part::Special(name) => tokenizer.special(name),
            _ => Some(tokenizer.eos()),
        };
        let turn = match self.held.is_empty() {
            true => self.first_turn(session, user),
            false => Turn {
                first: false,
                close: waiting != end,
                ..self.first_turn(session, user)
            },
        };
        session.extend_parts(&self.template.render(&turn, self.text)?)?;
        self.hold(session, user);
        Ok(())
    }

    /// Starts the conversation over with `user`'s turn as its first.
    fn restart(&mut self, session: &mut Session<'_, '_>, user: &[u8]) -> Result<()> {
        let turn = self.first_turn(session, user);
        session.rewrite(&self.template.render(&turn, self.text)?, usize::MAX)?;
        self.held.clear();
        self.hold(session, user);
        Ok(())
    }

    /// Records the turn just run, whose answer comes next.
    fn hold(&mut self, session: &Session<'_, '_>, user: &[u8]) {
        let at = self.logged();
        self.log[at..at + user.len()].copy_from_slice(user);
        let held = Held {
            answer: session.position() + 1,
            len: user.len(),
        };
        let _ = self.held.push_back(held);
    }

    /// `user`'s turn opening a conversation.
    fn first_turn<'u>(&self, session: &Session<'_, '_>, user: &'u [u8]) -> Turn<'u>
    where
        'c: 'u,
    {
        Turn {
            system: self.system,
            user,
            first: true,
            add_bos: session.tokenizer.add_bos(),
            close: false,
        }
    }

    /// Bytes of the log in use.
    fn logged(&self) -> usize {
        self.held.iter().map(|h| h.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: Template, turn: &Turn<'_>) -> std::vec::Vec<std::string::String> {
        let mut buf = [0u8; 256];
        let parts = template.render(turn, &mut buf).unwrap();
        parts
            .iter()
            .map(|p| match p {
                Part::Bos => "<BOS>".into(),
                Part::Eos => "<EOS>".into(),
                Part::Special(t) => std::format!("[{}]", core::str::from_utf8(t).unwrap()),
                Part::Text(t) | Part::Prompt(t) => {
                    std::string::String::from_utf8(t.to_vec()).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn turns_render_as_the_formats_say() {
        let first = Turn {
            system: b"Be brief.",
            user: b"Hi",
            first: true,
            add_bos: true,
            close: false,
        };
        let later = Turn {
            first: false,
            close: true,
            ..first
        };
        assert_eq!(
            render(Template::Llama2, &first),
            ["<BOS>", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"]
        );
        assert_eq!(
            render(Template::Llama2, &later),
            ["<EOS>", "<BOS>", "[INST] Hi [/INST]"]
        );
        let no_system = Turn {
            system: b"",
            ..first
        };
        assert_eq!(
            render(Template::Llama2, &no_system),
            ["<BOS>", "[INST] Hi [/INST]"]
        );
        assert_eq!(
            render(Template::Zephyr, &first),
            [
                "<BOS>",
                "<|system|>\nBe brief.",
                "<EOS>",
                "\n<|user|>\nHi",
                "<EOS>",
                "\n<|assistant|>\n"
            ]
        );
        assert_eq!(
            render(
                Template::Zephyr,
                &Turn {
                    close: false,
                    ..later
                }
            ),
            ["\n<|user|>\nHi", "<EOS>", "\n<|assistant|>\n"]
        );
        let no_bos = Turn {
            add_bos: false,
            ..no_system
        };
        assert_eq!(
            render(Template::Zephyr, &no_bos),
            ["<|user|>\nHi", "<EOS>", "\n<|assistant|>\n"]
        );
    }

    #[test]
    fn chatml_llama3_and_mistral_render_as_llama_cpp_writes_them() {
        let first = Turn {
            system: b" Be brief. ",
            user: b"Hi ",
            first: true,
            add_bos: false,
            close: false,
        };
        let later = Turn {
            first: false,
            ..first
        };
        assert_eq!(
            render(Template::ChatMl, &first),
            [
                "[<|im_start|>]",
                "system\n Be brief. ",
                "[<|im_end|>]",
                "\n",
                "[<|im_start|>]",
                "user\nHi ",
                "[<|im_end|>]",
                "\n",
                "[<|im_start|>]",
                "assistant\n"
            ]
        );
        // After the model's own `<|im_end|>`; a cut answer is closed first.
        assert_eq!(
            render(Template::ChatMl, &later)[..3],
            ["\n", "[<|im_start|>]", "user\nHi "]
        );
        let cut = Turn {
            close: true,
            ..later
        };
        assert_eq!(render(Template::ChatMl, &cut)[..2], ["[<|im_end|>]", "\n"]);
        // Llama 3 trims each message.
        let bos = Turn {
            add_bos: true,
            ..first
        };
        assert_eq!(
            render(Template::Llama3, &bos),
            [
                "<BOS>",
                "[<|start_header_id|>]",
                "system",
                "[<|end_header_id|>]",
                "\n\nBe brief.",
                "[<|eot_id|>]",
                "[<|start_header_id|>]",
                "user",
                "[<|end_header_id|>]",
                "\n\nHi",
                "[<|eot_id|>]",
                "[<|start_header_id|>]",
                "assistant",
                "[<|end_header_id|>]",
                "\n\n"
            ]
        );
        assert_eq!(
            render(Template::Llama3, &cut)[..2],
            ["[<|eot_id|>]", "[<|start_header_id|>]"]
        );
        assert_eq!(
            render(Template::Mistral, &first),
            ["<BOS>", "[INST]  Be brief. \n\nHi  [/INST]"]
        );
        assert_eq!(
            render(Template::Mistral, &cut),
            ["<EOS>", "<BOS>", "[INST] Hi  [/INST]"]
        );
    }

    #[test]
    fn a_chatml_template_s_default_system_message_is_found() {
        // SmolLM2's, whose new lines are characters in the file.
        let smollm2 = b"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
            {{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}\
            {% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        assert_eq!(
            default_system(smollm2),
            Some(&b"You are a helpful AI assistant named SmolLM, trained by Hugging Face"[..])
        );
        let plain =
            b"{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}";
        assert_eq!(default_system(plain), None);
    }

    #[test]
    fn a_turn_longer_than_the_buffer_is_refused() {
        let turn = Turn {
            system: b"",
            user: &[b'x'; 100],
            first: true,
            add_bos: true,
            close: false,
        };
        let mut buf = [0u8; 100];
        let e = Template::Llama2.render(&turn, &mut buf).err();
        assert_eq!(
            e,
            Some(Error::PromptTooLong {
                bytes: 115,
                max: 100
            })
        );
    }

    #[test]
    fn templates_are_recognized_by_their_markers() {
        // Meta's Llama-2-chat template (abridged) and TinyLlama-Chat's.
        let llama2 = b"{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + \
            messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}{% endif %}{% for message in loop_messages %}\
            {% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}\
            {% elif message['role'] == 'assistant' %}{{ ' ' + content | trim + ' ' + eos_token }}{% endif %}{% endfor %}";
        let zephyr = b"{% for message in messages %}\n{% if message['role'] == 'user' %}\n\
            {{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n\
            {{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n\
            {{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n\
            {% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
        let chatml = b"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + \
            message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        let mistral =
            b"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}\
            {{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}";
        let llama3 = b"{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + \
            '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
        assert_eq!(Template::recognize(llama2), Some(Template::Llama2));
        assert_eq!(Template::recognize(zephyr), Some(Template::Zephyr));
        assert_eq!(Template::recognize(chatml), Some(Template::ChatMl));
        assert_eq!(Template::recognize(mistral), Some(Template::Mistral));
        assert_eq!(Template::recognize(llama3), Some(Template::Llama3));
        assert_eq!(Template::recognize(b""), None);
        for t in Template::ALL {
            assert_eq!(Template::parse(t.name().as_bytes()), Some(t));
        }
        assert_eq!(Template::parse(b"vicuna"), None);
    }
}
