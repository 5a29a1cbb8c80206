//! The pre-tokenizers of the byte-level BPE family: each cuts text into
//! the words that BPE then merges within, as llama.cpp cuts it for the
//! GGUF `tokenizer.ggml.pre` name. llama.cpp writes the Llama 3 and GPT-2
//! patterns as hand-written matchers over code points, and so does this
//! file; the simpler patterns of its cascades (a class of code points,
//! once or in a run) become small stages of their own. Every code point
//! of the text lands in exactly one word.

use core::ops::Range;

use super::unicode::{class, Class};
use crate::error::Result;

/// A pre-tokenizer: llama.cpp's pre-type for a `tokenizer.ggml.pre` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pre {
    /// `llama-bpe` (also `llama3`, `llama-v3`): Llama 3's pattern.
    Llama3,
    /// `smollm`: every number alone, then the GPT-2 pattern.
    Smollm,
    /// `gpt-2`: the GPT-2 pattern.
    Gpt2,
    /// `default` or no name: punctuation runs apart, then the GPT-2
    /// pattern, then number runs, then groups of three ASCII digits.
    Default,
}

/// Where a stage sends each word (or piece, for the next stage).
pub type Words<'w> = dyn FnMut(Range<usize>) -> Result<()> + 'w;

impl Pre {
    /// The pre-tokenizer named `name`; `None` for a name llama.cpp does
    /// not know either (which it refuses too).
    pub fn from_name(name: &[u8]) -> Option<Pre> {
        match name {
            b"llama-bpe" | b"llama3" | b"llama-v3" => Some(Pre::Llama3),
            b"smollm" => Some(Pre::Smollm),
            b"gpt-2" => Some(Pre::Gpt2),
            b"default" => Some(Pre::Default),
            _ => None,
        }
    }

    /// The name `inspect` shows.
    pub fn name(self) -> &'static str {
        match self {
            Pre::Llama3 => "llama-bpe",
            Pre::Smollm => "smollm",
            Pre::Gpt2 => "gpt-2",
            Pre::Default => "default",
        }
    }

    /// Cuts the code points `cps` into words, in order.
    pub fn split(self, cps: &[u32], word: &mut Words<'_>) -> Result<()> {
        let all = 0..cps.len();
        match self {
            Pre::Llama3 => llama3(cps, all, word),
            Pre::Gpt2 => gpt2(cps, all, word),
            Pre::Smollm => stage(cps, all, one_number, &mut |p| gpt2(cps, p, word)),
            Pre::Default => stage(cps, all, punctuation_run, &mut |p| {
                gpt2(cps, p, &mut |p| {
                    stage(cps, p, number_run, &mut |p| {
                        stage(cps, p, three_digits, word)
                    })
                })
            }),
        }
    }
}

/// A regex stage: the leftmost matches of `at` (the end of a match
/// starting at a position, if one does) and the stretches between them
/// go on as pieces, in order.
fn stage(
    cps: &[u32],
    piece: Range<usize>,
    at: fn(&[u32], usize) -> Option<usize>,
    next: &mut Words<'_>,
) -> Result<()> {
    let cps = &cps[..piece.end];
    let (mut gap, mut pos) = (piece.start, piece.start);
    while pos < piece.end {
        match at(cps, pos) {
            Some(end) => {
                if gap < pos {
                    next(gap..pos)?;
                }
                next(pos..end)?;
                (gap, pos) = (end, end);
            }
            None => pos += 1,
        }
    }
    if gap < piece.end {
        next(gap..piece.end)?;
    }
    Ok(())
}

/// The end of the run of code points from `pos` that `keep` accepts.
fn run_end(cps: &[u32], mut pos: usize, keep: impl Fn(u32) -> bool) -> usize {
    while cps.get(pos).is_some_and(|&c| keep(c)) {
        pos += 1;
    }
    pos
}

/// `\p{N}`.
fn one_number(cps: &[u32], pos: usize) -> Option<usize> {
    (class(cps[pos]) == Class::Number).then_some(pos + 1)
}

/// `\p{N}+`.
fn number_run(cps: &[u32], pos: usize) -> Option<usize> {
    let end = run_end(cps, pos, |c| class(c) == Class::Number);
    (end > pos).then_some(end)
}

/// `[\p{P}\$\+<=>\^~\|]+`.
fn punctuation_run(cps: &[u32], pos: usize) -> Option<usize> {
    let symbol = |c: u32| b"$+<=>^~|".iter().any(|&s| u32::from(s) == c);
    let end = run_end(cps, pos, |c| class(c) == Class::Punctuation || symbol(c));
    (end > pos).then_some(end)
}

