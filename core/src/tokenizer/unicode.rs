//! The code point classes the byte-level BPE pre-tokenizers split on, as
//! llama.cpp defines them: `\p{L}` letters, `\p{N}` numbers, `\p{P}`
//! punctuation (by general category, from [`unicode_table`]), and `\s`,
//! a fixed list of whitespace code points.

use super::unicode_table::{CLASS_RANGES, UNICODE_VERSION};

/// A code point's class for the pre-tokenizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Letter,
    Number,
    Punctuation,
    Whitespace,
    /// Anything else: symbols, marks, controls, unassigned.
    Other,
}

/// The Unicode version the classes come from.
pub const VERSION: &str = UNICODE_VERSION;

/// `\s` as llama.cpp's tables set it: the ASCII controls `\t` to `\r`,
/// space, and the separators of Unicode's `White_Space` property.
fn is_whitespace(cp: u32) -> bool {
    matches!(
        cp,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// The class of `cp` (any `u32`; past U+10FFFF is [`Class::Other`]).
pub fn class(cp: u32) -> Class {
    if is_whitespace(cp) {
        return Class::Whitespace;
    }
    // The last range starting at or before `cp` holds it.
    let at = CLASS_RANGES.partition_point(|&e| e >> 2 <= cp);
    match CLASS_RANGES[at.max(1) - 1] & 3 {
        1 => Class::Letter,
        2 => Class::Number,
        3 => Class::Punctuation,
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_general_category() {
        let cases = [
            ('a', Class::Letter),
            ('Z', Class::Letter),
            ('é', Class::Letter),
            ('我', Class::Letter),
            ('\u{2EBF0}', Class::Letter), // CJK extension I, new in 15.1
            ('7', Class::Number),
            ('½', Class::Number),
            ('Ⅻ', Class::Number),
            ('!', Class::Punctuation),
            ('«', Class::Punctuation),
            ('$', Class::Other),
            ('+', Class::Other),
            ('\u{0301}', Class::Other), // a combining mark is not a letter
            ('\u{1C89}', Class::Other), // unassigned in 15.1
            ('🚀', Class::Other),
            (' ', Class::Whitespace),
            ('\n', Class::Whitespace),
            ('\u{3000}', Class::Whitespace),
            ('\u{200B}', Class::Other), // zero width space: format, not White_Space
        ];
        for (c, want) in cases {
            assert_eq!(class(c as u32), want, "{c:?}");
        }
        assert_eq!(class(0x110000), Class::Other);
        assert_eq!(VERSION, "15.1.0");
    }
}
