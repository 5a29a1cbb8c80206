//! Byte-level BPE (GGUF `tokenizer.ggml.model = "gpt2"`: Llama 3, SmolLM2,
//! Mistral Nemo …), as llama.cpp's tokenizer does it. A pre-tokenizer cuts
//! the text into words; each word's UTF-8 bytes become one symbol each,
//! spelled with GPT-2's byte-to-character map (every byte a printable
//! character, so tokens and merges are plain text); then the adjacent pair
//! of lowest merge rank merges, leftmost first, until none has a rank.
//!
//! Symbols are token ids from the start: every merge of the file must join
//! two tokens into a token (real vocabularies do; a file that does not is
//! refused), so a merge is a lookup of an id pair in a hash table, and the
//! text of a word is never built. A byte whose character is not a token
//! (SmolLM2 lacks 21) can merge with nothing and is dropped, as llama.cpp
//! drops it. All tables and scratch are the arena's, sized by the plan.

use super::pretokenize::Pre;
use super::Pieces;
use crate::error::{text, Error, Result};
use crate::image::gguf::{Gguf, ValueType};
use crate::reader::Reader;

/// An empty hash slot, and a byte with no token.
const NONE: u32 = u32::MAX;
/// A symbol merged into the one on its left.
const GONE: u32 = u32::MAX - 1;

/// The GPT-2 character of byte `b`: printable Latin-1 bytes stand for
/// themselves, the other 68 (controls, space, 0x7F–0xA0, soft hyphen) for
/// U+0100 onward in byte order, so a space is `Ġ` and a newline `Ċ`.
pub fn byte_char(b: u8) -> u32 {
    match b {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => u32::from(b),
        0x00..=0x20 => 0x100 + u32::from(b),
        0x7F..=0xA0 => 0x100 + 33 + u32::from(b - 0x7F),
        _ => 0x100 + 67,
    }
}

/// The byte that GPT-2 character `c` stands for.
pub fn char_byte(c: u32) -> Option<u8> {
    match c {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => u8::try_from(c).ok(),
        0x100..=0x120 => u8::try_from(c - 0x100).ok(),
        0x121..=0x142 => u8::try_from(c - 0x121 + 0x7F).ok(),
        0x143 => Some(0xAD),
        _ => None,
    }
}

/// The UTF-8 bytes of code point `c` (any value up to U+10FFFF, lone
/// surrogates included, as llama.cpp encodes them), and how many.
pub fn utf8(c: u32) -> ([u8; 4], usize) {
    let b = |shift: u32, mark: u32| (mark | (c >> shift) & 0x3F) as u8;
    match c {
        0..=0x7F => ([c as u8, 0, 0, 0], 1),
        0x80..=0x7FF => ([(0xC0 | c >> 6) as u8, b(0, 0x80), 0, 0], 2),
        0x800..=0xFFFF => ([(0xE0 | c >> 12) as u8, b(6, 0x80), b(0, 0x80), 0], 3),
        _ => (
            [(0xF0 | c >> 18) as u8, b(12, 0x80), b(6, 0x80), b(0, 0x80)],
            4,
        ),
    }
}

/// The first code point of `text` (not empty) and its length in bytes, as
/// llama.cpp decodes: a lead byte takes the continuation bytes it
/// announces (overlong forms and surrogates included); a byte that starts
/// no such sequence, and a sequence past U+10FFFF, is U+FFFD, one byte long.
pub fn next_cp(text: &[u8]) -> (u32, usize) {
    let b0 = u32::from(text[0]);
    let (len, lead) = match b0 {
        0x00..=0x7F => (1, 0x7F),
        0xC0..=0xDF => (2, 0x1F),
        0xE0..=0xEF => (3, 0x0F),
        0xF0..=0xF7 => (4, 0x07),
        _ => return (0xFFFD, 1),
    };
    match text.get(1..len) {
        Some(tail) if tail.iter().all(|b| b & 0xC0 == 0x80) => {
            let cp = tail
                .iter()
                .fold(b0 & lead, |cp, &b| cp << 6 | u32::from(b & 0x3F));
            if cp <= 0x10FFFF {
                (cp, len)
            } else {
                (0xFFFD, 1)
            }
        }
        _ => (0xFFFD, 1),
    }
}

