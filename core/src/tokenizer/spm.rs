//! SentencePiece BPE encoding, as llama2.c's `encode()` and llama.cpp's
//! SPM tokenizer do it (they agree): a dummy leading space, one symbol per
//! UTF-8 character (bytes with no piece fall back to `<0xNN>` tokens), then
//! repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring piece, leftmost on ties. Pieces are found by binary
//! search in the sorted id list, without building the concatenation.

use core::cmp::Ordering;

use super::{Pieces, UNK};
use crate::error::{Error, Result};

/// Marks "no merge" in the pair table.
const NONE: u32 = u32::MAX;

/// Orders `piece` against the concatenation `a ++ b` without building it.
fn cmp_concat(piece: &[u8], a: &[u8], b: &[u8]) -> Ordering {
    let n = piece.len().min(a.len());
    match piece[..n].cmp(&a[..n]) {
        Ordering::Equal if piece.len() < a.len() => Ordering::Less,
        Ordering::Equal => piece[a.len()..].cmp(b),
        other => other,
    }
}

/// A SentencePiece vocabulary's index and the scratch of one encoding.
pub struct Spm<'a> {
    /// How pieces spell a space: `' '` in `tokenizer.bin`, `▁` in GGUF.
    pub space: &'static [u8],
    scores: &'a [f32],
    /// Ids that text may produce, sorted by piece bytes then id.
    sorted: &'a [u32],
    /// The token for each byte value, for characters with no piece.
    byte_ids: [u32; 256],
    /// The best merge of each symbol with the next, and its score.
    pair_ids: &'a mut [u32],
    pair_scores: &'a mut [f32],
}

/// The arena buffers [`Spm`] is built in: scores and the sorted ids per
/// vocabulary entry, the pair tables per symbol.
pub struct SpmBuffers<'a> {
    pub scores: &'a mut [f32],
    pub sorted: &'a mut [u32],
    pub pair_ids: &'a mut [u32],
    pub pair_scores: &'a mut [f32],
}

impl<'a> Spm<'a> {
    /// Sorts the ids for which `from_text` holds (those text may produce)
    /// and finds the byte-fallback tokens: `byte(id)` gives the byte of a
    /// byte token. `buf.scores` already holds the scores.
    pub fn new(
        pieces: &Pieces<'_, '_>,
        space: &'static [u8],
        buf: SpmBuffers<'a>,
        byte: impl Fn(u32) -> Option<u8>,
        from_text: impl Fn(u32) -> bool,
    ) -> Self {
        let SpmBuffers {
            scores,
            sorted,
            pair_ids,
            pair_scores,
        } = buf;
        let mut byte_ids = [UNK; 256];
        let mut n = 0;
        for id in 0..pieces.count() as u32 {
            if let Some(b) = byte(id) {
                if byte_ids[b as usize] == UNK {
                    byte_ids[b as usize] = id;
                }
            }
            if from_text(id) {
                sorted[n] = id;
                n += 1;
            }
        }
        let sorted = &mut sorted[..n];
        sorted.sort_unstable_by(|&x, &y| pieces.get(x).cmp(pieces.get(y)).then(x.cmp(&y)));
        Spm {
            space,
            scores,
            sorted,
            byte_ids,
            pair_ids,
            pair_scores,
        }
    }

    /// The lowest id whose piece is `a ++ b`, among those text may produce.
    fn lookup(&self, pieces: &Pieces<'_, '_>, a: &[u8], b: &[u8]) -> Option<u32> {
        let piece = |id: u32| pieces.get(id);
        let i = self
            .sorted
            .partition_point(|&id| cmp_concat(piece(id), a, b) == Ordering::Less);
        let id = *self.sorted.get(i)?;
        (cmp_concat(piece(id), a, b) == Ordering::Equal).then_some(id)
    }

