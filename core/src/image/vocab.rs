//! Vocabularies read in place: where one comes from ([`Vocab`]: a llama2.c
//! `tokenizer.bin` or a GGUF file's `tokenizer.ggml.*` entries), the
//! records of a `tokenizer.bin` (a score, a length and the piece's bytes,
//! after the longest piece's length), and the byte-token spelling both
//! families share. The tokenizer indexes these; the exporter copies them
//! into GGUF.

use crate::error::{Error, Result};
use crate::image::gguf::Gguf;
use crate::reader::Reader;

/// Where a vocabulary comes from.
#[derive(Clone, Copy, Debug)]
pub enum Vocab<'t> {
    /// The bytes of a llama2.c `tokenizer.bin`.
    Llama2c(&'t [u8]),
    /// The `tokenizer.ggml.*` metadata of a GGUF file.
    Gguf(Gguf<'t>),
}

/// Counts the pieces of a llama2.c `tokenizer.bin`, for when no model says
/// how many there are.
pub fn llama2c_vocab_size(bytes: &[u8]) -> Result<usize> {
    llama2c_records(bytes)?.try_fold(0, |n, p| p.map(|_| n + 1))
}

/// One piece of a llama2.c `tokenizer.bin`: its merge score and where its
/// bytes are in the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    pub score: f32,
    pub start: usize,
    pub len: usize,
}

impl Record {
    /// The piece's bytes in `file`, the tokenizer the record was read from.
    pub fn bytes(self, file: &[u8]) -> &[u8] {
        &file[self.start..self.start + self.len]
    }
}

/// The records of a llama2.c `tokenizer.bin`, in id order. A bad record
/// ends them: the reader does not move past it, so yielding again would
/// repeat its error for ever.
pub fn llama2c_records(bytes: &[u8]) -> Result<impl Iterator<Item = Result<Record>> + '_> {
    let mut r = Reader::new(bytes);
    let max_len = max_token_length(&mut r)?;
    let mut failed = false;
    Ok(core::iter::from_fn(move || {
        if failed || r.remaining() == 0 {
            return None;
        }
        let record = piece_record(&mut r, max_len);
        failed = record.is_err();
        Some(record)
    }))
}

fn max_token_length(r: &mut Reader<'_>) -> Result<usize> {
    let v = r.i32("tokenizer max_token_length")?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or(Error::Invalid {
            field: "tokenizer max_token_length",
            value: v.into(),
        })
}

/// One `(score: f32, len: i32, bytes)` record.
fn piece_record(r: &mut Reader<'_>, max_len: usize) -> Result<Record> {
    let score = r.f32("tokenizer score")?;
    let len = r.i32("tokenizer piece length")?;
    let n = usize::try_from(len)
        .ok()
        .filter(|&n| n <= max_len)
        .ok_or(Error::Mismatch {
            field: "tokenizer piece length",
            value: len.into(),
            rule: "is negative or exceeds",
            other: "max_token_length",
            other_value: max_len as i64,
        })?;
    let start = r.pos();
    r.take(n, "tokenizer piece")?;
    Ok(Record {
        score,
        start,
        len: n,
    })
}

/// Parses `"<0xNN>"` (either hex case), the spelling of byte tokens.
pub fn byte_piece(piece: &[u8]) -> Option<u8> {
    match piece {
        [b'<', b'0', b'x', hi, lo, b'>'] => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some((hex(*hi)? * 16 + hex(*lo)?) as u8)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces_parse_both_cases_only() {
        assert_eq!(byte_piece(b"<0x0A>"), Some(10));
        assert_eq!(byte_piece(b"<0xff>"), Some(255));
        assert_eq!(byte_piece(b"<0xG0>"), None);
        assert_eq!(byte_piece(b"<0x0A>x"), None);
    }

    /// A record cut short is the last one: counting does not spin on it.
    #[test]
    fn records_end_at_the_first_bad_one() {
        let mut bin = 4i32.to_le_bytes().to_vec();
        bin.extend_from_slice(&1f32.to_le_bytes());
        bin.extend_from_slice(&1i32.to_le_bytes());
        bin.extend_from_slice(b"a\0\0");
        let records: std::vec::Vec<_> = llama2c_records(&bin).unwrap().collect();
        assert_eq!(records.len(), 2);
        assert!(records[0].is_ok() && records[1].is_err());
    }
}
