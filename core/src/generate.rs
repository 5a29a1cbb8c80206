//! Generation: text in, tokens through the model, text out. [`Session`]
//! keeps the position and the token waiting to run, so input can follow a
//! reply and only its new tokens run (multi-turn chat keeps its KV cache);
//! [`Session::generate`] is llama2.c's `generate()` on top of that. The
//! text side is one [`TextSink`]: pieces (which may split a UTF-8 character
//! across byte tokens) in, valid UTF-8 with stop strings withheld out.

use core::fmt;
use core::ops::{ControlFlow, Range};

use crate::arena::Plan;
use crate::beam::{self, BeamBuffers, Outcome};
use crate::error::{Error, Result};
use crate::exec::Compute;
use crate::image::vocab::Vocab;
use crate::image::Model;
use crate::model::Transformer;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{Piece, Tokenizer};

/// Input for a session: text, or a marker that no text encodes to (chat
/// formats put BOS, EOS and their special tokens between pieces of text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part<'t> {
    /// Text, encoded as text: a control token's spelling in it is not that
    /// token (a chat user's words). A SentencePiece vocabulary encodes it
    /// on its own with the dummy leading space, as llama.cpp does with
    /// every fragment after a special token.
    Text(&'t [u8]),
    /// A prompt, whose special tokens' spellings are those tokens (as
    /// llama.cpp parses `-p`), so a hand-written chat format works.
    Prompt(&'t [u8]),
    /// The special token spelled so (`<|im_start|>`, `<|eot_id|>`); text
    /// where the vocabulary has no such token.
    Special(&'t [u8]),
    Bos,
    Eos,
}

/// Encodes `parts` into `out` and returns how many ids they make. When
/// they do not fit, the error is [`Error::ContextFull`] with every id
/// counted as `needed` and `out`'s length as `max`.
pub fn tokenize_parts(
    tokenizer: &mut Tokenizer<'_, '_>,
    parts: &[Part<'_>],
    out: &mut [u32],
) -> Result<usize> {
    let n = each_id(tokenizer, parts, |i, id| {
        if let Some(slot) = out.get_mut(i) {
            *slot = id;
        }
    })?;
    if n > out.len() {
        return Err(Error::ContextFull {
            needed: n,
            max: out.len(),
        });
    }
    Ok(n)
}

/// Encodes `parts` and hands each id to `put` with its index; returns how
/// many there are.
fn each_id(
    tokenizer: &mut Tokenizer<'_, '_>,
    parts: &[Part<'_>],
    mut put: impl FnMut(usize, u32),
) -> Result<usize> {
    let mut n = 0usize;
    for part in parts {
        let marker;
        let ids: &[u32] = match *part {
            Part::Text(text) => tokenizer.encode_text(text)?,
            Part::Prompt(text) => tokenizer.encode(text, false, false)?,
            // A vocabulary without the token reads its name as text, as
            // llama.cpp's special-token parsing leaves it.
            Part::Special(name) => match tokenizer.special(name) {
                Some(id) => {
                    marker = [id];
                    &marker
                }
                None => tokenizer.encode_text(name)?,
            },
            Part::Bos => {
                marker = [tokenizer.bos()];
                &marker
            }
            Part::Eos => {
                marker = [tokenizer.eos()];
                &marker
            }
        };
        for &id in ids {
            put(n, id);
            n += 1;
        }
    }
    Ok(n)
}

/// Why a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The model sampled an end-of-generation token: its answer is
    /// complete.
    Eos,
    /// `on_token` broke off, at a stop string say.
    Stopped,
    /// The most tokens the caller allowed were sampled.
    Limit,
    /// The last sampled token has no position left to run at.
    ContextFull,
}

/// A model, tokenizer and sampler bound to one arena, and the conversation
/// so far: its KV cache holds positions `0..position()`.
pub struct Session<'m, 'a> {
    pub transformer: Transformer<'m, 'a>,
    pub tokenizer: Tokenizer<'m, 'a>,
    pub sampler: Sampler<'a>,
    /// The context's tokens by position: `tokens[..pos]` have run, and
    /// `tokens[pos]` is the waiting token (staged input follows it). One
    /// longer than the context, so a reply that fills it keeps the token it
    /// sampled last.
    tokens: &'a mut [u32],
    pos: usize,
    /// The token the next position runs: the input's last or the last
    /// sampled. It waits so that the logits after it are computed only
    /// when a reply samples from them, and so that the next input can see
    /// how an answer ended. `None` only before any input.
    next: Option<u32>,
    /// Where the last input's tokens are in `tokens`.
    input: Range<usize>,
    beams: BeamBuffers<'a>,
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
        let tokenizer = Tokenizer::new(vocab, vocab_size, b.tokenizer)?;
        Ok(Session {
            transformer: Transformer::new(model, plan.config(), b.state, compute)?,
            tokenizer,
            sampler: Sampler::new(sampler, b.candidates, compute.isa),
            tokens: b.prompt,
            pos: 0,
            next: None,
            input: 0..0,
            beams: b.beams,
        })
    }

    /// Beam search with `width` beams (at most the plan's) after `prompt`
    /// until `steps` positions have run or every hypothesis has ended (see
    /// [`crate::beam`]): the winner, whose tokens
    /// [`Session::beam_tokens`] gives. The session starts over before and
    /// after; [`Session::input`] is the prompt's tokens.
    pub fn beam_search(&mut self, prompt: &[u8], steps: usize, width: usize) -> Result<Outcome> {
        let n = self.start(prompt)?;
        let outcome = beam::search(
            &mut self.transformer,
            &mut self.beams,
            &self.tokens[..n],
            steps,
            width,
            self.tokenizer.eog(),
        );
        self.reset();
        self.input = 0..n;
        outcome
    }

    /// The tokens `outcome` (from [`Session::beam_search`]) generated.
    pub fn beam_tokens(&self, outcome: &Outcome) -> &[u32] {
        &self.beams.best[..outcome.len.min(self.beams.best.len())]
    }

    /// Positions the KV cache holds.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The token that runs at [`Session::position`] before the next
    /// sample: the last input token or the last sampled one (EOS when an
    /// answer ended there). `None` before any input.
    pub fn next_token(&self) -> Option<u32> {
        self.next
    }

    /// The tokens the last input added, BOS included but not the token that
    /// waited before them: what a caller echoes as a prompt's text.
    pub fn input(&self) -> &[u32] {
        &self.tokens[self.input.clone()]
    }

    /// The tokens that have run, position by position: what a repetition
    /// penalty looks back on, and what a chat keeps when it drops turns.
    pub fn history(&self) -> &[u32] {
        &self.tokens[..self.pos]
    }

    /// Starts over at position 0; the arena is reused as it is.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.next = None;
        self.input = 0..0;
    }

    /// Adds the prompt `text` after what the session holds; at position 0
    /// it starts with BOS when the vocabulary asks for one (llama2.c
    /// always does), and it ends with EOS when the vocabulary asks for that.
    pub fn extend(&mut self, text: &[u8]) -> Result<()> {
        let bos = self.next.is_none() && self.tokenizer.add_bos();
        let eos = self.tokenizer.add_eos();
        let parts = [Part::Bos, Part::Prompt(text), Part::Eos];
        self.extend_parts(&parts[usize::from(!bos)..3 - usize::from(!eos)])
    }

    /// Adds `parts` after what the session holds: the waiting token and
    /// all but the last new token run now, the last waits for a reply.
    /// Input that would not fit in the context is refused with
    /// [`Error::ContextFull`] before anything runs, leaving the session
    /// as it was.
    pub fn extend_parts(&mut self, parts: &[Part<'_>]) -> Result<()> {
        let n = self.stage(parts)?;
        self.commit(n)
    }

    /// Starts over and stages `prompt` after BOS (when the vocabulary asks
    /// for it; an empty prompt still needs a first token); returns how
    /// many tokens that makes.
    fn start(&mut self, prompt: &[u8]) -> Result<usize> {
        self.reset();
        let bos = self.tokenizer.add_bos() || prompt.is_empty();
        let parts = [Part::Bos, Part::Prompt(prompt)];
        self.stage(&parts[usize::from(!bos)..])
    }

    /// Puts the tokens of `parts` after the waiting token; returns how many
    /// tokens from [`Session::position`] on are staged, the waiting one
    /// included (0 when `parts` add none).
    fn stage(&mut self, parts: &[Part<'_>]) -> Result<usize> {
        self.stage_with(|tokenizer, out| tokenize_parts(tokenizer, parts, out))
    }

    /// [`Session::stage`] of the ids `fill` writes into the room it is
    /// given and counts, refusing with [`Error::ContextFull`] (`max`: the
    /// room) ids that do not fit.
    fn stage_with(
        &mut self,
        fill: impl FnOnce(&mut Tokenizer<'m, 'a>, &mut [u32]) -> Result<usize>,
    ) -> Result<usize> {
        let max = self.transformer.config().seq_len;
        let start = self.pos + usize::from(self.next.is_some());
        let out = self.tokens.get_mut(start..max).unwrap_or(&mut []);
        let new = fill(&mut self.tokenizer, out).map_err(|e| match e {
            Error::ContextFull { needed, .. } => Error::ContextFull {
                needed: start + needed,
                max,
            },
            e => e,
        })?;
        if new == 0 {
            return Ok(0);
        }
        self.input = start..start + new;
        Ok(start + new - self.pos)
    }

    /// Runs the first `n - 1` staged tokens; the last one waits.
    fn commit(&mut self, n: usize) -> Result<()> {
        if n > 0 {
            self.feed(n - 1)?;
            self.next = Some(self.tokens[self.pos]);
        }
        Ok(())
    }

    /// Runs the `n` tokens from the current position on: the one place
    /// where input enters the model, in batched prefill chunks.
    fn feed(&mut self, n: usize) -> Result<()> {
        let end = self.pos + n;
        self.transformer
            .fill(&self.tokens[self.pos..end], self.pos)?;
        self.pos = end;
        Ok(())
    }

    /// Makes the context `parts` followed by the held tokens from position
    /// `from` on (the waiting one included; `from` past it keeps none): a
    /// chat dropping its oldest turns. Only positions after the longest
    /// prefix that the old and new contexts share (and that lies before
    /// `from`) run again, so the result is exactly that of feeding the new
    /// context from the start. Returns how many tokens `parts` made. A
    /// context that would not fit is refused with [`Error::ContextFull`]
    /// before anything changes; so is a session holding nothing.
    pub fn rewrite(&mut self, parts: &[Part<'_>], from: usize) -> Result<usize> {
        let max = self.transformer.config().seq_len;
        let Some(_) = self.next else {
            return Err(Error::ContextFull { needed: 0, max });
        };
        let last = self.pos;
        let from = from.min(last + 1);
        let kept = last + 1 - from;
        let count = each_id(&mut self.tokenizer, parts, |_, _| {})?;
        let total = count + kept;
        if total == 0 || total > max {
            return Err(Error::ContextFull { needed: total, max });
        }
        // The kept tokens move to the end of the buffer, out of the way of
        // the new ones, which overwrite the old in order: each is compared
        // before it is written.
        let room = self.tokens.len() - kept;
        self.tokens.copy_within(from..=last, room);
        let (tokens, mut same, mut differs) = (&mut *self.tokens, 0, false);
        each_id(&mut self.tokenizer, parts, |i, id| {
            differs |= i >= from || tokens[i] != id;
            if !differs {
                same = i + 1;
            }
            tokens[i] = id;
        })?;
        self.tokens.copy_within(room.., count);
        self.pos = same.min(total - 1);
        self.feed(total - 1 - self.pos)?;
        self.next = Some(self.tokens[self.pos]);
        self.input = self.pos..self.pos;
        Ok(count)
    }

    /// Adds token ids (at least one) after what the session holds and
    /// samples the token after them, which waits as after
    /// [`Session::step`]: the waiting token and `ids` run as one
    /// [`Transformer::prefill`], batched. For input that is ids, not text
    /// (`bench`'s seeded prompt); ids that would not fit in the context are
    /// refused with [`Error::ContextFull`] before anything runs.
    pub fn extend_tokens(&mut self, ids: &[u32]) -> Result<u32> {
        let n = self.stage_with(|_, out| {
            let room = out.len();
            let slot = out.get_mut(..ids.len()).ok_or(Error::ContextFull {
                needed: ids.len(),
                max: room,
            })?;
            slot.copy_from_slice(ids);
            Ok(ids.len())
        })?;
        let end = self.pos + n;
        let logits = self
            .transformer
            .prefill(&self.tokens[self.pos..end], self.pos)?;
        // The penalties look back on every token in the context.
        let next = self.sampler.sample(logits, &self.tokens[..end]);
        self.pos = end;
        self.wait(next);
        Ok(next)
    }

    /// One decode step: runs the waiting token (BOS before any input) at
    /// [`Session::position`] and samples the token after it, which then
    /// waits. The caller decides what a token means: [`Session::reply`]
    /// stops at EOS, `bench` times each step.
    pub fn step(&mut self) -> Result<u32> {
        let token = self.next.unwrap_or(self.tokenizer.bos());
        let logits = self.transformer.forward(token, self.pos)?;
        // `forward` has checked that the position is inside the context.
        self.tokens[self.pos] = token;
        let next = self.sampler.sample(logits, &self.tokens[..=self.pos]);
        self.pos += 1;
        self.wait(next);
        Ok(next)
    }

    /// Makes `token`, just sampled, the waiting one. The buffer has a slot
    /// for it even at the end of the context.
    fn wait(&mut self, token: u32) {
        self.tokens[self.pos] = token;
        self.next = Some(token);
    }

    /// Samples up to `max_tokens` tokens after what the session holds
    /// (BOS first if it holds nothing), each run before the next is
    /// sampled. Each goes to `on_token` with its text, which may break off;
    /// an end-of-generation token ([`Tokenizer::eog`]) ends the reply
    /// without reaching it. The token that ends a reply waits (see
    /// [`Session::next_token`]).
    pub fn reply(
        &mut self,
        max_tokens: usize,
        mut on_token: impl FnMut(u32, Piece<'m>) -> Result<ControlFlow<()>>,
    ) -> Result<End> {
        let max = self.transformer.config().seq_len;
        for _ in 0..max_tokens {
            if self.pos >= max {
                return Ok(End::ContextFull);
            }
            let token = self.next.unwrap_or(self.tokenizer.bos());
            let next = self.step()?;
            if self.tokenizer.is_eog(next) {
                return Ok(End::Eos);
            }
            if on_token(next, self.tokenizer.decode(token, next))?.is_break() {
                return Ok(End::Stopped);
            }
        }
        Ok(End::Limit)
    }

    /// llama2.c's `generate()`: starts over, feeds `prompt` (after BOS) and
    /// then sampled tokens until `steps` positions have run or the model
    /// emits an end-of-generation token. Every token after the first, prompt tokens
    /// included, goes to `on_token` with its text. Returns the number of
    /// positions run.
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
        // As in llama2.c, a prompt longer than `steps` is cut there.
        let n = self.start(prompt)?.min(steps + 1);
        self.input.end = n;
        for w in self.tokens[..n].windows(2) {
            on_token(w[1], self.tokenizer.decode(w[0], w[1]))?;
        }
        self.commit(n)?;
        self.reply(steps - self.pos, |id, piece| {
            on_token(id, piece).map(|()| ControlFlow::Continue(()))
        })?;
        Ok(self.pos)
    }
}

/// The one way generated text leaves a session: decoded pieces in, and
/// out to any [`fmt::Write`] (stdout, a UART, a buffer) as valid UTF-8 with
/// the stop strings withheld. Pieces go through two stages:
///
/// - UTF-8: byte tokens may split a character, and a model may emit bytes
///   that never form one. Complete characters pass on; invalid sequences
///   become U+FFFD; lone ASCII control bytes from byte tokens are dropped
///   (llama2.c's `safe_printf` rule).
/// - Stop strings, as llama.cpp's reverse prompts: text passes on at once
///   unless it may begin a stop string; once the text contains one, what
///   comes before it passes on and the rest is dropped. Only the tail that
///   may still grow into a stop string is held, so a fixed buffer suffices.
///
/// A failed write ends the text too: nothing more is written, and
/// [`TextSink::finish`] reports it (the writer may keep why).
pub struct TextSink<'s, W: fmt::Write> {
    out: Out<W>,
    utf8: Utf8,
    stop: StopText<'s>,
}

impl<'s, W: fmt::Write> TextSink<'s, W> {
    /// Text into `out` that ends where it contains one of `stops`, each of
    /// 1 to [`MAX_STOP_BYTES`] bytes.
    pub fn new(out: W, stops: &'s [&'s str]) -> Result<Self> {
        Ok(TextSink {
            stop: StopText::new(stops)?,
            ..TextSink::plain(out)
        })
    }

    /// Text into `out` with no stop strings.
    pub fn plain(out: W) -> Self {
        TextSink {
            out: Out {
                w: out,
                failed: false,
            },
            utf8: Utf8::default(),
            stop: StopText::default(),
        }
    }

    /// A piece printed whole, never matched against the stop strings: a
    /// prompt's (its own text stops nothing), or any piece of text that
    /// cannot stop (a finished answer, a sink without stop strings).
    pub fn echo(&mut self, piece: Piece<'_>) {
        let out = &mut self.out;
        self.utf8.push(piece, &mut |s| out.write(s));
    }

    /// A generated piece. `Break` once the text has ended: a stop string
    /// has appeared (now or before), or a write failed.
    pub fn push(&mut self, piece: Piece<'_>) -> ControlFlow<()> {
        let Self { out, utf8, stop } = self;
        let mut hit = false;
        utf8.push(piece, &mut |s| hit = stop.push(s, &mut |t| out.write(t)));
        match hit || out.failed {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    }

    /// Ends the text: an unfinished character becomes U+FFFD and a held
    /// tail that never became a stop string is passed on. An error when
    /// any write failed.
    pub fn finish(&mut self) -> fmt::Result {
        let Self { out, utf8, stop } = self;
        utf8.finish(&mut |s| {
            stop.push(s, &mut |t| out.write(t));
        });
        stop.finish(&mut |t| out.write(t));
        match out.failed {
            true => Err(fmt::Error),
            false => Ok(()),
        }
    }

    /// The writer, to read what it kept.
    pub fn writer(&self) -> &W {
        &self.out.w
    }

    pub fn into_inner(self) -> W {
        self.out.w
    }
}

/// [`TextSink`]'s writer, and whether a write to it failed: after one
/// failure nothing more is written.
struct Out<W> {
    w: W,
    failed: bool,
}

impl<W: fmt::Write> Out<W> {
    fn write(&mut self, s: &str) {
        if !self.failed {
            self.failed = self.w.write_str(s).is_err();
        }
    }
}

/// [`TextSink`]'s UTF-8 stage: up to one incomplete character waits.
#[derive(Default)]
struct Utf8 {
    pending: [u8; 4],
    len: usize,
}

impl Utf8 {
    /// Adds one piece and emits whatever text it completes.
    fn push(&mut self, piece: Piece<'_>, out: &mut impl FnMut(&str)) {
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
    fn finish(&mut self, out: &mut impl FnMut(&str)) {
        if self.len > 0 {
            out("\u{FFFD}");
            self.len = 0;
        }
    }
}

/// Longest stop string [`TextSink`] takes, in bytes.
pub const MAX_STOP_BYTES: usize = 64;

/// [`TextSink`]'s stop-string stage.
#[derive(Default)]
struct StopText<'s> {
    stops: &'s [&'s str],
    /// A proper prefix of some stop string, or empty; one more character
    /// always fits.
    held: heapless::String<{ MAX_STOP_BYTES + 4 }>,
    stopped: bool,
}

impl<'s> StopText<'s> {
    /// Each of `stops` must have 1 to [`MAX_STOP_BYTES`] bytes.
    fn new(stops: &'s [&'s str]) -> Result<Self> {
        if let Some(s) = stops
            .iter()
            .find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
        {
            return Err(Error::Mismatch {
                field: "stop string bytes",
                value: s.len() as i64,
                rule: "is 0 or exceeds",
                other: "MAX_STOP_BYTES",
                other_value: MAX_STOP_BYTES as i64,
            });
        }
        Ok(StopText {
            stops,
            ..StopText::default()
        })
    }

    /// Adds `text` and passes on what cannot be part of a stop string.
    /// Returns whether a stop string has appeared (now or before).
    fn push(&mut self, text: &str, out: &mut impl FnMut(&str)) -> bool {
        if self.stopped {
            return true;
        }
        // `text[run..]` passes straight on up to the first character that
        // may begin a stop string.
        let mut run = 0;
        for (i, c) in text.char_indices() {
            if self.held.is_empty() && !self.stops.iter().any(|s| s.starts_with(c)) {
                continue;
            }
            if run < i {
                out(&text[run..i]);
            }
            run = i + c.len_utf8();
            if self.hold(c, out) {
                self.stopped = true;
                return true;
            }
        }
        if run < text.len() {
            out(&text[run..]);
        }
        false
    }

    /// Appends `c` to the held tail; true at a stop string.
    fn hold(&mut self, c: char, out: &mut impl FnMut(&str)) -> bool {
        let _ = self.held.push(c);
        if let Some(before) = self.stops.iter().find_map(|s| self.held.strip_suffix(s)) {
            if !before.is_empty() {
                out(before);
            }
            self.held.clear();
            return true;
        }
        // Keep the longest tail that may still grow into a stop string.
        let held = self.held.as_str();
        let keep = held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&held[i..])))
            .unwrap_or(held.len());
        if keep > 0 {
            out(&held[..keep]);
            let mut rest = heapless::String::new();
            let _ = rest.push_str(&held[keep..]);
            self.held = rest;
        }
        false
    }

    /// Ends the text: a held tail that never became a stop string is
    /// passed on.
    fn finish(&mut self, out: &mut impl FnMut(&str)) {
        if !self.stopped && !self.held.is_empty() {
            out(&self.held);
        }
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    fn stream(pieces: &[Piece<'_>]) -> String {
        let mut sink = TextSink::plain(String::new());
        for &p in pieces {
            let _ = sink.push(p);
        }
        sink.finish().unwrap();
        sink.into_inner()
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

    /// Pushes `chunks` through a [`TextSink`] ending at `stops`; returns the
    /// text passed on and whether it stopped.
    fn stopped(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let mut sink = TextSink::new(String::new(), stops).unwrap();
        let mut hit = false;
        for c in chunks {
            hit = sink.push(Piece::Text(c.as_bytes())).is_break();
        }
        sink.finish().unwrap();
        (sink.into_inner(), hit)
    }

    #[test]
    fn stop_strings_end_the_text_and_are_withheld() {
        let done = |t: &str| (String::from(t), true);
        let open = |t: &str| (String::from(t), false);
        assert_eq!(stopped(&[], &["a", "bc"]), open("abc"));
        assert_eq!(stopped(&["User:"], &["Hi. Us", "er: more"]), done("Hi. "));
        assert_eq!(stopped(&["User:"], &["Hi. Us", "ing"]), open("Hi. Using"));
        // A tail that fails one alignment may still start another.
        assert_eq!(stopped(&["aab"], &["a", "a", "a", "b", "c"]), done("a"));
        assert_eq!(stopped(&["xyz", "yq"], &["xy", "q!"]), done("x"));
        assert_eq!(stopped(&["é!"], &["café", "!x"]), done("caf"));
        assert_eq!(
            stopped(&["\n\n"], &["one\n", "two\n", "\nthree"]),
            done("one\ntwo")
        );
        // After a stop nothing more passes.
        assert_eq!(stopped(&["b"], &["ab", "cd"]), done("a"));
        assert!(TextSink::new(String::new(), &[""]).is_err());
        let long = "x".repeat(MAX_STOP_BYTES + 1);
        assert!(TextSink::new(String::new(), &[long.as_str()]).is_err());
    }

    /// A prompt's text stops nothing, but a character it leaves unfinished
    /// is completed by the generated text.
    #[test]
    fn echoed_text_is_never_a_stop() {
        let mut sink = TextSink::new(String::new(), &["up"]).unwrap();
        sink.echo(Piece::Text(b"once up"));
        sink.echo(Piece::Byte(0xC3));
        assert!(sink.push(Piece::Byte(0xA9)).is_continue());
        assert!(sink.push(Piece::Text(b" and up")).is_break());
        sink.finish().unwrap();
        assert_eq!(sink.into_inner(), "once up\u{e9} and ");
    }

    /// A writer with room for `.0` more bytes.
    struct Full(usize);

    impl fmt::Write for Full {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 = self.0.checked_sub(s.len()).ok_or(fmt::Error)?;
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_ends_the_text() {
        let mut sink = TextSink::plain(Full(3));
        assert!(sink.push(Piece::Text(b"abc")).is_continue());
        assert!(sink.push(Piece::Text(b"d")).is_break());
        assert!(sink.push(Piece::Text(b"")).is_break());
        assert_eq!(sink.finish(), Err(fmt::Error));
    }
}