    /// Encodes `text` (no special tokens in it), after the dummy leading
    /// space, into `out`; returns how many tokens it made. Invalid UTF-8
    /// is fine: bytes without a piece become byte tokens.
    pub fn encode(
        &mut self,
        pieces: &Pieces<'_, '_>,
        text: &[u8],
        out: &mut [u32],
    ) -> Result<usize> {
        let n = self.symbols(pieces, text, out)?;
        Ok(self.merge(pieces, out, n))
    }

    /// The initial symbols: the dummy prefix space, then one token per UTF-8
    /// character, or one per byte where the character has no piece.
    fn symbols(&self, pieces: &Pieces<'_, '_>, text: &[u8], out: &mut [u32]) -> Result<usize> {
        if text.is_empty() {
            return Ok(0);
        }
        let room = out.len().min(self.pair_ids.len());
        let mut n = 0;
        let mut push = |c: &[u8]| -> Result<()> {
            let c = if c == b" " { self.space } else { c };
            let id = self.lookup(pieces, c, b"");
            let count = if id.is_some() { 1 } else { c.len() };
            if n + count > room {
                return Err(Error::Misuse {
                    what: "tokenizer scratch for symbols",
                    value: (n + count) as i64,
                });
            }
            match id {
                Some(id) => out[n] = id,
                None => {
                    for (slot, &b) in out[n..n + count].iter_mut().zip(c) {
                        *slot = self.byte_ids[b as usize];
                    }
                }
            }
            n += count;
            Ok(())
        };
        push(b" ")?;
        let mut i = 0;
        while i < text.len() {
            // A character: any byte plus up to three continuation bytes.
            let mut j = i + 1;
            while j < text.len() && j - i < 4 && text[j] & 0xC0 == 0x80 {
                j += 1;
            }
            push(&text[i..j])?;
            i = j;
        }
        Ok(n)
    }

    /// The best merge of `ids[i]` with `ids[i + 1]`, if any.
    fn set_pair(&mut self, pieces: &Pieces<'_, '_>, ids: &[u32], i: usize) {
        let (a, b) = (pieces.get(ids[i]), pieces.get(ids[i + 1]));
        (self.pair_ids[i], self.pair_scores[i]) = match self.lookup(pieces, a, b) {
            Some(id) => (id, self.scores[id as usize]),
            None => (NONE, f32::NEG_INFINITY),
        };
    }

    /// Merges the highest-scoring adjacent pair (leftmost on ties) until
    /// none merges; returns the new length.
    fn merge(&mut self, pieces: &Pieces<'_, '_>, ids: &mut [u32], mut n: usize) -> usize {
        for i in 0..n.saturating_sub(1) {
            self.set_pair(pieces, ids, i);
        }
        while n > 1 {
            let mut best: Option<usize> = None;
            for i in 0..n - 1 {
                if self.pair_ids[i] != NONE
                    && best.is_none_or(|b| self.pair_scores[i] > self.pair_scores[b])
                {
                    best = Some(i);
                }
            }
            let Some(b) = best else { break };
            ids[b] = self.pair_ids[b];
            // Drop ids[b + 1] and the pair that started at it.
            ids.copy_within(b + 2..n, b + 1);
            if b + 2 < n {
                self.pair_ids.copy_within(b + 2..n - 1, b + 1);
                self.pair_scores.copy_within(b + 2..n - 1, b + 1);
            }
            n -= 1;
            if b > 0 {
                self.set_pair(pieces, ids, b - 1);
            }
            if b + 1 < n {
                self.set_pair(pieces, ids, b);
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_ordering_matches_a_built_string() {
        let cases: [(&[u8], &[u8], &[u8]); 7] = [
            (b"ab", b"a", b"b"),
            (b"a", b"a", b"b"),
            (b"abc", b"a", b"b"),
            (b"b", b"a", b"b"),
            (b"", b"", b""),
            (b"aa", b"ab", b""),
            (b"ab", b"", b"ab"),
        ];
        for (p, a, b) in cases {
            let mut joined = std::vec::Vec::from(a);
            joined.extend_from_slice(b);
            assert_eq!(cmp_concat(p, a, b), p.cmp(&joined[..]), "{p:?} {a:?} {b:?}");
        }
    }
}
