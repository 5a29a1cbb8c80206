//! Chat formats: a user's turn written the way a chat model was trained to
//! read it and fed into a [`Session`] after the conversation so far, so
//! only the new turn's tokens run.
//!
//! Two formats, told apart by their markers rather than by running the
//! Jinja template a GGUF file carries:
//!
//! - **Llama-2** (llama2.c's chat mode): every user turn is BOS +
//!   `[INST] {user} [/INST]`, the first with `<<SYS>>\n{system}\n<</SYS>>\n\n`
//!   before the user's text; an answer is closed by EOS.
//! - **Zephyr** (TinyLlama-Chat): `<|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n`,
//!   BOS first when the vocabulary adds one.
//!
//! In Zephyr's text `</s>` is the EOS *id*, not the characters: llama.cpp
//! tokenizes chat prompts with special-token parsing on, and `</s>` is a
//! control token of the Llama vocabulary. Every text fragment after it is
//! encoded on its own with SentencePiece's dummy leading space, as
//! llama.cpp does after a special token. Markers such as `[INST]` and
//! `<|user|>` are not tokens of the Llama vocabulary: they are ordinary text.
//!
//! ```no_run
//! use barellama_core::{Chat, Session, Template};
//! # fn demo(session: &mut Session<'_, '_>, text: &mut [u8]) -> barellama_core::Result<()> {
//! // `text` holds a rendered turn: system + user + TEMPLATE_BYTES.
//! let mut chat = Chat::new(Template::Llama2, b"You are a storyteller.", text);
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
    Zephyr,
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
    /// The previous answer did not end with EOS (a stop string or a token
    /// limit cut it), so the turn first closes it with one.
    pub close: bool,
}

/// A rendered turn: pieces of text and markers, in order.
pub type Parts<'b> = heapless::Vec<Part<'b>, 8>;

/// A piece of a turn before it is laid out: a marker, or text made of
/// several slices.
enum Item<'x> {
    Mark(Part<'static>),
    Text(&'x [&'x [u8]]),
}

impl Template {
    /// The names `--template` takes.
    pub fn parse(name: &[u8]) -> Option<Template> {
        match name {
            b"llama2" => Some(Template::Llama2),
            b"zephyr" => Some(Template::Zephyr),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Template::Llama2 => "llama2",
            Template::Zephyr => "zephyr",
        }
    }

    /// Recognizes a GGUF `tokenizer.chat_template` by its markers:
    /// `[INST]` with `<<SYS>>` is Llama-2, `<|user|>` with `<|assistant|>`
    /// is Zephyr. Anything else is not known here.
    pub fn recognize(jinja: &[u8]) -> Option<Template> {
        let has = |marker: &[u8]| jinja.windows(marker.len()).any(|w| w == marker);
        if has(b"[INST]") && has(b"<<SYS>>") {
            Some(Template::Llama2)
        } else if has(b"<|user|>") && has(b"<|assistant|>") {
            Some(Template::Zephyr)
        } else {
            None
        }
    }

    /// Writes `turn`'s text into `text` and returns its parts, which end
    /// where the assistant's answer begins. `text` needs the system
    /// message's and the user's bytes plus [`TEMPLATE_BYTES`].
    pub fn render<'b>(self, turn: &Turn<'_>, text: &'b mut [u8]) -> Result<Parts<'b>> {
        let (system, user) = (turn.system, turn.user);
        let with_system = turn.first && !system.is_empty();
        let llama_first: [&[u8]; 5] = [
            b"[INST] <<SYS>>\n",
            system,
            b"\n<</SYS>>\n\n",
            user,
            b" [/INST]",
        ];
        let llama: [&[u8]; 3] = [b"[INST] ", user, b" [/INST]"];
        let zephyr_system: [&[u8]; 2] = [b"<|system|>\n", system];
        // After `</s>` a new line; at the very start none.
        let user_marker: &[u8] = match turn.first && !with_system {
            true => b"<|user|>\n",
            false => b"\n<|user|>\n",
        };
        let zephyr_user: [&[u8]; 2] = [user_marker, user];
        let zephyr_assistant: [&[u8]; 1] = [b"\n<|assistant|>\n"];
        let mut items = heapless::Vec::<Item<'_>, 8>::new();
        let mut add = |item| {
            let _ = items.push(item);
        };
        if turn.close {
            add(Item::Mark(Part::Eos));
        }
        match self {
            Template::Llama2 => {
                add(Item::Mark(Part::Bos));
                add(Item::Text(if with_system { &llama_first } else { &llama }));
            }
            Template::Zephyr => {
                if turn.first && turn.add_bos {
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
        }
        lay_out(&items, text)
    }
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

/// A conversation in one chat format, fed into a [`Session`] turn by turn.
pub struct Chat<'c> {
    template: Template,
    system: &'c [u8],
    /// Where each turn is rendered.
    text: &'c mut [u8],
}

impl<'c> Chat<'c> {
    /// `text` holds each rendered turn: it needs `system`'s bytes, the
    /// longest user turn's and [`TEMPLATE_BYTES`].
    pub fn new(template: Template, system: &'c [u8], text: &'c mut [u8]) -> Self {
        Chat {
            template,
            system,
            text,
        }
    }

    /// Adds the user's turn after what `session` holds: at position 0 it
    /// opens the conversation with the system message; later it first
    /// closes the previous answer with EOS unless the model ended it so.
    /// Then [`Session::reply`] gives the answer. A turn that does not fit
    /// in the context is refused and leaves the session as it was.
    pub fn user(&mut self, session: &mut Session<'_, '_>, user: &[u8]) -> Result<()> {
        let waiting = session.next_token();
        let first = waiting.is_none();
        let turn = Turn {
            system: self.system,
            user,
            first,
            add_bos: session.tokenizer.add_bos(),
            close: !first && waiting != Some(session.tokenizer.eos()),
        };
        let parts = self.template.render(&turn, self.text)?;
        session.extend_parts(&parts)
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
                Part::Text(t) => std::string::String::from_utf8(t.to_vec()).unwrap(),
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
        assert_eq!(Template::recognize(llama2), Some(Template::Llama2));
        assert_eq!(Template::recognize(zephyr), Some(Template::Zephyr));
        assert_eq!(Template::recognize(chatml), None);
        assert_eq!(Template::recognize(mistral), None);
        assert_eq!(Template::recognize(b""), None);
        assert_eq!(Template::parse(b"zephyr"), Some(Template::Zephyr));
        assert_eq!(
            Template::parse(Template::Llama2.name().as_bytes()),
            Some(Template::Llama2)
        );
        assert_eq!(Template::parse(b"chatml"), None);
    }
}
