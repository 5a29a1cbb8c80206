//! Arguments: a cursor over one command's arguments, and the flags several
//! commands share (`-m`, `-z`, and the engine's `--threads`, `--ctx`,
//! `--kv`, `--isa`), parsed by one loop that hands every other flag to the
//! command. What those flags mean is here too: the model and vocabulary
//! they name, where the arithmetic runs, and the one way a command's
//! session is planned and built.

use crate::arena::{KvType, Options, Plan};
use crate::error::{Error, Result};
use crate::exec::Compute;
use crate::generate::Session;
use crate::image::vocab::{llama2c_vocab_size, Vocab};
use crate::image::{Format, Model};
use crate::kernels::Isa;
use crate::sampler::SamplerConfig;
use crate::tokenizer::Family;

use super::Host;

/// A cursor over one command's arguments. A long flag may carry its
/// value after `=` (`--threads=2`), as llama.cpp's do.
pub(super) struct Args<'a> {
    rest: &'a [&'a [u8]],
    at: usize,
    /// The value after the last flag's `=`, until [`Args::value`] takes it.
    attached: Option<&'a [u8]>,
}

impl<'a> Args<'a> {
    pub fn new(rest: &'a [&'a [u8]]) -> Self {
        Args {
            rest,
            at: 0,
            attached: None,
        }
    }

    /// The next argument: a flag without its `=value`, or a plain one.
    pub fn next(&mut self) -> Option<&'a [u8]> {
        let a: &'a [u8] = self.rest.get(self.at)?;
        self.at += 1;
        let eq = a.iter().position(|&b| b == b'=');
        match (a.starts_with(b"--"), eq) {
            (true, Some(eq)) => {
                self.attached = Some(&a[eq + 1..]);
                Some(&a[..eq])
            }
            _ => Some(a),
        }
    }

    /// The value after `flag`: its `=value`, else the next argument.
    pub fn value(&mut self, flag: &[u8]) -> Result<&'a [u8]> {
        if let Some(v) = self.attached.take() {
            return Ok(v);
        }
        let v = self.rest.get(self.at).copied();
        self.at += usize::from(v.is_some());
        v.ok_or_else(|| Error::usage("missing value after", flag))
    }

    /// The value the next [`Args::value`] would take, not taken.
    pub fn peek(&self) -> Option<&'a [u8]> {
        self.attached.or_else(|| self.rest.get(self.at).copied())
    }

    /// A `=value` that the flag before it did not take (`--chat=1`).
    pub fn unused_value(&mut self) -> Option<&'a [u8]> {
        self.attached.take()
    }

    /// The number after `flag`; `says` is the error when it is none, and
    /// names the flag and what it takes.
    pub fn number<T: core::str::FromStr + Copy>(
        &mut self,
        flag: &[u8],
        says: &'static str,
    ) -> Result<T> {
        self.number_in(flag, says, |_| true)
    }

    /// A number that must also satisfy `ok`; `says` names the flag and
    /// its range.
    pub fn number_in<T: core::str::FromStr + Copy>(
        &mut self,
        flag: &[u8],
        says: &'static str,
        ok: impl Fn(T) -> bool,
    ) -> Result<T> {
        let v = self.value(flag)?;
        core::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n| ok(n))
            .ok_or_else(|| Error::usage(says, v))
    }
}

/// `v`, or a usage error naming the missing `flag`.
pub(super) fn required<'a>(v: Option<&'a [u8]>, flag: &'static str) -> Result<&'a [u8]> {
    v.ok_or_else(|| Error::usage("missing required option", flag.as_bytes()))
}

/// Most threads `--threads` accepts.
const MAX_THREADS: usize = 1024;

/// The context planned without `--ctx`: the model's, at most this many
/// positions (Llama 3.2 declares 131072, whose KV cache would take
/// gigabytes), as llama.cpp's tools cap their default too.
const DEFAULT_CONTEXT: usize = 4096;

/// Why an `--isa` value is refused: the levels of this architecture.
#[cfg(target_arch = "x86_64")]
const ISA_LEVELS: &str = "--isa takes scalar, avx2 or avx512, up to this CPU's best";
#[cfg(target_arch = "aarch64")]
const ISA_LEVELS: &str = "--isa takes scalar, neon or neon+dotprod, up to this CPU's best";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ISA_LEVELS: &str = "--isa takes scalar";

