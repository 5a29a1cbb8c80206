//! Tokenizers over a vocabulary read in place: llama2.c's `tokenizer.bin`
//! or the `tokenizer.ggml.*` entries of a GGUF file. Two families, each
//! with a file of its own: [`spm`], SentencePiece BPE (llama2.c, Llama 2,
//! TinyLlama, Mistral 7B), and [`bpe`], byte-level BPE (Llama 3, SmolLM2),
//! whose text is first cut into words by a [`Pre`]-tokenizer. This module
//! holds what both share: the piece table, the special tokens (matched as
//! whole tokens before the family's encoder sees the text, as llama.cpp
//! does), the end-of-generation ids, and decoding a token to text. Every
//! table and all scratch live in the arena; the pieces stay in the file.

mod bpe;
mod pretokenize;
mod spm;
mod unicode;
mod unicode_table;

pub use bpe::BpeBuffers;
pub use pretokenize::Pre;
pub use spm::SpmBuffers;
pub use unicode::VERSION as UNICODE_VERSION;

use bpe::{char_byte, merge_slots, next_cp, token_slots, utf8, Bpe};
use spm::Spm;

use crate::error::{text, Error, Result};
use crate::image::gguf::{Gguf, ValueType};
use crate::image::vocab::{byte_piece, llama2c_records, llama2c_vocab_size, Record, Vocab};
use crate::reader::Reader;

/// llama2.c's fixed ids.
const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;
/// SentencePiece's space, U+2581.
const SPM_SPACE: &[u8] = "\u{2581}".as_bytes();
/// GGUF `token_type` values.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;
/// A text byte no special token claims, and one inside a claimed token.
const FREE: u32 = u32::MAX;
const CLAIMED: u32 = u32::MAX - 1;
/// Most end-of-generation ids a vocabulary may have.
const MAX_EOG: usize = 16;
/// The texts of tokens that end generation wherever they are, as llama.cpp
/// lists them (and the fill-in-the-middle markers it adds).
const EOG_TEXTS: [&[u8]; 19] = [
    b"<|eot_id|>",
    b"<|eom_id|>",
    b"<|im_end|>",
    b"<|end|>",
    b"<|endoftext|>",
    b"<|end_of_text|>",
    b"</s>",
    b"<end_of_turn>",
    b"<EOT>",
    b"_<EOT>",
    b"[EOT]",
    b"[EOS]",
    b"<eos>",
    b"<end_of_utterance>",
    b"<|fim_repo|>",
    b"<|repo_name|>",
    b"<reponame>",
    b"<|file_sep|>",
    b"<|fim_pad|>",
];

/// A tokenizer family and the size of its tables: what the plan sizes a
/// tokenizer's buffers by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Family {
    /// SentencePiece BPE: `tokenizer.bin`, GGUF `tokenizer.ggml.model = llama`.
    #[default]
    SentencePiece,
    /// Byte-level BPE with this many merges: GGUF `tokenizer.ggml.model = gpt2`.
    BytePairs { merges: usize },
}

impl Family {
    /// The kind of `vocab`.
    pub fn of(vocab: &Vocab<'_>) -> Result<Family> {
        let Vocab::Gguf(g) = vocab else {
            return Ok(Family::SentencePiece);
        };
        match g.string("tokenizer.ggml.model")?.unwrap_or(b"") {
            b"llama" => Ok(Family::SentencePiece),
            b"gpt2" => {
                let merges = g.array("tokenizer.ggml.merges", ValueType::String)?;
                let merges = merges.map_or(0, |(n, _)| n);
                Ok(Family::BytePairs {
                    merges: usize::try_from(merges).map_err(|_| Error::Overflow {
                        field: "tokenizer.ggml.merges",
                    })?,
                })
            }
            other => Err(Error::Text {
                field: "tokenizer.ggml.model",
                value: text(other),
                problem: "is not supported (llama: SentencePiece; gpt2: byte-level BPE)",
            }),
        }
    }

