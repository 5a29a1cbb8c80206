//! The `barellama` command line, independent of the operating system.
//!
//! A host implements [`Host`] (map a file, hand out zeroed memory, write
//! an output file that appears only when complete, print, tell the time) and calls [`main`] with the arguments;
//! everything else — parsing, loading, planning, generating, reporting — is
//! here, written once for every host. Arguments are bytes, not `str`: a
//! prompt need not be valid UTF-8.
//!
//! `args.rs` parses the flags several commands share; each command has a
//! file of its own with its usage text and its own flags.

use core::fmt::{self, Write as _};

use crate::error::{Error, Result};
use crate::exec::Exec;
use crate::io::Output;
use crate::kernels::Isa;

/// Prints `format!`-style text to the host's stdout; the print's result.
macro_rules! out {
    ($host:expr, $($arg:tt)*) => {{
        let mut w = $crate::cli::Stdout::new($host);
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
        w.check()
    }};
}

mod args;
mod bench;
mod inspect;
mod logits;
mod quantize;
mod run;
#[cfg(test)]
mod tests;
mod tokenize;

use args::Args;

/// What the CLI needs from an operating system.
pub trait Host {
    type File: Output;

    /// Maps the whole file read-only; it stays mapped while the host lives.
    fn map(&self, path: &[u8]) -> Result<&[u8]>;

    /// Zeroed, writable, 64-byte-aligned memory that lives as long as the
    /// host. Each call returns a distinct region.
    #[allow(clippy::mut_from_ref)]
    fn memory(&self, bytes: usize) -> Result<&mut [u8]>;

    /// Starts writing the output file `path`. Nothing appears at `path`
    /// until [`Host::commit`]: a command that fails half way, or returns
    /// early, drops the file, which then vanishes and leaves whatever was at
    /// `path` as it was. A `path` that is the same file as one this host has
    /// mapped is refused: the command's own input would be destroyed.
    fn create(&self, path: &[u8]) -> Result<Self::File>;

    /// Puts a complete file from [`Host::create`] at its path, replacing
    /// what was there.
    fn commit(&self, file: Self::File) -> Result<()>;

    /// Writes to standard output, buffered: whole lines go out as they
    /// end, the rest at [`Host::flush`]. A reader that went away is
    /// [`Error::Closed`].
    fn print(&self, bytes: &[u8]) -> Result<()>;

    /// Sends what [`Host::print`] holds back.
    fn flush(&self) -> Result<()>;

    /// Writes to standard error; failures there have nowhere to go.
    fn eprint(&self, bytes: &[u8]);

    /// Whether standard input is a terminal: a person types the chat, so
    /// it shows prompts.
    fn interactive(&self) -> bool;

    /// Reads one line of standard input into `line`, without its newline;
    /// `None` at the end of input, or when Ctrl-C interrupts the read
    /// after [`Host::catch_interrupts`]. A longer line is read to its end
    /// and refused with [`Error::PromptTooLong`].
    fn read_line(&self, line: &mut [u8]) -> Result<Option<usize>>;

    /// All of standard input (`-f -`), read once.
    fn read_stdin(&self) -> Result<&[u8]>;

    /// From now on Ctrl-C does not end the process: it is noted for
    /// [`Host::interrupted`] and ends a [`Host::read_line`] that waits.
    fn catch_interrupts(&self);

    /// Whether Ctrl-C came since the last call.
    fn interrupted(&self) -> bool;

    /// A monotonic clock in nanoseconds.
    fn now_ns(&self) -> u64;

    /// Peak resident memory of the process so far, 0 if unknown.
    fn peak_rss_bytes(&self) -> u64;

    /// Heap allocations performed by the process so far.
    fn allocations(&self) -> u64;

    /// The kernels' instruction set: the best this CPU has.
    fn isa(&self) -> Isa;

    /// Threads to use when the command line does not say.
    fn default_threads(&self) -> usize;

    /// An executor running parallel regions on `threads` threads.
    fn exec(&self, threads: usize) -> Result<&dyn Exec>;
}