/// `[0-9][0-9][0-9]`.
fn three_digits(cps: &[u32], pos: usize) -> Option<usize> {
    let digits = cps.get(pos..pos + 3)?;
    digits
        .iter()
        .all(|&c| (u32::from(b'0')..=u32::from(b'9')).contains(&c))
        .then_some(pos + 3)
}

/// One piece's code points as the matchers see them: classes inside the
/// piece, nothing past either end (so a pattern never looks across it).
struct Cursor<'c> {
    cps: &'c [u32],
    piece: Range<usize>,
}

impl Cursor<'_> {
    fn cp(&self, pos: usize) -> Option<u32> {
        self.piece.contains(&pos).then(|| self.cps[pos])
    }

    fn class(&self, pos: usize) -> Option<Class> {
        self.cp(pos).map(class)
    }

    fn is(&self, pos: usize, c: Class) -> bool {
        self.class(pos) == Some(c)
    }

    /// Neither whitespace, letter nor number: `[^\s\p{L}\p{N}]`.
    fn other(&self, pos: usize) -> bool {
        matches!(self.class(pos), Some(Class::Punctuation | Class::Other))
    }

    /// The whitespace run from `pos`: its length, and the end of its last
    /// `\r` or `\n`, if it has one.
    fn spaces(&self, pos: usize) -> (usize, Option<usize>) {
        let mut n = 0;
        let mut newline = None;
        while self.is(pos + n, Class::Whitespace) {
            n += 1;
            if matches!(self.cp(pos + n - 1), Some(0x0A | 0x0D)) {
                newline = Some(pos + n);
            }
        }
        (n, newline)
    }

    /// The end of a contraction (`'s 't 'm 'd 're 've 'll`) at `pos`,
    /// letters lowered by `lower` (case-insensitive for Llama 3).
    fn contraction(&self, pos: usize, lower: fn(u32) -> u32) -> Option<usize> {
        let ascii = |pos| self.cp(pos).map(lower).and_then(|c| u8::try_from(c).ok());
        if self.cp(pos) != Some(u32::from(b'\'')) {
            return None;
        }
        match (ascii(pos + 1)?, ascii(pos + 2)) {
            (b's' | b't' | b'm' | b'd', _) => Some(pos + 2),
            (b'r' | b'v', Some(b'e')) | (b'l', Some(b'l')) => Some(pos + 3),
            _ => None,
        }
    }

    /// The end of the whitespace at `pos` by `\s+(?!\S)|\s+`: a run
    /// followed by more text leaves its last code point to the next word.
    fn whitespace(&self, pos: usize, n: usize) -> usize {
        match n {
            0 => pos + 1,
            1 => pos + 1,
            n if self.cp(pos + n).is_some() => pos + n - 1,
            n => pos + n,
        }
    }
}

/// ASCII letters lowered; the contractions compare with ASCII only (no
/// other code point lowers to one of their letters).
fn ascii_lower(c: u32) -> u32 {
    match u8::try_from(c) {
        Ok(b) => u32::from(b.to_ascii_lowercase()),
        Err(_) => c,
    }
}

/// The GPT-2 pattern:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn gpt2(cps: &[u32], piece: Range<usize>, word: &mut Words<'_>) -> Result<()> {
    let c = Cursor {
        cps,
        piece: piece.clone(),
    };
    let mut pos = piece.start;
    while pos < piece.end {
        let end = match c.contraction(pos, |c| c) {
            Some(end) => end,
            None => {
                // The optional space before a word is U+0020 only.
                let at = pos + usize::from(c.cp(pos) == Some(u32::from(b' ')));
                match c.class(at) {
                    Some(Class::Letter) => run_end_in(&c, at, |c| c == Class::Letter),
                    Some(Class::Number) => run_end_in(&c, at, |c| c == Class::Number),
                    Some(Class::Punctuation | Class::Other) => {
                        run_end_in(&c, at, |c| matches!(c, Class::Punctuation | Class::Other))
                    }
                    _ => c.whitespace(pos, c.spaces(pos).0),
                }
            }
        };
        word(pos..end)?;
        pos = end;
    }
    Ok(())
}

/// The end of the run from `pos` of code points inside the piece whose
/// class `keep` accepts.
fn run_end_in(c: &Cursor<'_>, mut pos: usize, keep: impl Fn(Class) -> bool) -> usize {
    while c.class(pos).is_some_and(&keep) {
        pos += 1;
    }
    pos
}