    /// The lengths of the buffers of a tokenizer of this kind for
    /// `vocab_size` pieces and prompts of up to `prompt_bytes` bytes.
    pub fn sizes(self, vocab_size: usize, prompt_bytes: usize) -> Option<Sizes> {
        // Up to three UTF-8 bytes per text byte (a byte that is not UTF-8
        // becomes U+FFFD), and BOS, EOS and a dummy prefix.
        let work = prompt_bytes.checked_mul(3)?.checked_add(4)?;
        let mut s = Sizes {
            vocab: vocab_size,
            work,
            prompt: prompt_bytes,
            ..Sizes::default()
        };
        match self {
            Family::SentencePiece => (s.spm_vocab, s.spm_work) = (vocab_size, work),
            Family::BytePairs { merges } => {
                s.token_slots = token_slots(vocab_size)?;
                s.merge_words = merge_slots(merges)?.checked_mul(4)?;
                (s.cps, s.links, s.heap) =
                    (prompt_bytes, work.checked_mul(2)?, work.checked_mul(3)?);
            }
        }
        Some(s)
    }
}

/// Buffer lengths, in elements, for [`TokenizerBuffers`] (see
/// [`Family::sizes`]); what the other kind does not use is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub vocab: usize,
    pub work: usize,
    pub prompt: usize,
    pub spm_vocab: usize,
    pub spm_work: usize,
    pub token_slots: usize,
    pub merge_words: usize,
    pub cps: usize,
    pub links: usize,
    pub heap: usize,
}

/// The tokenizer's buffers, carved from the arena by [`Family::sizes`].
pub struct TokenizerBuffers<'a> {
    /// Where each piece starts in the vocabulary's bytes, and its length.
    pub starts: &'a mut [u32],
    pub lens: &'a mut [u32],
    /// Special tokens, longest first.
    pub specials: &'a mut [u32],
    /// The encoded tokens.
    pub ids: &'a mut [u32],
    /// Which special token claims each byte of the text.
    pub claims: &'a mut [u32],
    pub spm: SpmBuffers<'a>,
    pub bpe: BpeBuffers<'a>,
}

/// The pieces of a vocabulary, as byte ranges of the file they are in.
pub struct Pieces<'t, 'a> {
    source: &'t [u8],
    starts: &'a [u32],
    lens: &'a [u32],
}

impl<'t> Pieces<'t, '_> {
    /// How many pieces there are.
    pub fn count(&self) -> usize {
        self.starts.len()
    }

    /// The bytes of piece `id`; none for an id outside the vocabulary.
    pub fn get(&self, id: u32) -> &'t [u8] {
        let at = id as usize;
        match (self.starts.get(at), self.lens.get(at)) {
            (Some(&s), Some(&n)) => &self.source[s as usize..s as usize + n as usize],
            _ => &[],
        }
    }
}