/// Decodes `text` into `out` (room for a code point per byte) by
/// [`next_cp`]; returns the count.
pub fn decode_utf8(text: &[u8], out: &mut [u32]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < text.len() {
        let (cp, len) = next_cp(&text[i..]);
        out[n] = cp;
        (i, n) = (i + len, n + 1);
    }
    n
}

/// The bytes of `cps`' UTF-8 in GPT-2's spelling (as UTF-8): how a
/// vocabulary writes the word that `cps` are.
fn spelled(cps: &[u32]) -> impl Iterator<Item = u8> + Clone + '_ {
    cps.iter()
        .flat_map(|&c| {
            let (b, n) = utf8(c);
            b.into_iter().take(n)
        })
        .flat_map(|b| {
            let (s, n) = utf8(byte_char(b));
            s.into_iter().take(n)
        })
}

/// FNV-1a, 64 bits: the token table's hash of a text.
fn hash_text(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The merge table's hash of an id pair: the high half of a
/// multiplicative hash (its low bits would depend on `right`'s alone).
fn hash_pair(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32 | u64::from(right)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

/// Slots of the token table for `vocab` tokens: a power of two at least
/// twice as many, so probes stay short.
pub fn token_slots(vocab: usize) -> Option<usize> {
    vocab.checked_mul(2)?.checked_next_power_of_two()
}

/// Slots of the merge table for `merges` merges (four words each), at
/// most two-thirds full.
pub fn merge_slots(merges: usize) -> Option<usize> {
    merges
        .checked_add(merges / 2 + 1)?
        .checked_next_power_of_two()
}

/// A byte-level BPE vocabulary's tables, with the pre-tokenizer and the
/// scratch of one encoding.
pub struct Bpe<'a> {
    pub pre: Pre,
    tables: Tables<'a>,
    /// The code points of the text being encoded.
    cps: &'a mut [u32],
    scratch: Scratch<'a>,
}

/// What a word's merges look up.
struct Tables<'a> {
    /// Llama 3: a word that is a token whole is that token, unmerged.
    ignore_merges: bool,
    /// Token ids by the hash of their text; [`NONE`] marks a free slot.
    by_text: &'a mut [u32],
    /// Merges by the hash of their id pair, four words a slot: left,
    /// right, rank, merged id; a free slot's left is [`NONE`].
    merges: &'a mut [u32],
    /// The token of each byte's character, or [`NONE`].
    byte_ids: [u32; 256],
}

/// A word's merge state.
struct Scratch<'a> {
    /// Symbol links: `prev` for the first half of the slots, `next` after.
    links: &'a mut [u32],
    /// Pairs that may merge, as `rank << 32 | left`: a min-heap.
    heap: &'a mut [u64],
}

/// The arena buffers [`Bpe`] is built in: the tables ([`token_slots`],
/// [`merge_slots`] four words each), a code point per text byte, and per
/// symbol two links and three heap entries.
pub struct BpeBuffers<'a> {
    pub by_text: &'a mut [u32],
    pub merges: &'a mut [u32],
    pub cps: &'a mut [u32],
    pub links: &'a mut [u32],
    pub heap: &'a mut [u64],
}