/// The groups of common flags; a command takes some, and to it the others
/// are unknown options.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Takes {
    /// `-m MODEL`.
    Model,
    /// `-z TOKENIZER`.
    Tokenizer,
    /// `--threads`, `--ctx`, `--kv` and `--isa`: the engine's.
    Engine,
}

impl Takes {
    pub const ALL: &[Takes] = &[Takes::Model, Takes::Tokenizer, Takes::Engine];
}

/// The flags several commands share, as given.
#[derive(Default)]
pub(super) struct Common<'a> {
    pub model: Option<&'a [u8]>,
    pub tokenizer: Option<&'a [u8]>,
    pub threads: Option<usize>,
    /// The context to plan, which may exceed the model's; 0 is the model's.
    pub ctx: Option<usize>,
    pub kv: Option<KvType>,
    /// A kernel level at most the host's, checked when given.
    pub isa: Option<Isa>,
}

/// The sizes a command's arena is planned for.
#[derive(Clone, Copy)]
pub(super) struct Size {
    /// Positions to run, already checked against the context.
    pub positions: usize,
    /// The longest text the tokenizer takes at once.
    pub prompt_bytes: usize,
    /// KV caches for a beam search (0: none).
    pub beams: usize,
}

impl<'a> Common<'a> {
    /// Parses all of a command's arguments: the common flags it `takes`
    /// here, every other one by `own`, which returns whether it knew it.
    pub fn parse<H: Host>(
        host: &H,
        args: &mut Args<'a>,
        takes: &[Takes],
        mut own: impl FnMut(&'a [u8], &mut Args<'a>) -> Result<bool>,
    ) -> Result<Self> {
        let mut c = Common::default();
        let (model, tokenizer, engine) = (
            takes.contains(&Takes::Model),
            takes.contains(&Takes::Tokenizer),
            takes.contains(&Takes::Engine),
        );
        while let Some(flag) = args.next() {
            match flag {
                b"-m" if model => c.model = Some(args.value(flag)?),
                b"-z" if tokenizer => c.tokenizer = Some(args.value(flag)?),
                b"--threads" if engine => {
                    c.threads = Some(args.number_in(flag, "--threads takes 1 to 1024", |n| {
                        (1..=MAX_THREADS).contains(&n)
                    })?)
                }
                b"--ctx" | b"-c" | b"--ctx-size" if engine => {
                    c.ctx = Some(args.number(
                        flag,
                        "--ctx (-c, --ctx-size) takes a whole number of positions (0: the model's)",
                    )?)
                }
                b"--kv" if engine => {
                    c.kv = Some(match args.value(flag)? {
                        b"f32" => KvType::F32,
                        b"f16" => KvType::F16,
                        other => return Err(Error::usage("--kv takes f32 or f16", other)),
                    })
                }
                b"--isa" if engine => {
                    let name = args.value(flag)?;
                    let isa = host.isa().at_most(name);
                    c.isa = Some(isa.ok_or_else(|| Error::usage(ISA_LEVELS, name))?);
                }
                _ if own(flag, args)? => {}
                _ => return Err(Error::usage("unknown option", flag)),
            }
            if args.unused_value().is_some() {
                return Err(Error::usage("takes no value", flag));
            }
        }
        Ok(c)
    }

    /// The context to run `model` in: `--ctx`, 0 meaning the model's, or
    /// by default the model's up to [`DEFAULT_CONTEXT`].
    pub fn context(&self, model: &Model<'_>) -> usize {
        match self.ctx {
            None => model.config.seq_len.min(DEFAULT_CONTEXT),
            Some(0) => model.config.seq_len,
            Some(n) => n,
        }
    }