const USAGE: &str = "\
usage: barellama <command> [options]
commands:
  run       generate text from a prompt, or chat
  bench     measure decode speed (no -m: a synthetic stories110M-shape model)
  logits    teacher-forced logits of a token list, in L2CG format
  tokenize  print the token ids of a text
  inspect   print a model's configuration and tensors
  quantize  write a model as GGUF (F32 ... Q4_K) or llama2.c v2 (int8)
  convert   write a model as F32 GGUF (quantize --type f32)
barellama <command> --help shows the command's options; --version the version
";

/// Runs one command line and returns the process exit code; errors are
/// printed as one line on stderr.
pub fn main<H: Host>(host: &H, args: &[&[u8]]) -> i32 {
    match dispatch(host, args).and_then(|()| host.flush()) {
        Ok(()) => 0,
        // `| head` has what it wanted: not a failure, nothing to say.
        Err(Error::Closed { .. }) => 0,
        Err(e) => {
            let mut line = Line::new();
            let _ = writeln!(line, "barellama: {e}");
            host.eprint(line.as_bytes());
            e.exit_code()
        }
    }
}

/// A subcommand's entry point.
type Command<H> = fn(&H, &mut Args<'_>) -> Result<()>;

fn dispatch<H: Host>(host: &H, args: &[&[u8]]) -> Result<()> {
    let Some((&command, rest)) = args.split_first() else {
        host.eprint(USAGE.as_bytes());
        return Err(Error::usage("missing command", b""));
    };
    let (usage, run): (&str, Command<H>) = match command {
        b"run" => (run::USAGE, run::run::<H>),
        b"bench" => (bench::USAGE, bench::bench::<H>),
        b"logits" => (logits::USAGE, logits::logits::<H>),
        b"tokenize" => (tokenize::USAGE, tokenize::tokenize::<H>),
        b"inspect" => (inspect::USAGE, inspect::inspect::<H>),
        b"quantize" => (quantize::USAGE, quantize::quantize::<H>),
        b"convert" => (quantize::USAGE, quantize::convert::<H>),
        b"help" | b"--help" | b"-h" => return host.print(USAGE.as_bytes()),
        b"--version" | b"version" => {
            return out!(host, "barellama {}\n", env!("CARGO_PKG_VERSION"))
        }
        _ => return Err(Error::usage("unknown command", command)),
    };
    if rest.iter().any(|&a| a == b"--help" || a == b"-h") {
        return host.print(usage.as_bytes());
    }
    run(host, &mut Args::new(rest))
}

/// What [`Host::create`] says when its path is a file the host has
/// mapped, the same for every host.
pub fn same_file(path: &[u8]) -> Error {
    Error::usage("the output is the same file as an input", path)
}

/// A usage error naming a number the command line asked for.
fn too_many(problem: &'static str, n: usize) -> Error {
    let mut l = Line::new();
    let _ = write!(l, "{n}");
    Error::usage(problem, l.as_bytes())
}

/// Seconds from `start` to now on the host's clock.
fn seconds_since<H: Host>(host: &H, start: u64) -> f64 {
    (host.now_ns() - start) as f64 / 1e9
}

/// Formats into a fixed buffer; longer output is cut (only used for short
/// lines: errors and reports).
struct Line {
    buf: heapless::Vec<u8, 512>,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: heapless::Vec::new(),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.capacity() - self.buf.len();
        let _ = self
            .buf
            .extend_from_slice(&s.as_bytes()[..s.len().min(room)]);
        Ok(())
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(core::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

/// `fmt::Write` straight to the host's stdout, keeping the first error:
/// `fmt::Error` cannot say what failed, [`Stdout::check`] can.
struct Stdout<'h, H: Host> {
    host: &'h H,
    result: Result<()>,
}

impl<'h, H: Host> Stdout<'h, H> {
    fn new(host: &'h H) -> Self {
        Stdout {
            host,
            result: Ok(()),
        }
    }

    /// The first failed print's error, if any.
    fn check(&self) -> Result<()> {
        self.result.clone()
    }
}

impl<H: Host> fmt::Write for Stdout<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.result.is_ok() {
            self.result = self.host.print(s.as_bytes());
        }
        self.result.as_ref().map_err(|_| fmt::Error).copied()
    }
}
