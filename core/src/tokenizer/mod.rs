//! Tokenizers over a vocabulary read in place: llama2.c's `tokenizer.bin`
//! (pieces spell spaces as `' '`) or the `tokenizer.ggml.*` arrays of a
//! GGUF file (SentencePiece's `▁`). This module holds what every family
//! shares — the piece index, the special ids, decoding a token to text —
//! and each family's encoder has a file of its own: [`spm`], SentencePiece
//! BPE. Only the index (piece offsets, scores, a sorted id list) and the
//! encoder's scratch live in the arena; the pieces stay in the file's bytes.

mod spm;

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
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// The tokenizer's piece index and its merge scratch.
pub struct TokenizerBuffers<'a> {
    pub starts: &'a mut [u32],
    pub lens: &'a mut [u32],
    pub scores: &'a mut [f32],
    pub sorted: &'a mut [u32],
    pub ids: &'a mut [u32],
    pub pair_ids: &'a mut [u32],
    pub pair_scores: &'a mut [f32],
}

/// A BPE tokenizer borrowing its pieces from `source`.
pub struct Tokenizer<'t, 'a> {
    source: &'t [u8],
    starts: &'a [u32],
    lens: &'a [u32],
    scores: &'a [f32],
    /// Ids that text may produce, sorted by piece bytes then id.
    sorted: &'a [u32],
    ids: &'a mut [u32],
    pair_ids: &'a mut [u32],
    pair_scores: &'a mut [f32],
    /// The token for each byte value, for characters with no piece.
    byte_ids: [u32; 256],
    /// How pieces spell a space.
    space: &'static [u8],
    bos: u32,
    eos: u32,
    /// Whether a prompt starts with `bos` (GGUF `add_bos_token`; llama2.c
    /// always does).
    add_bos: bool,
    /// GGUF `token_type` values (little-endian i32 per id), when present.
    types: &'t [u8],
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
        check_buffers(&buf, vocab_size)?;
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
            buf.scores[i] = score;
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
        Ok(Self::index(
            bytes,
            buf,
            vocab_size,
            b" ",
            (BOS, EOS),
            &[],
            |id, piece| id > EOS && byte_piece(piece).is_none(),
        ))
    }

    /// Reads the SentencePiece vocabulary of a GGUF file
    /// (`tokenizer.ggml.model` = `llama`), which must have `vocab_size`
    /// pieces, into the planned buffers.
    pub fn from_gguf(g: &Gguf<'t>, vocab_size: usize, buf: TokenizerBuffers<'a>) -> Result<Self> {
        check_buffers(&buf, vocab_size)?;
        let model = g.string("tokenizer.ggml.model")?.unwrap_or(b"");
        if model != b"llama" {
            return Err(Error::Text {
                field: "tokenizer.ggml.model",
                value: text(model),
                problem: "is not supported (only llama, SentencePiece BPE)",
            });
        }
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
        match g.array("tokenizer.ggml.scores", ValueType::F32)? {
            Some((n, scores)) => {
                count("tokenizer.ggml.scores", n)?;
                for (s, b) in buf.scores.iter_mut().zip(scores.chunks_exact(4)) {
                    *s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            None => buf.scores.fill(0.0),
        }
        let types = match g.array("tokenizer.ggml.token_type", ValueType::I32)? {
            Some((n, types)) => {
                count("tokenizer.ggml.token_type", n)?;
                types
            }
            None => &[],
        };
        let id = |key: &'static str, default: u64| -> Result<u32> {
            let v = g.uint(key)?.unwrap_or(default);
            u32::try_from(v)
                .ok()
                .filter(|&v| (v as usize) < vocab_size)
                .ok_or(Error::Invalid {
                    field: key,
                    value: v.min(i64::MAX as u64) as i64,
                })
        };
        let ends = (
            id("tokenizer.ggml.bos_token_id", 1)?,
            id("tokenizer.ggml.eos_token_id", 2)?,
        );
        if g.boolean("tokenizer.ggml.add_space_prefix")? == Some(false) {
            return Err(Error::Unsupported {
                field: "tokenizer.ggml.add_space_prefix",
                value: 0,
            });
        }
        let from_text = |id: u32, piece: &[u8]| match token_type(types, id) {
            Some(t) => t == TYPE_NORMAL || t == TYPE_USER_DEFINED,
            None => byte_piece(piece).is_none(),
        };
        let mut t = Self::index(
            g.bytes(),
            buf,
            vocab_size,
            SPM_SPACE,
            ends,
            types,
            from_text,
        );
        t.add_bos = g.boolean("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
        Ok(t)
    }

    /// Sorts the text-producible ids and finds the byte-fallback tokens.
    fn index(
        source: &'t [u8],
        buf: TokenizerBuffers<'a>,
        vocab_size: usize,
        space: &'static [u8],
        (bos, eos): (u32, u32),
        types: &'t [u8],
        from_text: impl Fn(u32, &[u8]) -> bool,
    ) -> Self {
        let TokenizerBuffers {
            starts,
            lens,
            scores,
            sorted,
            ids,
            pair_ids,
            pair_scores,
        } = buf;
        let piece = |id: u32| {
            let s = starts[id as usize] as usize;
            &source[s..s + lens[id as usize] as usize]
        };
        let mut byte_ids = [UNK; 256];
        let mut n = 0;
        for id in 0..vocab_size as u32 {
            let byte_token = token_type(types, id).is_none_or(|t| t == TYPE_BYTE);
            if let Some(b) = byte_piece(piece(id)).filter(|_| byte_token) {
                if byte_ids[b as usize] == UNK {
                    byte_ids[b as usize] = id;
                }
            }
            if from_text(id, piece(id)) {
                sorted[n] = id;
                n += 1;
            }
        }
        let sorted = &mut sorted[..n];
        sorted.sort_unstable_by(|&x, &y| piece(x).cmp(piece(y)).then(x.cmp(&y)));
        Tokenizer {
            source,
            starts,
            lens,
            scores,
            sorted,
            ids,
            pair_ids,
            pair_scores,
            byte_ids,
            space,
            bos,
            eos,
            add_bos: true,
            types,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.scores.len()
    }

    /// Whether prompts start with [`Tokenizer::bos`].
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn bos(&self) -> u32 {
        self.bos
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The raw bytes of piece `id`; none for an id outside the vocabulary.
    pub fn piece(&self, id: u32) -> &'t [u8] {
        let at = id as usize;
        match (self.starts.get(at), self.lens.get(at)) {
            (Some(&s), Some(&n)) => &self.source[s as usize..s as usize + n as usize],
            _ => &[],
        }
    }

    /// The text of `token` when it follows `prev`: the leading space after
    /// BOS is dropped (SentencePiece's decoder does the same), byte tokens
    /// become their byte, and control tokens (and ids outside the
    /// vocabulary) print nothing.
    pub fn decode(&self, prev: u32, token: u32) -> Piece<'t> {
        let piece = self.piece(token);
        let control = token_type(self.types, token).map(|t| t == TYPE_CONTROL);
        if token == self.bos || token == self.eos || control.unwrap_or(token == UNK) {
            return Piece::Text(&[]);
        }
        if let Some(b) = byte_piece(piece) {
            return Piece::Byte(b);
        }
        let piece = match piece.strip_prefix(self.space) {
            Some(rest) if prev == self.bos => rest,
            _ => piece,
        };
        match self.space {
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

fn check_buffers(buf: &TokenizerBuffers<'_>, vocab_size: usize) -> Result<()> {
    if buf.starts.len() == vocab_size {
        return Ok(());
    }
    Err(Error::Misuse {
        what: "tokenizer buffers planned for another vocabulary size",
        value: vocab_size as i64,
    })
}

/// Decoded text of one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'t> {
    Text(&'t [u8]),
    /// SentencePiece text, whose `▁` are spaces.
    Spm(&'t [u8]),
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
        }
    }
}