impl<'a> Bpe<'a> {
    /// Indexes the tokens of `pieces` and the merges of `g` (as many as
    /// the buffers were planned for).
    pub fn new(
        g: &Gguf<'_>,
        pieces: &Pieces<'_, '_>,
        pre: Pre,
        buf: BpeBuffers<'a>,
    ) -> Result<Self> {
        let mut t = Tables {
            ignore_merges: pre == Pre::Llama3,
            by_text: buf.by_text,
            merges: buf.merges,
            byte_ids: [NONE; 256],
        };
        t.by_text.fill(NONE);
        for id in 0..pieces.count() as u32 {
            t.insert_token(pieces, id);
        }
        for b in 0..=255u8 {
            let (c, n) = utf8(byte_char(b));
            t.byte_ids[b as usize] = t.token(pieces, c[..n].iter().copied()).unwrap_or(NONE);
        }
        t.merges.fill(NONE);
        let (count, data) = g
            .array("tokenizer.ggml.merges", ValueType::String)?
            .unwrap_or((0, &[]));
        if merge_slots(count as usize) != Some(t.merges.len() / 4) {
            return Err(Error::Misuse {
                what: "tokenizer buffers planned for another merge count",
                value: count.min(i64::MAX as u64) as i64,
            });
        }
        let mut r = Reader::new(data);
        for rank in 0..count as u32 {
            let len = usize::try_from(r.u64("merge length")?).unwrap_or(usize::MAX);
            t.insert_merge(pieces, r.take(len, "merge")?, rank)?;
        }
        Ok(Bpe {
            pre,
            tables: t,
            cps: buf.cps,
            scratch: Scratch {
                links: buf.links,
                heap: buf.heap,
            },
        })
    }

    /// Encodes `text` (no special tokens in it) into `out`; returns how
    /// many tokens it made.
    pub fn encode(
        &mut self,
        pieces: &Pieces<'_, '_>,
        text: &[u8],
        out: &mut [u32],
    ) -> Result<usize> {
        let Bpe {
            pre,
            tables,
            cps,
            scratch,
        } = self;
        let n = decode_utf8(text, cps);
        let cps = &cps[..n];
        let mut at = 0;
        pre.split(cps, &mut |word| {
            at += tables.word(pieces, &cps[word], scratch, &mut out[at..])?;
            Ok(())
        })?;
        Ok(at)
    }
}

