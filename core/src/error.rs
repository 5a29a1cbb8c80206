//! One error type for the whole core. It never allocates: every variant holds
//! static field names and the offending numbers, and user text (a flag, a
//! path) is copied into a short fixed-capacity string, so a firmware build can
//! print the same one-line diagnosis a host does.

use core::fmt;

/// A copy of user-supplied text kept inside an error without allocating.
/// Longer text is cut at a character boundary and marked with `…`.
pub type Text = heapless::String<80, u8>;

/// Copies `bytes` into a [`Text`], replacing invalid UTF-8 and truncating.
pub fn text(bytes: &[u8]) -> Text {
    let mut out = Text::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk
            .valid()
            .chars()
            .chain((!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER))
        {
            if out.len() + c.len_utf8() + '…'.len_utf8() > out.capacity() {
                let _ = out.push('…');
                return out;
            }
            let _ = out.push(c);
        }
    }
    out
}

/// What went wrong. `Display` gives the one line the CLI prints.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// The input ends before a field or tensor that must be there.
    Truncated {
        what: &'static str,
        offset: u64,
        need: u64,
        len: u64,
    },
    /// A magic number that is none of the formats this reader knows.
    Magic { what: &'static str, found: u32 },
    /// A field whose value the format forbids.
    Invalid { field: &'static str, value: i64 },
    /// A field whose value is legal in the format but not supported here.
    Unsupported { field: &'static str, value: i64 },
    /// Two fields that must agree do not: "`field` = value `rule` `other` = other_value".
    Mismatch {
        field: &'static str,
        value: i64,
        rule: &'static str,
        other: &'static str,
        other_value: i64,
    },
    /// A text field (metadata string, tensor name) the engine cannot use.
    Text {
        field: &'static str,
        value: Text,
        problem: &'static str,
    },
    /// A metadata key holds a value of the wrong type.
    KeyType {
        key: &'static str,
        found: u32,
        expected: &'static str,
    },
    /// A tensor stored in a GGML type this engine does not compute with.
    TensorType {
        name: Text,
        type_id: u32,
        type_name: &'static str,
    },
    /// A tensor the model needs is missing.
    MissingTensor { name: Text },
    /// A tensor with the wrong shape: found `ne0 × ne1`, expected the other.
    Shape {
        name: Text,
        found: [u64; 2],
        expected: [u64; 2],
    },
    /// A tensor to be written in a type whose blocks do not divide its rows
    /// of `cols` values: named, unlike a size that merely overflows.
    Blocks {
        name: Text,
        cols: usize,
        dtype: &'static str,
        block: usize,
    },
    /// A size or offset computed from `field` does not fit the address space.
    Overflow { field: &'static str },
    /// The caller's arena is smaller than the [`Plan`](crate::arena::Plan) needs.
    ArenaTooSmall { needed: usize, given: usize },
    /// The caller's arena does not start on a 64-byte boundary.
    ArenaMisaligned { address: usize },
    /// A position or token count beyond the context the arena was planned for.
    ContextFull { needed: usize, max: usize },
    /// A prompt longer than the tokenizer's planned scratch.
    PromptTooLong { bytes: usize, max: usize },
    /// A token id outside the vocabulary.
    Token { id: i64, vocab: usize },
    /// A command line the CLI cannot accept.
    Usage { problem: &'static str, arg: Text },
    /// An input file (model, tokenizer, token list) that cannot be read.
    File {
        path: Text,
        problem: &'static str,
        errno: i32,
    },
    /// Writing output failed.
    Io { what: &'static str, errno: i32 },
    /// The reader of `what` (a pipe's other end) went away.
    Closed { what: &'static str },
    /// The host could not provide memory.
    OutOfMemory { bytes: usize },
    /// The host could not start worker threads.
    Threads { threads: usize, errno: i32 },
    /// A caller broke an API contract (buffers planned for another model,
    /// an empty batch, a cache that does not exist): a bug in the caller,
    /// not a bad file.
    Misuse { what: &'static str, value: i64 },
}

/// Shorthand used throughout the core.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// The process exit code DESIGN.md assigns: 2 usage, 3 bad model or
    /// tokenizer file, 4 resources (arena, memory, context), 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => 2,
            Error::Truncated { .. }
            | Error::Text { .. }
            | Error::KeyType { .. }
            | Error::MissingTensor { .. }
            | Error::TensorType { .. }
            | Error::Shape { .. }
            | Error::Magic { .. }
            | Error::Invalid { .. }
            | Error::Unsupported { .. }
            | Error::Mismatch { .. }
            | Error::Blocks { .. }
            | Error::Overflow { .. }
            | Error::File { .. } => 3,
            Error::ArenaTooSmall { .. }
            | Error::ArenaMisaligned { .. }
            | Error::ContextFull { .. }
            | Error::PromptTooLong { .. }
            | Error::OutOfMemory { .. }
            | Error::Threads { .. } => 4,
            Error::Token { .. }
            | Error::Io { .. }
            | Error::Closed { .. }
            | Error::Misuse { .. } => 1,
        }
    }

    pub(crate) fn usage(problem: &'static str, arg: &[u8]) -> Error {
        Error::Usage {
            problem,
            arg: text(arg),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated {
                what,
                offset,
                need,
                len,
            } => write!(
                f,
                "{what}: input ends at byte {len}, but {need} bytes are needed at offset {offset}"
            ),
            Error::Magic { what, found } => {
                write!(f, "{what}: unknown magic number 0x{found:08x}")
            }
            Error::Invalid { field, value } => write!(f, "{field} = {value} is invalid"),
            Error::Unsupported { field, value } => {
                write!(f, "{field} = {value} is not supported")
            }
            Error::Mismatch {
                field,
                value,
                rule,
                other,
                other_value,
            } => write!(f, "{field} = {value} {rule} {other} = {other_value}"),
            Error::Text {
                field,
                value,
                problem,
            } => write!(f, "{field} '{value}' {problem}"),
            Error::KeyType {
                key,
                found,
                expected,
            } => write!(f, "{key} has value type {found}, expected {expected}"),
            Error::MissingTensor { name } => write!(f, "tensor '{name}' is missing"),
            Error::TensorType {
                name,
                type_id,
                type_name,
            } => write!(
                f,
                "tensor '{name}' has GGML type {type_id} ({type_name}), which is not supported"
            ),
            Error::Shape {
                name,
                found,
                expected,
            } => write!(
                f,
                "tensor '{name}' is {}x{}, expected {}x{}",
                found[0], found[1], expected[0], expected[1]
            ),
            Error::Blocks {
                name,
                cols,
                dtype,
                block,
            } => write!(
                f,
                "tensor '{name}' has rows of {cols} values, not a multiple of \
                 {dtype}'s block of {block}"
            ),
            Error::Overflow { field } => {
                write!(f, "{field}: size overflows the address space")
            }
            Error::ArenaTooSmall { needed, given } => write!(
                f,
                "arena too small: {needed} bytes needed, {given} bytes given"
            ),
            Error::ArenaMisaligned { address } => {
                write!(f, "arena at 0x{address:x} is not aligned to 64 bytes")
            }
            Error::ContextFull { needed, max } => write!(
                f,
                "context full: {needed} positions needed, the context holds {max}"
            ),
            Error::PromptTooLong { bytes, max } => write!(
                f,
                "prompt too long: {bytes} bytes, the tokenizer was planned for {max}"
            ),
            Error::Token { id, vocab } => {
                write!(f, "token id {id} is outside the vocabulary of {vocab}")
            }
            Error::Usage { problem, arg } => {
                if arg.is_empty() {
                    write!(f, "{problem} (try --help)")
                } else {
                    write!(f, "{problem}: '{arg}' (try --help)")
                }
            }
            Error::File {
                path,
                problem,
                errno,
            } => {
                write!(f, "{path}: {problem}")?;
                if *errno != 0 {
                    write!(f, " ({})", Errno(*errno))?;
                }
                Ok(())
            }
            Error::Io { what, errno } => write!(f, "cannot write {what} ({})", Errno(*errno)),
            Error::Closed { what } => write!(f, "the reader of {what} went away"),
            Error::OutOfMemory { bytes } => {
                write!(f, "out of memory: cannot map {bytes} bytes")
            }
            Error::Threads { threads, errno } => {
                write!(f, "cannot start {threads} threads ({})", Errno(*errno))
            }
            Error::Misuse { what, value } => write!(f, "API misuse: {what} = {value}"),
        }
    }
}

impl core::error::Error for Error {}

/// An OS error number, named when it is one of the common ones whose
/// numbers Linux and macOS share.
struct Errno(i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "operation not permitted",
            2 => "no such file or directory",
            5 => "input/output error",
            12 => "out of memory",
            13 => "permission denied",
            20 => "not a directory",
            21 => "is a directory",
            22 => "invalid argument",
            24 => "too many open files",
            27 => "file too large",
            28 => "no space left on device",
            30 => "read-only file system",
            32 => "broken pipe",
            _ => return write!(f, "errno {}", self.0),
        };
        write!(f, "{name}, errno {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn text_keeps_short_and_cuts_long_input() {
        assert_eq!(text(b"-x").as_str(), "-x");
        assert_eq!(text(b"a\xffb").as_str(), "a\u{fffd}b");
        let long = [b'y'; 300];
        let t = text(&long);
        assert!(t.ends_with('…') && t.len() <= 80);
    }

    #[test]
    fn messages_name_field_and_value() {
        let e = Error::Mismatch {
            field: "dim",
            value: 63,
            rule: "must be a multiple of",
            other: "n_heads",
            other_value: 8,
        };
        assert_eq!(e.to_string(), "dim = 63 must be a multiple of n_heads = 8");
        assert_eq!(e.exit_code(), 3);
        assert_eq!(Error::usage("unknown flag", b"--x").exit_code(), 2);
    }
}