    /// The bytes of `-m MODEL`, which the command needs.
    pub fn image<'h, H: Host>(&self, host: &'h H) -> Result<&'h [u8]> {
        host.map(required(self.model, "-m MODEL")?)
    }

    /// `-m MODEL`, loaded.
    pub fn model<'h, H: Host>(&self, host: &'h H) -> Result<Model<'h>> {
        self.load(self.image(host)?)
    }

    /// `image`, the bytes of `-m MODEL`, loaded; a llama2.c tokenizer
    /// given there is named as what it is.
    pub fn load<'h>(&self, image: &'h [u8]) -> Result<Model<'h>> {
        Model::load(image).map_err(|e| match llama2c_vocab_size(image) {
            Ok(_) if !image.starts_with(b"GGUF") => Error::usage(
                "this is a llama2.c tokenizer, not a model: give it with -z",
                self.model.unwrap_or_default(),
            ),
            _ => e,
        })
    }

    /// The vocabulary: `-z`'s llama2.c tokenizer if given, else the one in
    /// a GGUF model.
    pub fn vocab<'h, H: Host>(&self, host: &'h H, model: &Model<'h>) -> Result<Vocab<'h>> {
        match (self.tokenizer, model.gguf) {
            (Some(path), _) => tokenizer_bin(host, path).map(Vocab::Llama2c),
            (None, Some(g)) => Ok(Vocab::Gguf(g)),
            (None, None) => Err(Error::usage(
                "a llama2.c model needs a tokenizer",
                b"-z TOKENIZER",
            )),
        }
    }

    /// `--isa` (default: the host's best) on `--threads` threads (default:
    /// every core).
    pub fn compute<'h, H: Host>(&self, host: &'h H) -> Result<Compute<'h>> {
        let threads = self.threads.unwrap_or_else(|| host.default_threads());
        Ok(Compute {
            isa: self.isa.unwrap_or_else(|| host.isa()),
            exec: host.exec(threads.max(1))?,
        })
    }

    /// Plans exactly `size`, with a tokenizer of `family`. Without `--kv`
    /// the cache is what the format's own engine uses: f32 for llama2.c
    /// checkpoints, f16 for GGUF files (llama.cpp's default), so outputs
    /// compare with theirs.
    pub fn plan(&self, model: &Model<'_>, family: Family, size: Size) -> Result<Plan> {
        let kv = self.kv.unwrap_or(match model.format {
            Format::Llama2c { .. } => KvType::F32,
            Format::Gguf { .. } => KvType::F16,
        });
        let options = Options {
            seq_len: size.positions,
            allow_longer: true,
            prompt_bytes: size.prompt_bytes,
            kv,
            beams: size.beams,
            tokenizer: family,
            ..Options::default()
        };
        Plan::new(&model.config, &options)
    }

    /// The one way a command's engine is made: planned for `size`, its
    /// arena from the host, running on `compute`.
    pub fn session<'m, H: Host>(
        &self,
        host: &'m H,
        model: &'m Model<'m>,
        vocab: Vocab<'m>,
        sampler: SamplerConfig,
        compute: Compute<'m>,
        size: Size,
    ) -> Result<Session<'m, 'm>> {
        let plan = self.plan(model, Family::of(&vocab)?, size)?;
        let arena = host.memory(plan.bytes())?;
        Session::new(model, vocab, sampler, &plan, arena, compute)
    }
}

/// The bytes of `-z TOKENIZER`, a llama2.c `tokenizer.bin`: a GGUF file
/// there (whose vocabulary is inside it) is refused by name.
pub(super) fn tokenizer_bin<'h, H: Host>(host: &'h H, path: &[u8]) -> Result<&'h [u8]> {
    let bytes = host.map(path)?;
    match bytes.starts_with(b"GGUF") {
        true => Err(Error::usage(
            "-z takes a llama2.c tokenizer.bin; a GGUF file carries its own vocabulary: give it with -m",
            path,
        )),
        false => Ok(bytes),
    }
}

/// The text of `-i TEXT` or `-f FILE`: FILE's bytes, mapped, or all of
/// standard input for `-f -`.
pub(super) fn prompt_text<'a, H: Host>(
    host: &'a H,
    text: Option<&'a [u8]>,
    file: Option<&'a [u8]>,
) -> Result<Option<&'a [u8]>> {
    match (text, file) {
        (Some(_), Some(_)) => Err(Error::usage("give -i or -f, not both", b"-f")),
        (_, Some(b"-")) => host.read_stdin().map(Some),
        (_, Some(path)) => host.map(path).map(Some),
        (text, None) => Ok(text),
    }
}