/// A family's encoder.
enum Encoder<'a> {
    Spm(Spm<'a>),
    Bpe(Bpe<'a>),
}

/// A tokenizer borrowing its pieces from the vocabulary's bytes.
pub struct Tokenizer<'t, 'a> {
    pieces: Pieces<'t, 'a>,
    /// GGUF `token_type` values (little-endian i32 per id), when present.
    types: &'t [u8],
    bos: u32,
    eos: u32,
    /// Whether an encoded prompt starts with BOS (GGUF `add_bos_token`;
    /// llama2.c always does) and ends with EOS.
    add_bos: bool,
    add_eos: bool,
    eog: heapless::Vec<u32, MAX_EOG>,
    specials: &'a [u32],
    claims: &'a mut [u32],
    ids: &'a mut [u32],
    encoder: Encoder<'a>,
}

impl<'t, 'a> Tokenizer<'t, 'a> {
    /// Reads `vocab`, which must have `vocab_size` pieces, into the planned
    /// buffers.
    pub fn new(vocab: Vocab<'t>, vocab_size: usize, buf: TokenizerBuffers<'a>) -> Result<Self> {
        match vocab {
            Vocab::Llama2c(bytes) => Self::from_llama2c(bytes, vocab_size, buf),
            Vocab::Gguf(g) => Self::from_gguf(&g, vocab_size, buf),
        }
    }

    /// Reads a llama2.c `tokenizer.bin` with exactly `vocab_size` pieces
    /// (the model's vocabulary) into the planned buffers.
    pub fn from_llama2c(
        bytes: &'t [u8],
        vocab_size: usize,
        buf: TokenizerBuffers<'a>,
    ) -> Result<Self> {
        check_buffers(&buf, vocab_size, Family::SentencePiece)?;
        // Encoding emits <unk> for unknown bytes and BOS/EOS around the
        // text: with fewer pieces those ids would index past the table.
        if vocab_size <= EOS as usize {
            return Err(Error::Mismatch {
                field: "tokenizer vocab_size",
                value: vocab_size as i64,
                rule: "has no room for",
                other: "llama2.c's EOS id",
                other_value: EOS.into(),
            });
        }
        let mut records = llama2c_records(bytes)?;
        for i in 0..vocab_size {
            let Some(record) = records.next() else {
                return Err(Error::Mismatch {
                    field: "tokenizer pieces",
                    value: i as i64,
                    rule: "differ from the model's",
                    other: "vocab_size",
                    other_value: vocab_size as i64,
                });
            };
            let Record { score, start, len } = record?;
            buf.spm.scores[i] = score;
            // A tokenizer is far below 4 GiB; refuse rather than wrap.
            buf.starts[i] = u32::try_from(start).map_err(|_| Error::Overflow {
                field: "tokenizer size",
            })?;
            buf.lens[i] = len as u32;
        }
        if records.next().is_some() {
            return Err(Error::Mismatch {
                field: "tokenizer pieces",
                value: llama2c_vocab_size(bytes)? as i64,
                rule: "differ from the model's",
                other: "vocab_size",
                other_value: vocab_size as i64,
            });
        }
        let pieces = Pieces {
            source: bytes,
            starts: buf.starts,
            lens: buf.lens,
        };
        let byte = |id: u32| byte_piece(pieces.get(id));
        let from_text = |id: u32| id > EOS && byte(id).is_none();
        let spm = Spm::new(&pieces, b" ", buf.spm, byte, from_text);
        Ok(Tokenizer {
            pieces,
            types: &[],
            bos: BOS,
            eos: EOS,
            add_bos: true,
            add_eos: false,
            // llama2.c's generation ends at BOS; EOS too, here.
            eog: [BOS, EOS].into_iter().collect(),
            specials: &[],
            claims: buf.claims,
            ids: buf.ids,
            encoder: Encoder::Spm(spm),
        })
    }

    /// Reads the vocabulary of a GGUF file, which must have `vocab_size`
    /// pieces, into the planned buffers.
    pub fn from_gguf(g: &Gguf<'t>, vocab_size: usize, buf: TokenizerBuffers<'a>) -> Result<Self> {
        let kind = Family::of(&Vocab::Gguf(*g))?;
        check_buffers(&buf, vocab_size, kind)?;
        let count = |what: &'static str, len: u64| -> Result<()> {
            if len == vocab_size as u64 {
                return Ok(());
            }
            Err(Error::Mismatch {
                field: what,
                value: len.min(i64::MAX as u64) as i64,
                rule: "entries differ from the model's",
                other: "vocab_size",
                other_value: vocab_size as i64,
            })
        };
        let (n, tokens) =
            g.array("tokenizer.ggml.tokens", ValueType::String)?
                .ok_or(Error::Text {
                    field: "metadata key",
                    value: text(b"tokenizer.ggml.tokens"),
                    problem: "is missing",
                })?;
        count("tokenizer.ggml.tokens", n)?;
        let base = tokens.as_ptr() as usize - g.bytes().as_ptr() as usize;
        let mut r = Reader::new(tokens);
        for i in 0..vocab_size {
            let len = r.u64("token length")? as usize;
            let start = base + r.pos();
            r.take(len, "token")?;
            (buf.starts[i], buf.lens[i]) = match (u32::try_from(start), u32::try_from(len)) {
                (Ok(s), Ok(l)) => (s, l),
                _ => {
                    return Err(Error::Overflow {
                        field: "tokenizer.ggml.tokens",
                    })
                }
            };
        }
        let types = match g.array("tokenizer.ggml.token_type", ValueType::I32)? {
            Some((n, types)) => {
                count("tokenizer.ggml.token_type", n)?;
                types
            }
            None => &[],
        };
        let id = |key: &'static str| -> Result<Option<u32>> {
            let Some(v) = g.uint(key)? else {
                return Ok(None);
            };
            match u32::try_from(v).ok().filter(|&v| (v as usize) < vocab_size) {
                Some(id) => Ok(Some(id)),
                None => Err(Error::Invalid {
                    field: key,
                    value: v.min(i64::MAX as u64) as i64,
                }),
            }
        };
        let pieces = Pieces {
            source: g.bytes(),
            starts: buf.starts,
            lens: buf.lens,
        };
        let TokenizerBuffers {
            specials,
            ids,
            claims,
            spm,
            bpe,
            ..
        } = buf;
        // llama.cpp's defaults where a key is missing: BOS 1 and EOS 2 for
        // SentencePiece, both 11 for byte-level BPE; BOS first for
        // SentencePiece and Llama 3's pre-tokenizer.
        let (encoder, (bos, eos), add_bos) = match kind {
            Family::SentencePiece => {
                match g.array("tokenizer.ggml.scores", ValueType::F32)? {
                    Some((n, scores)) => {
                        count("tokenizer.ggml.scores", n)?;
                        for (s, b) in spm.scores.iter_mut().zip(scores.chunks_exact(4)) {
                            *s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                    }
                    None => spm.scores.fill(0.0),
                }
                if g.boolean("tokenizer.ggml.add_space_prefix")? == Some(false) {
                    return Err(Error::Unsupported {
                        field: "tokenizer.ggml.add_space_prefix",
                        value: 0,
                    });
                }
                let byte = |id: u32| {
                    let byte_token = token_type(types, id).is_none_or(|t| t == TYPE_BYTE);
                    byte_piece(pieces.get(id)).filter(|_| byte_token)
                };
                let from_text = |id: u32| match token_type(types, id) {
                    Some(t) => t == TYPE_NORMAL || t == TYPE_USER_DEFINED,
                    None => byte_piece(pieces.get(id)).is_none(),
                };
                let spm = Spm::new(&pieces, SPM_SPACE, spm, byte, from_text);
                (Encoder::Spm(spm), (1, 2), true)
            }
            Family::BytePairs { .. } => {
                let pre = match g.string("tokenizer.ggml.pre")? {
                    None => Pre::Default,
                    Some(name) => Pre::from_name(name).ok_or(Error::Text {
                        field: "tokenizer.ggml.pre",
                        value: text(name),
                        problem: "is not a pre-tokenizer this engine knows \
                                  (llama-bpe, smollm, gpt-2, default)",
                    })?,
                };
                let bpe = Bpe::new(g, &pieces, pre, bpe)?;
                (Encoder::Bpe(bpe), (11, 11), pre == Pre::Llama3)
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?.unwrap_or(bos);
        let eos = id("tokenizer.ggml.eos_token_id")?.unwrap_or(eos);
        if bos as usize >= vocab_size || eos as usize >= vocab_size {
            return Err(Error::Invalid {
                field: "tokenizer.ggml.bos_token_id or eos_token_id",
                value: bos.max(eos).into(),
            });
        }
        // Special tokens, longest first, so that a longer one that holds a
        // shorter one's text wins (ties by id: llama.cpp leaves them open).
        let mut n = 0;
        for id in 0..vocab_size as u32 {
            if let Some(TYPE_UNKNOWN | TYPE_CONTROL | TYPE_USER_DEFINED) = token_type(types, id) {
                specials[n] = id;
                n += 1;
            }
        }
        let specials = &mut specials[..n];
        specials.sort_unstable_by_key(|&id| (core::cmp::Reverse(pieces.get(id).len()), id));
        // What ends generation: EOS, the end-of-turn and end-of-message
        // ids, the tokens llama.cpp recognizes by their text, and (as
        // llama2.c stops there) BOS for SentencePiece.
        let mut eog = heapless::Vec::<u32, MAX_EOG>::new();
        let named = (0..vocab_size as u32).filter(|&id| {
            let p = pieces.get(id);
            p.len() > 3 && b"<[_".contains(&p[0]) && EOG_TEXTS.contains(&p)
        });
        let keys = [
            id("tokenizer.ggml.eot_token_id")?,
            id("tokenizer.ggml.eom_token_id")?,
        ];
        let spm_bos = matches!(kind, Family::SentencePiece).then_some(bos);
        for id in [Some(eos), spm_bos]
            .into_iter()
            .chain(keys)
            .flatten()
            .chain(named)
        {
            if !eog.contains(&id) {
                let _ = eog.push(id);
            }
        }
        Ok(Tokenizer {
            pieces,
            types,
            bos,
            eos,
            add_bos: g
                .boolean("tokenizer.ggml.add_bos_token")?
                .unwrap_or(add_bos),
            add_eos: g.boolean("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            eog,
            specials,
            claims,
            ids,
            encoder,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.count()
    }

    /// Whether prompts start with [`Tokenizer::bos`].
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether prompts end with [`Tokenizer::eos`].
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    pub fn bos(&self) -> u32 {
        self.bos
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The ids that end generation.
    pub fn eog(&self) -> &[u32] {
        &self.eog
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The family, and the pre-tokenizer of a byte-level BPE vocabulary.
    pub fn family(&self) -> (&'static str, Option<Pre>) {
        match &self.encoder {
            Encoder::Spm(_) => ("SentencePiece BPE", None),
            Encoder::Bpe(b) => ("byte-level BPE", Some(b.pre)),
        }
    }

    /// The raw bytes of piece `id`; none for an id outside the vocabulary.
    pub fn piece(&self, id: u32) -> &'t [u8] {
        self.pieces.get(id)
    }

    /// The special token (control or user-defined) spelled `text`: a chat
    /// template's markers.
    pub fn special(&self, text: &[u8]) -> Option<u32> {
        let found = self.specials.iter().find(|&&id| self.piece(id) == text);
        found.copied()
    }

    /// Encodes a prompt, whose special tokens' texts are those tokens (as
    /// llama.cpp parses them): BOS first if `bos`, EOS last if `eos`. The
    /// tokens live in the tokenizer's scratch until the next call.
    pub fn encode(&mut self, text: &[u8], bos: bool, eos: bool) -> Result<&[u32]> {
        let mut n = usize::from(bos);
        if bos {
            self.ids[0] = self.bos;
        }
        n = self.encode_at(text, true, n)?;
        if eos {
            *self.ids.get_mut(n).ok_or(Error::PromptTooLong {
                bytes: text.len(),
                max: self.claims.len(),
            })? = self.eos;
            n += 1;
        }
        Ok(&self.ids[..n])
    }

    /// Encodes text as text: a control token's spelling in it is not that
    /// token (only user-defined tokens are matched, as in llama.cpp), so a
    /// chat user cannot end a turn by typing its marker.
    pub fn encode_text(&mut self, text: &[u8]) -> Result<&[u32]> {
        let n = self.encode_at(text, false, 0)?;
        Ok(&self.ids[..n])
    }

    /// Encodes `text` after the first `n` ids; returns the new count.
    fn encode_at(&mut self, text: &[u8], parse_special: bool, mut n: usize) -> Result<usize> {
        let Tokenizer {
            pieces,
            types,
            specials,
            claims,
            ids,
            encoder,
            ..
        } = self;
        let too_long = Error::PromptTooLong {
            bytes: text.len(),
            max: claims.len(),
        };
        let claims = claims.get_mut(..text.len()).ok_or(too_long.clone())?;
        claims.fill(FREE);
        for &id in specials.iter() {
            let user = token_type(types, id) == Some(TYPE_USER_DEFINED);
            let s = pieces.get(id);
            if s.is_empty() || !(parse_special || user) {
                continue;
            }
            // Every occurrence, left to right, in text no longer one has
            // claimed (llama.cpp's fragments).
            let mut i = 0;
            while i + s.len() <= text.len() {
                let at = i..i + s.len();
                if text[at.clone()] == *s && claims[at.clone()].iter().all(|&c| c == FREE) {
                    claims[at].fill(CLAIMED);
                    claims[i] = id;
                    i += s.len();
                } else {
                    i += 1;
                }
            }
        }
        let mut i = 0;
        while i < text.len() {
            let end = match claims[i] {
                FREE => {
                    let end = i + claims[i..].iter().take_while(|&&c| c == FREE).count();
                    let out = &mut ids[n..];
                    n += match encoder {
                        Encoder::Spm(spm) => spm.encode(pieces, &text[i..end], out)?,
                        Encoder::Bpe(bpe) => bpe.encode(pieces, &text[i..end], out)?,
                    };
                    end
                }
                id => {
                    *ids.get_mut(n).ok_or(too_long.clone())? = id;
                    n += 1;
                    i + 1
                        + claims[i + 1..]
                            .iter()
                            .take_while(|&&c| c == CLAIMED)
                            .count()
                }
            };
            i = end;
        }
        Ok(n)
    }

    /// The text of `token` when it follows `prev`. Control tokens (and ids
    /// outside the vocabulary) print nothing, byte tokens their byte.
    /// SentencePiece drops the leading space after BOS (its decoder does
    /// the same); byte-level BPE maps its characters back to bytes.
    pub fn decode(&self, prev: u32, token: u32) -> Piece<'t> {
        let piece = self.piece(token);
        let ty = token_type(self.types, token);
        let spm = match &self.encoder {
            Encoder::Spm(spm) => spm,
            Encoder::Bpe(_) => {
                return match ty {
                    Some(TYPE_NORMAL) | None => Piece::Bpe(piece),
                    Some(TYPE_USER_DEFINED) => Piece::Text(piece),
                    Some(TYPE_BYTE) => byte_piece(piece).map_or(Piece::Text(&[]), Piece::Byte),
                    _ => Piece::Text(&[]),
                };
            }
        };
        let control = ty.map(|t| t == TYPE_CONTROL);
        if token == self.bos || token == self.eos || control.unwrap_or(token == UNK) {
            return Piece::Text(&[]);
        }
        if let Some(b) = byte_piece(piece) {
            return Piece::Byte(b);
        }
        let piece = match piece.strip_prefix(spm.space) {
            Some(rest) if prev == self.bos => rest,
            _ => piece,
        };
        match spm.space {
            SPM_SPACE => Piece::Spm(piece),
            _ => Piece::Text(piece),
        }
    }
}

/// The GGUF type of token `id`, when the file has types.
fn token_type(types: &[u8], id: u32) -> Option<i32> {
    let b = types.get(4 * id as usize..4 * id as usize + 4)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The buffers must be the plan's for this vocabulary.
fn check_buffers(buf: &TokenizerBuffers<'_>, vocab_size: usize, kind: Family) -> Result<()> {
    let planned = match kind {
        Family::SentencePiece => buf.spm.scores.len() == vocab_size,
        Family::BytePairs { merges } => {
            Some(buf.bpe.by_text.len()) == token_slots(vocab_size)
                && merge_slots(merges).map(|s| 4 * s) == Some(buf.bpe.merges.len())
        }
    };
    if buf.starts.len() == vocab_size && planned {
        return Ok(());
    }
    Err(Error::Misuse {
        what: "tokenizer buffers planned for another vocabulary",
        value: vocab_size as i64,
    })
}

/// Decoded text of one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'t> {
    Text(&'t [u8]),
    /// SentencePiece text, whose `▁` are spaces.
    Spm(&'t [u8]),
    /// Byte-level BPE text: each character stands for a byte.
    Bpe(&'t [u8]),
    Byte(u8),
}

impl Piece<'_> {
    /// Hands the piece's bytes to `f`, in one or more slices.
    pub fn bytes(&self, mut f: impl FnMut(&[u8])) {
        match *self {
            Piece::Text(t) => f(t),
            Piece::Byte(b) => f(&[b]),
            Piece::Spm(mut t) => {
                while let Some(i) = t.windows(3).position(|w| w == SPM_SPACE) {
                    f(&t[..i]);
                    f(b" ");
                    t = &t[i + 3..];
                }
                f(t);
            }
            Piece::Bpe(mut t) => {
                while !t.is_empty() {
                    let (cp, len) = next_cp(t);
                    match char_byte(cp) {
                        Some(b) => f(&[b]),
                        None => {
                            let (u, n) = utf8(cp);
                            f(&u[..n]);
                        }
                    }
                    t = &t[len..];
                }
            }
        }
    }
}
