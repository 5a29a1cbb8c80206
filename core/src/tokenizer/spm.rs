//! SentencePiece BPE encoding, as llama2.c's `encode()` and llama.cpp's
//! SPM tokenizer do it (they agree): a dummy leading space, one symbol per
//! UTF-8 character (bytes with no piece fall back to `<0xNN>` tokens), then
//! repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring piece, leftmost on ties. Pieces are found by binary
//! search in the sorted id list, without building the concatenation.

use core::cmp::Ordering;

use super::Tokenizer;
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

impl Tokenizer<'_, '_> {
    /// The lowest id whose piece is `a ++ b`, among those text may produce.
    fn lookup(&self, a: &[u8], b: &[u8]) -> Option<u32> {
        let i = self
            .sorted
            .partition_point(|&id| cmp_concat(self.piece(id), a, b) == Ordering::Less);
        let id = *self.sorted.get(i)?;
        (cmp_concat(self.piece(id), a, b) == Ordering::Equal).then_some(id)
    }

    /// Encodes `text` (BOS first if `bos`, EOS last if `eos`). The tokens
    /// live in the tokenizer's scratch until the next call. Invalid UTF-8 is
    /// fine: bytes without a piece become byte tokens.
    pub fn encode(&mut self, text: &[u8], bos: bool, eos: bool) -> Result<&[u32]> {
        let n = self.symbols(text)?;
        let mut n = self.merge(n);
        if bos {
            self.ids.copy_within(0..n, 1);
            self.ids[0] = self.bos;
            n += 1;
        }
        if eos {
            self.ids[n] = self.eos;
            n += 1;
        }
        Ok(&self.ids[..n])
    }

    /// The initial symbols: the dummy prefix space, then one token per UTF-8
    /// character, or one per byte where the character has no piece.
    fn symbols(&mut self, text: &[u8]) -> Result<usize> {
        // The plan gives one slot per prompt byte, plus the dummy prefix,
        // BOS, EOS and one spare.
        let planned = self.ids.len().saturating_sub(4);
        let room = self.ids.len().saturating_sub(2);
        let too_long = Error::PromptTooLong {
            bytes: text.len(),
            max: planned,
        };
        if text.len() > planned {
            return Err(too_long);
        }
        if text.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        let mut push = |t: &mut Self, c: &[u8]| -> Result<()> {
            let c = if c == b" " { t.space } else { c };
            let id = t.lookup(c, b"");
            let count = if id.is_some() { 1 } else { c.len() };
            if n + count > room {
                return Err(too_long.clone());
            }
            match id {
                Some(id) => t.ids[n] = id,
                None => {
                    for (slot, &b) in t.ids[n..n + count].iter_mut().zip(c) {
                        *slot = t.byte_ids[b as usize];
                    }
                }
            }
            n += count;
            Ok(())
        };
        push(self, b" ")?;
        let mut i = 0;
        while i < text.len() {
            // A character: any byte plus up to three continuation bytes.
            let mut j = i + 1;
            while j < text.len() && j - i < 4 && text[j] & 0xC0 == 0x80 {
                j += 1;
            }
            push(self, &text[i..j])?;
            i = j;
        }
        Ok(n)
    }

    /// The best merge of `ids[i]` with `ids[i + 1]`, if any.
    fn pair(&self, i: usize) -> (u32, f32) {
        match self.lookup(self.piece(self.ids[i]), self.piece(self.ids[i + 1])) {
            Some(id) => (id, self.scores[id as usize]),
            None => (NONE, f32::NEG_INFINITY),
        }
    }

    fn set_pair(&mut self, i: usize) {
        let (id, score) = self.pair(i);
        self.pair_ids[i] = id;
        self.pair_scores[i] = score;
    }

    /// Merges the highest-scoring adjacent pair (leftmost on ties) until
    /// none merges; returns the new length.
    fn merge(&mut self, mut n: usize) -> usize {
        for i in 0..n.saturating_sub(1) {
            self.set_pair(i);
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
            self.ids[b] = self.pair_ids[b];
            // Drop ids[b + 1] and the pair that started at it.
            self.ids.copy_within(b + 2..n, b + 1);
            if b + 2 < n {
                self.pair_ids.copy_within(b + 2..n - 1, b + 1);
                self.pair_scores.copy_within(b + 2..n - 1, b + 1);
            }
            n -= 1;
            if b > 0 {
                self.set_pair(b - 1);
            }
            if b + 1 < n {
                self.set_pair(b);
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