/// Llama 3's pattern: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
/// \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
fn llama3(cps: &[u32], piece: Range<usize>, word: &mut Words<'_>) -> Result<()> {
    let c = Cursor {
        cps,
        piece: piece.clone(),
    };
    let newline = |cp: Option<u32>| matches!(cp, Some(0x0A | 0x0D));
    let mut pos = piece.start;
    while pos < piece.end {
        let (cp, class) = (c.cp(pos), c.class(pos));
        if let Some(end) = c.contraction(pos, ascii_lower) {
            word(pos..end)?;
            pos = end;
            continue;
        }
        // Any one code point but a newline or number may lead letters.
        let leads = !newline(cp) && class != Some(Class::Number);
        if leads && (class == Some(Class::Letter) || c.is(pos + 1, Class::Letter)) {
            let end = run_end_in(&c, pos + 1, |c| c == Class::Letter);
            word(pos..end)?;
            pos = end;
            continue;
        }
        // Numbers in groups of up to three.
        if class == Some(Class::Number) {
            let end = run_end_in(&c, pos, |c| c == Class::Number);
            while pos < end {
                let group = (end - pos).min(3);
                word(pos..pos + group)?;
                pos += group;
            }
            continue;
        }
        // Symbols and punctuation, the newlines after them. (llama.cpp
        // tests the code point itself, not the one after the space, for
        // being inside the piece: a lone space at its end lands here.)
        let at = pos + usize::from(cp == Some(u32::from(b' ')));
        if c.other(at) || (at > pos && c.cp(at).is_none()) {
            let mut end = run_end_in(&c, at, |c| matches!(c, Class::Punctuation | Class::Other));
            while newline(c.cp(end)) {
                end += 1;
            }
            word(pos..end)?;
            pos = end;
            continue;
        }
        let (n, last_newline) = c.spaces(pos);
        let end = match last_newline {
            Some(end) => end,
            None => c.whitespace(pos, n),
        };
        word(pos..end)?;
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    /// The words `pre` cuts `text` into.
    fn words(pre: Pre, text: &str) -> Vec<String> {
        let cps: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let mut out = Vec::new();
        pre.split(&cps, &mut |w| {
            out.push(cps[w].iter().filter_map(|&c| char::from_u32(c)).collect());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn whitespace_leaves_its_last_character_to_the_next_word() {
        let text = "    Hello\n    Hello";
        assert_eq!(
            words(Pre::Llama3, text),
            ["   ", " Hello", "\n", "   ", " Hello"]
        );
        // GPT-2's pattern keeps a new line with the spaces after it.
        assert_eq!(
            words(Pre::Smollm, text),
            ["   ", " Hello", "\n   ", " Hello"]
        );
        assert_eq!(words(Pre::Gpt2, "a  \tb"), ["a", "  ", "\t", "b"]);
    }

    #[test]
    fn numbers_go_in_threes_for_llama3_and_alone_for_smollm() {
        assert_eq!(words(Pre::Llama3, "1314151"), ["131", "415", "1"]);
        assert_eq!(words(Pre::Smollm, "ied 4 ½"), ["ied", " ", "4", " ", "½"]);
        assert_eq!(words(Pre::Gpt2, "a 12x"), ["a", " 12", "x"]);
        assert_eq!(
            words(Pre::Default, "x 12345!"),
            ["x", " ", "123", "45", "!"]
        );
    }

    #[test]
    fn contractions_letters_and_symbols() {
        assert_eq!(
            words(Pre::Llama3, "I'LL (normal) ok"),
            ["I", "'LL", " (", "normal", ")", " ok"]
        );
        assert_eq!(words(Pre::Gpt2, "I'LL x's"), ["I", "'", "LL", " x", "'s"]);
        // A mark may lead letters in Llama 3's pattern, not in GPT-2's.
        assert_eq!(words(Pre::Llama3, "\u{17B6}\u{1793}"), ["\u{17B6}\u{1793}"]);
        assert_eq!(
            words(Pre::Gpt2, "\u{17B6}\u{1793}"),
            ["\u{17B6}", "\u{1793}"]
        );
        assert_eq!(words(Pre::Llama3, "hi!!\n\nyo"), ["hi", "!!\n\n", "yo"]);
        assert_eq!(words(Pre::Default, "a+=b"), ["a", "+=", "b"]);
    }

    #[test]
    fn names_are_llama_cpp_s() {
        for pre in [Pre::Llama3, Pre::Smollm, Pre::Gpt2, Pre::Default] {
            assert_eq!(Pre::from_name(pre.name().as_bytes()), Some(pre));
        }
        assert_eq!(Pre::from_name(b"llama3"), Some(Pre::Llama3));
        assert_eq!(Pre::from_name(b"gpt2"), None);
    }
}
