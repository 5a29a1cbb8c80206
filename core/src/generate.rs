//! Generation: prompt → tokens → decode loop → pieces to a sink, the way
//! llama2.c's `generate()` does it, plus the text stream that turns pieces
//! (which may split a UTF-8 character across byte tokens) into valid UTF-8.

use crate::arena::Plan;
use crate::error::{Error, Result};
use crate::exec::Compute;
use crate::image::gguf::Gguf;
use crate::image::Model;
use crate::model::Transformer;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{Piece, Tokenizer};

/// Where the vocabulary comes from.
#[derive(Clone, Copy, Debug)]
pub enum Vocab<'t> {
    /// The bytes of a llama2.c `tokenizer.bin`.
    Llama2c(&'t [u8]),
    /// The `tokenizer.ggml.*` metadata of a GGUF file.
    Gguf(Gguf<'t>),
}

/// A model, tokenizer and sampler bound to one arena.
pub struct Session<'m, 'a> {
    pub transformer: Transformer<'m, 'a>,
    pub tokenizer: Tokenizer<'m, 'a>,
    pub sampler: Sampler<'a>,
    prompt: &'a mut [u32],
}

impl<'m, 'a> Session<'m, 'a> {
    /// Carves `arena` by `plan` (made from `model.config`) and builds the
    /// parts; the arithmetic runs on `compute`.
    pub fn new(
        model: &'m Model<'m>,
        vocab: Vocab<'m>,
        sampler: SamplerConfig,
        plan: &Plan,
        arena: &'a mut [u8],
        compute: Compute<'m>,
    ) -> Result<Self> {
        let b = plan.carve(arena)?;
        let vocab_size = plan.config().vocab_size;
        let tokenizer = match vocab {
            Vocab::Llama2c(bytes) => Tokenizer::from_llama2c(bytes, vocab_size, b.tokenizer)?,
            Vocab::Gguf(g) => Tokenizer::from_gguf(&g, vocab_size, b.tokenizer)?,
        };
        Ok(Session {
            transformer: Transformer::new(model, plan.config(), b.state, compute)?,
            tokenizer,
            sampler: Sampler::new(sampler, b.candidates, compute.isa),
            prompt: b.prompt,
        })
    }

    /// Feeds `prompt` (after BOS) and then sampled tokens until `steps`
    /// positions have run or the model emits BOS or EOS. Every token after
    /// the first, prompt tokens included, goes to `on_token` with its text.
    /// Returns the number of positions run.
    pub fn generate(
        &mut self,
        prompt: &[u8],
        steps: usize,
        mut on_token: impl FnMut(u32, Piece<'m>) -> Result<()>,
    ) -> Result<usize> {
        let max = self.transformer.config().seq_len;
        if steps > max {
            return Err(Error::ContextFull { needed: steps, max });
        }
        // An empty prompt still needs a first token: BOS.
        let bos = self.tokenizer.add_bos() || prompt.is_empty();
        let ids = self.tokenizer.encode(prompt, bos, false)?;
        let n_prompt = ids.len();
        self.prompt
            .get_mut(..n_prompt)
            .ok_or(Error::ContextFull {
                needed: n_prompt,
                max,
            })?
            .copy_from_slice(ids);
        let (bos, eos) = (self.tokenizer.bos(), self.tokenizer.eos());

        let mut token = self.prompt[0];
        let mut pos = 0;
        while pos < steps {
            let logits = self.transformer.forward(token, pos)?;
            let next = if pos + 1 < n_prompt {
                self.prompt[pos + 1]
            } else {
                self.sampler.sample(logits)
            };
            pos += 1;
            if next == bos || next == eos {
                break;
            }
            on_token(next, self.tokenizer.decode(token, next))?;
            token = next;
        }
        Ok(pos)
    }
}

/// Reassembles UTF-8 from token pieces: byte tokens may split a character,
/// and a model may emit bytes that never form one. Complete characters are
/// passed on; invalid sequences become U+FFFD; lone ASCII control bytes from
/// byte tokens are dropped (llama2.c's `safe_printf` rule). The output is
/// therefore always valid UTF-8.
#[derive(Default)]
pub struct TextStream {
    pending: [u8; 4],
    len: usize,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one piece and emits whatever text it completes.
    pub fn push(&mut self, piece: Piece<'_>, out: &mut impl FnMut(&str)) {
        if let Piece::Byte(b) = piece {
            if b.is_ascii() && !(b.is_ascii_graphic() || b.is_ascii_whitespace() || b == b' ') {
                return;
            }
        }
        piece.bytes(|bytes| {
            for &b in bytes {
                self.byte(b, out);
            }
        });
    }

    fn byte(&mut self, b: u8, out: &mut impl FnMut(&str)) {
        self.pending[self.len] = b;
        self.len += 1;
        while self.len > 0 {
            match core::str::from_utf8(&self.pending[..self.len]) {
                Ok(s) => {
                    out(s);
                    self.len = 0;
                }
                // An incomplete character: wait for its next byte.
                Err(e) if e.error_len().is_none() => return,
                Err(e) => {
                    let good = e.valid_up_to();
                    if let Ok(s) = core::str::from_utf8(&self.pending[..good]) {
                        out(s);
                    }
                    out("\u{FFFD}");
                    let skip = good + e.error_len().unwrap_or(1);
                    self.pending.copy_within(skip..self.len, 0);
                    self.len -= skip;
                }
            }
        }
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    pub fn finish(&mut self, out: &mut impl FnMut(&str)) {
        if self.len > 0 {
            out("\u{FFFD}");
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    fn stream(pieces: &[Piece<'_>]) -> String {
        let mut s = TextStream::new();
        let mut text = String::new();
        let mut out = |t: &str| text.push_str(t);
        for &p in pieces {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        text
    }

    #[test]
    fn byte_tokens_assemble_into_characters() {
        let crab = "🦀".as_bytes();
        let pieces: std::vec::Vec<Piece> = crab.iter().map(|&b| Piece::Byte(b)).collect();
        assert_eq!(stream(&pieces), "🦀");
        assert_eq!(
            stream(&[Piece::Text(b"a"), Piece::Byte(0xE2), Piece::Text(b"b")]),
            "a\u{FFFD}b"
        );
        assert_eq!(stream(&[Piece::Byte(0xF0), Piece::Byte(0x9F)]), "\u{FFFD}");
        assert_eq!(
            stream(&[Piece::Byte(0x07), Piece::Byte(b'\n'), Piece::Text(b"\xff")]),
            "\n\u{FFFD}"
        );
    }
}