impl Tables<'_> {
    /// Adds token `id` under its text; a later token of the same text
    /// takes its place, as in llama.cpp's map.
    fn insert_token(&mut self, pieces: &Pieces<'_, '_>, id: u32) {
        let text = pieces.get(id);
        let mask = self.by_text.len() - 1;
        let mut slot = hash_text(text.iter().copied()) as usize & mask;
        while self.by_text[slot] != NONE && pieces.get(self.by_text[slot]) != text {
            slot = (slot + 1) & mask;
        }
        self.by_text[slot] = id;
    }

    /// The token whose text is `text`.
    fn token(
        &self,
        pieces: &Pieces<'_, '_>,
        text: impl Iterator<Item = u8> + Clone,
    ) -> Option<u32> {
        let mask = self.by_text.len() - 1;
        let mut slot = hash_text(text.clone()) as usize & mask;
        loop {
            match self.by_text[slot] {
                NONE => return None,
                id if pieces.get(id).iter().copied().eq(text.clone()) => return Some(id),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Adds merge `"A B"` of rank `rank`: A and B split at the first space
    /// after the first byte; A, B and AB must all be tokens. Of two equal
    /// merges the first keeps its rank, as in llama.cpp; a merge without
    /// a space can never apply.
    fn insert_merge(&mut self, pieces: &Pieces<'_, '_>, merge: &[u8], rank: u32) -> Result<()> {
        let Some(space) = merge.iter().skip(1).position(|&b| b == b' ') else {
            return Ok(());
        };
        let (a, b) = (&merge[..space + 1], &merge[space + 2..]);
        let id = |t: &[u8]| self.token(pieces, t.iter().copied());
        let joined = self.token(pieces, a.iter().chain(b).copied());
        let (Some(left), Some(right), Some(merged)) = (id(a), id(b), joined) else {
            return Err(Error::Text {
                field: "tokenizer.ggml.merges",
                value: text(merge),
                problem: "joins pieces that are not tokens",
            });
        };
        let mask = self.merges.len() / 4 - 1;
        let mut slot = hash_pair(left, right) as usize & mask;
        loop {
            let s = &mut self.merges[4 * slot..4 * slot + 4];
            if s[0] == NONE {
                s.copy_from_slice(&[left, right, rank, merged]);
                return Ok(());
            }
            if s[..2] == [left, right] {
                return Ok(());
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The rank of merging `left` with `right`, and the token they make.
    fn merge(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        if left >= GONE || right >= GONE {
            return None;
        }
        let mask = self.merges.len() / 4 - 1;
        let mut slot = hash_pair(left, right) as usize & mask;
        loop {
            let s = &self.merges[4 * slot..4 * slot + 4];
            match s[0] {
                NONE => return None,
                _ if s[..2] == [left, right] => return Some((s[2], s[3])),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Encodes one word, the code points `cps`, into `out`; returns how
    /// many tokens it made.
    fn word(
        &self,
        pieces: &Pieces<'_, '_>,
        cps: &[u32],
        s: &mut Scratch<'_>,
        out: &mut [u32],
    ) -> Result<usize> {
        if self.ignore_merges {
            if let Some(id) = self.token(pieces, spelled(cps)) {
                *out.first_mut().ok_or(Error::Misuse {
                    what: "tokenizer output room",
                    value: 0,
                })? = id;
                return Ok(1);
            }
        }
        // One symbol per byte, linked in order.
        let mut n = 0;
        for &c in cps {
            let (b, len) = utf8(c);
            for &b in &b[..len] {
                let room = out.len().min(s.links.len() / 2).min(s.heap.len() / 3);
                if n == room {
                    return Err(Error::Misuse {
                        what: "tokenizer scratch for a word of bytes",
                        value: n as i64,
                    });
                }
                out[n] = self.byte_ids[b as usize];
                n += 1;
            }
        }
        let half = s.links.len() / 2;
        let (prev, next) = s.links.split_at_mut(half);
        for i in 0..n {
            prev[i] = if i == 0 { NONE } else { i as u32 - 1 };
            next[i] = if i + 1 == n { NONE } else { i as u32 + 1 };
        }
        let mut heap = Heap {
            items: s.heap,
            len: 0,
        };
        let pair = |out: &[u32], left: u32, right: u32| {
            let rank = self.merge(out[left as usize], out[right as usize])?.0;
            Some(u64::from(rank) << 32 | u64::from(left))
        };
        for i in 1..n as u32 {
            if let Some(p) = pair(out, i - 1, i) {
                heap.push(p);
            }
        }
        // Lowest rank first, leftmost on ties; an entry whose pair has
        // changed since it was pushed is stale and skipped.
        while let Some(top) = heap.pop() {
            let (rank, left) = ((top >> 32) as u32, top as u32);
            let right = next[left as usize];
            if right == NONE {
                continue;
            }
            let Some((r, merged)) = self.merge(out[left as usize], out[right as usize]) else {
                continue;
            };
            if r != rank {
                continue;
            }
            out[left as usize] = merged;
            out[right as usize] = GONE;
            let after = next[right as usize];
            next[left as usize] = after;
            if after != NONE {
                prev[after as usize] = left;
            }
            let before = prev[left as usize];
            if before != NONE {
                if let Some(p) = pair(out, before, left) {
                    heap.push(p);
                }
            }
            if after != NONE {
                if let Some(p) = pair(out, left, after) {
                    heap.push(p);
                }
            }
        }
        // The surviving symbols, in order; a byte with no token is dropped.
        let mut kept = 0;
        let mut i = if n == 0 { NONE } else { 0 };
        while i != NONE {
            if out[i as usize] < GONE {
                out[kept] = out[i as usize];
                kept += 1;
            }
            i = next[i as usize];
        }
        Ok(kept)
    }
}

/// A binary min-heap in arena memory.
struct Heap<'h> {
    items: &'h mut [u64],
    len: usize,
}

impl Heap<'_> {
    /// Adds `v`; the caller sized the heap for every push (three per
    /// symbol: a pair to start with and two after each merge).
    fn push(&mut self, v: u64) {
        let mut i = self.len;
        self.items[i] = v;
        self.len += 1;
        while i > 0 && self.items[(i - 1) / 2] > self.items[i] {
            self.items.swap(i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
    }

    fn pop(&mut self) -> Option<u64> {
        let top = *self.items[..self.len].first()?;
        self.len -= 1;
        self.items[0] = self.items[self.len];
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.len && self.items[l] < self.items[m] {
                m = l;
            }
            if r < self.len && self.items[r] < self.items[m] {
                m = r;
            }
            if m == i {
                return Some(top);
            }
            self.items.swap(i, m);
            i = m;
        }
    }
}
