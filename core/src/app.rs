//! The `barellama` command line, independent of the operating system.
//!
//! A host implements [`Host`] (map a file, hand out zeroed memory, create an
//! output file, print, tell the time) and calls [`main`] with the arguments;
//! everything else — parsing, loading, planning, generating, reporting — is
//! here, written once for every host. Arguments are bytes, not `str`: a
//! prompt need not be valid UTF-8.

use core::fmt::{self, Write as _};
use core::ops::ControlFlow;

use crate::arena::{KvType, Options, Plan, TokenizerPlan};
use crate::beam::MAX_BEAMS;
use crate::chat::{Chat, Template, TEMPLATE_BYTES};
use crate::error::{Error, Result};
use crate::exec::{for_each, Compute, Exec};
use crate::generate::{End, Session, StopText, TextStream, Vocab, MAX_STOP_BYTES};
use crate::image::gguf::{Gguf, Value, ValueType};
use crate::image::vocab::llama2c_vocab_size;
use crate::image::{Format, Model};
use crate::io::{Buffered, Output};
use crate::kernels::{cast_slice_mut, Isa};
use crate::model::Transformer;
use crate::rng::random_u32;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tensor::WeightRef;
use crate::tokenizer::Tokenizer;
use crate::write::export::{
    check_float, check_groups, longest_row, write_gguf, write_llama2c_v2, Layout, Quantize,
    Vocabulary,
};
use crate::write::gguf::TensorSpec;
use crate::write::synth::{self, Synthetic};

/// What the CLI needs from an operating system.
pub trait Host {
    type File: Output;

    /// Maps the whole file read-only; it stays mapped while the host lives.
    fn map(&self, path: &[u8]) -> Result<&[u8]>;

    /// Zeroed, writable, 64-byte-aligned memory that lives as long as the
    /// host. Each call returns a distinct region.
    #[allow(clippy::mut_from_ref)]
    fn memory(&self, bytes: usize) -> Result<&mut [u8]>;

    /// Creates (or truncates) an output file.
    fn create(&self, path: &[u8]) -> Result<Self::File>;

    /// Writes to standard output.
    fn print(&self, bytes: &[u8]) -> Result<()>;

    /// Writes to standard error; failures there have nowhere to go.
    fn eprint(&self, bytes: &[u8]);

    /// Whether standard input is a terminal: a person types the chat, so
    /// it shows prompts.
    fn interactive(&self) -> bool;

    /// Reads one line of standard input into `line`, without its newline;
    /// `None` at the end of input. A longer line is read to its end and
    /// refused with [`Error::PromptTooLong`].
    fn read_line(&self, line: &mut [u8]) -> Result<Option<usize>>;

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

/// Most threads `--threads` accepts.
const MAX_THREADS: usize = 1024;

/// `--threads N`: at least one, at most [`MAX_THREADS`].
fn threads_flag(args: &mut Args<'_>, flag: &[u8]) -> Result<usize> {
    args.number_in(flag, |n: usize| (1..=MAX_THREADS).contains(&n))
}

/// `--ctx N`: the context length to plan, which may exceed the model's.
fn ctx_flag(args: &mut Args<'_>, flag: &[u8]) -> Result<usize> {
    args.number_in(flag, |n: usize| n > 0)
}

/// A usage error naming a number the command line asked for.
fn too_many(problem: &'static str, n: usize) -> Error {
    let mut l = Line::new();
    let _ = write!(l, "{n}");
    Error::usage(problem, l.as_bytes())
}

/// `--kv f32|f16`: the KV cache's element type.
fn kv_flag(args: &mut Args<'_>, flag: &[u8]) -> Result<KvType> {
    match args.value(flag)? {
        b"f32" => Ok(KvType::F32),
        b"f16" => Ok(KvType::F16),
        other => Err(Error::usage("--kv takes f32 or f16", other)),
    }
}

/// The prompt of `-i TEXT` or `-f FILE`: FILE's bytes, mapped.
fn prompt_text<'a, H: Host>(
    host: &'a H,
    text: Option<&'a [u8]>,
    file: Option<&'a [u8]>,
) -> Result<Option<&'a [u8]>> {
    match (text, file) {
        (Some(_), Some(_)) => Err(Error::usage("give -i or -f, not both", b"-f")),
        (_, Some(path)) => host.map(path).map(Some),
        (text, None) => Ok(text),
    }
}

/// Plans exactly `positions` positions, already checked against the
/// context (the model's, or one `--ctx` chose). Without `--kv` the cache
/// is what the format's own engine uses: f32 for llama2.c checkpoints, f16
/// for GGUF files (llama.cpp's default), so outputs compare with theirs.
/// `beams` KV caches for a beam search (0: none).
fn plan_for(
    model: &Model<'_>,
    positions: usize,
    prompt_bytes: usize,
    kv: Option<KvType>,
    beams: usize,
) -> Result<Plan> {
    let kv = kv.unwrap_or(match model.format {
        Format::Llama2c { .. } => KvType::F32,
        Format::Gguf { .. } => KvType::F16,
    });
    let options = Options {
        seq_len: positions,
        allow_longer: true,
        prompt_bytes,
        kv,
        beams,
        ..Options::default()
    };
    Plan::new(&model.config, &options)
}

/// The host's best ISA on `threads` threads (default: every core).
fn compute<H: Host>(host: &H, threads: Option<usize>) -> Result<Compute<'_>> {
    let threads = threads.unwrap_or_else(|| host.default_threads()).max(1);
    Ok(Compute {
        isa: host.isa(),
        exec: host.exec(threads)?,
    })
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
barellama <command> --help shows the command's options
";

const RUN_USAGE: &str = "\
usage: barellama run -m MODEL [-z TOKENIZER] [options]
  -m MODEL      llama2.c .bin checkpoint or GGUF file
  -z TOKENIZER  llama2.c tokenizer.bin (needed for a .bin model; default:
                the vocabulary inside a GGUF file)
  -i PROMPT     prompt text (default: empty)
  -f FILE       read the prompt from FILE instead (any bytes; invalid UTF-8
                goes through byte tokens)
  -n STEPS      positions to run, prompt included; 0 = the model's context (default 256)
  -t TEMP       temperature, 0 = greedy (default 1.0)
  -p TOPP       nucleus sampling threshold in [0, 1] (default 0.9)
  -k TOPK       sample only from the TOPK most likely tokens (default: off)
  -s SEED       random seed (default: the time)
  --threads N   threads (default: every core); results do not depend on it
  --ctx N       context length (default: the model's; may exceed it, as llama.cpp's -c)
  --kv f32|f16  KV cache type (default: f32 for llama2.c files, f16 for GGUF,
                each computed as that format's reference engine does)
  --beams B     beam search with B hypotheses (1 to 8; 1 is greedy): prints the
                one with the best log-probability per token, at the end
  --stop TEXT   end the generated text where it contains TEXT, which is not
                printed (1 to 64 bytes of UTF-8; repeatable, up to 8 times)
  --chat        chat: each line of standard input (after -i PROMPT, if given) is
                a user turn, answered on the lines after it, until the input ends;
                the conversation stays in the context (--ctx), and only each
                turn's new tokens run. With --chat, -n limits each answer
                (default: the context). A full context ends the chat (exit 4)
  -y SYSTEM     the chat's system message
  --template T  the chat format: llama2 ([INST] <<SYS>>, as llama2.c's chat) or
                zephyr (<|user|> ... <|assistant|>, as TinyLlama-Chat); default:
                recognized from a GGUF file's tokenizer.chat_template (a GGUF
                file without a known one needs --template), llama2 for a .bin
";

const BENCH_USAGE: &str = "\
usage: barellama bench [-m MODEL | --format F] [-z TOKENIZER] [-n TOKENS] [--prompt-tokens P]
                       [--threads N] [--ctx N] [--kv f32|f16] [--scalar] [--json]
  -m MODEL      model to measure (default: a seeded synthetic stories110M-shape model)
  --format F    the synthetic model's weights: f32 (default, a llama2.c file), GGUF
                f16, q8_0, q4_0 (with a Q6_K classifier), q4_0-pure, q4_k (Q4_K_M's
                mix of Q4_K and Q6_K) or q6_k, or v2 (llama2.c's int8, groups of 64)
  -z TOKENIZER  also decode each token to text, as run does
  -n TOKENS     tokens to generate (default 256)
  --prompt-tokens P
                first prefill a P-token prompt in batches and report its rate too
  --threads N   threads (default: every core)
  --scalar      use the scalar kernels (the specification) instead of SIMD
  --json        print one JSON object (the summary line goes to stderr)
reports tok/s, ms/token p50 and p99, time to first token, peak RSS,
allocations per token, and the fraction of this machine's streaming-read
bandwidth the decode reaches (bytes read per token x tok/s / bandwidth)
";

const LOGITS_USAGE: &str = "\
usage: barellama logits -m MODEL --tokens FILE -o OUT.bin [--threads N] [--ctx N] [--kv f32|f16]
  feeds the whitespace-separated ids of FILE one at a time from position 0 and
  writes the logits after each of the first (ids - 1) in L2CG format; the
  logits are bitwise the same for every --threads
";

const TOKENIZE_USAGE: &str = "\
usage: barellama tokenize (-z TOKENIZER [-m MODEL] | -m MODEL.gguf) (-i TEXT | -f FILE) [--bos]
  prints the ids of TEXT (or of FILE's bytes) on one line; --bos puts BOS first
";

const INSPECT_USAGE: &str = "\
usage: barellama inspect -m MODEL
  prints the format, configuration and tensor table
";

const QUANTIZE_USAGE: &str = "\
usage: barellama quantize IN OUT --type TYPE [-z TOKENIZER]
       barellama convert IN OUT [-z TOKENIZER]       (quantize --type f32)
  IN            a llama2.c .bin (v0, v1) or GGUF file with F32 or F16 weights
  OUT           the GGUF file to write, or with --type v2 a llama2.c v2 file
  --type TYPE   f32, f16, q8_0, q4_0 (with a Q6_K classifier, as llama-quantize
                writes Q4_0), q4_0-pure (every matrix Q4_0), q4_k (llama-quantize's
                Q4_K_M mix of Q4_K and Q6_K), q6_k, or v2[:GS] (llama2.c's int8
                for runq, in groups of GS values; default 64)
  -z TOKENIZER  the GGUF file's vocabulary from a llama2.c tokenizer.bin
                (default: IN's own vocabulary, when IN is GGUF)
  rows are read, quantized and written one at a time: memory stays a row
  whatever the model's size; progress goes to stderr
";

/// Runs one command line and returns the process exit code; errors are
/// printed as one line on stderr.
pub fn main<H: Host>(host: &H, args: &[&[u8]]) -> i32 {
    match dispatch(host, args) {
        Ok(()) => 0,
        Err(e) => {
            let mut line = Line::new();
            let _ = writeln!(line, "barellama: {e}");
            host.eprint(line.as_bytes());
            e.exit_code()
        }
    }
}

fn dispatch<H: Host>(host: &H, args: &[&[u8]]) -> Result<()> {
    let Some((&command, rest)) = args.split_first() else {
        host.eprint(USAGE.as_bytes());
        return Err(Error::usage("missing command", b""));
    };
    let mut args = Args { rest, at: 0 };
    let (usage, run): (&str, Command<H>) = match command {
        b"run" => (RUN_USAGE, run::<H>),
        b"bench" => (BENCH_USAGE, bench::<H>),
        b"logits" => (LOGITS_USAGE, logits::<H>),
        b"tokenize" => (TOKENIZE_USAGE, tokenize::<H>),
        b"inspect" => (INSPECT_USAGE, inspect::<H>),
        b"quantize" => (QUANTIZE_USAGE, quantize::<H>),
        b"convert" => (QUANTIZE_USAGE, convert::<H>),
        b"help" | b"--help" | b"-h" => return host.print(USAGE.as_bytes()),
        _ => return Err(Error::usage("unknown command", command)),
    };
    if rest.iter().any(|&a| a == b"--help" || a == b"-h") {
        return host.print(usage.as_bytes());
    }
    run(host, &mut args)
}

/// A subcommand's entry point.
type Command<H> = fn(&H, &mut Args<'_>) -> Result<()>;

/// A cursor over one command's arguments.
struct Args<'a> {
    rest: &'a [&'a [u8]],
    at: usize,
}

impl<'a> Args<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let a = self.rest.get(self.at)?;
        self.at += 1;
        Some(a)
    }

    fn value(&mut self, flag: &[u8]) -> Result<&'a [u8]> {
        self.next()
            .ok_or_else(|| Error::usage("missing value after", flag))
    }

    fn number<T: core::str::FromStr>(&mut self, flag: &[u8]) -> Result<T> {
        let v = self.value(flag)?;
        core::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::usage("not a valid number", v))
    }

    /// A number that must satisfy `ok`, else "out of range".
    fn number_in<T: core::str::FromStr + Copy>(
        &mut self,
        flag: &[u8],
        ok: impl Fn(T) -> bool,
    ) -> Result<T> {
        let v = self.number(flag)?;
        if ok(v) {
            Ok(v)
        } else {
            Err(Error::usage("value out of range", self.rest[self.at - 1]))
        }
    }
}

fn unknown(flag: &[u8]) -> Error {
    Error::usage("unknown option", flag)
}

fn required<'a>(v: Option<&'a [u8]>, flag: &'static str) -> Result<&'a [u8]> {
    v.ok_or_else(|| Error::usage("missing required option", flag.as_bytes()))
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

/// `fmt::Write` straight to the host's stdout, keeping the first error.
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
}

impl<H: Host> fmt::Write for Stdout<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.result.is_ok() {
            self.result = self.host.print(s.as_bytes());
        }
        self.result.as_ref().map_err(|_| fmt::Error).copied()
    }
}

macro_rules! out {
    ($host:expr, $($arg:tt)*) => {{
        let mut w = Stdout::new($host);
        let _ = write!(w, $($arg)*);
        w.result
    }};
}

/// The vocabulary: `-z`'s llama2.c tokenizer if given, else the one in a
/// GGUF model.
fn vocab<'h, H: Host>(host: &'h H, model: &Model<'h>, path: Option<&[u8]>) -> Result<Vocab<'h>> {
    match (path, model.gguf) {
        (Some(path), _) => Ok(Vocab::Llama2c(host.map(path)?)),
        (None, Some(g)) => Ok(Vocab::Gguf(g)),
        (None, None) => Err(Error::usage(
            "a llama2.c model needs a tokenizer",
            b"-z TOKENIZER",
        )),
    }
}

/// Most `--stop` strings `run` takes.
const MAX_STOPS: usize = 8;

/// Bytes of one chat line per position of context: a line longer than this
/// would not fit in the context anyway.
const LINE_BYTES_PER_POSITION: usize = 8;

/// `--stop TEXT`: UTF-8, so matches fall on character boundaries and the
/// output stays valid UTF-8.
fn stop_flag<'a>(args: &mut Args<'a>, flag: &[u8]) -> Result<&'a str> {
    let v = args.value(flag)?;
    core::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= MAX_STOP_BYTES)
        .ok_or_else(|| Error::usage("--stop takes 1 to 64 bytes of UTF-8", v))
}

/// The chat format: `--template`, else the one a GGUF file's
/// `tokenizer.chat_template` shows, else (llama2.c files) llama2.c's own.
fn chat_template(model: &Model<'_>, chosen: Option<Template>) -> Result<Template> {
    let Some(g) = model.gguf.filter(|_| chosen.is_none()) else {
        return Ok(chosen.unwrap_or(Template::Llama2));
    };
    let jinja = g.string("tokenizer.chat_template")?;
    jinja.and_then(Template::recognize).ok_or_else(|| {
        Error::usage(
            "the model's tokenizer.chat_template is missing or not one of llama2, zephyr; \
             choose with --template",
            b"",
        )
    })
}

fn run<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut model, mut tokenizer, mut prompt, mut prompt_file) = (None, None, None, None);
    let mut steps = None;
    let mut sampler = SamplerConfig::default();
    let (mut seed, mut threads, mut ctx, mut kv) = (None, None, None, None);
    let (mut chat, mut system, mut template) = (false, None, None);
    let mut beams = 0usize;
    let mut stops = heapless::Vec::<&str, MAX_STOPS>::new();
    while let Some(flag) = args.next() {
        match flag {
            b"--threads" => threads = Some(threads_flag(args, flag)?),
            b"--ctx" => ctx = Some(ctx_flag(args, flag)?),
            b"--kv" => kv = Some(kv_flag(args, flag)?),
            b"-m" => model = Some(args.value(flag)?),
            b"-z" => tokenizer = Some(args.value(flag)?),
            b"-i" => prompt = Some(args.value(flag)?),
            b"-f" => prompt_file = Some(args.value(flag)?),
            b"-n" => steps = Some(args.number(flag)?),
            b"-t" => {
                sampler.temperature = args.number_in(flag, |t: f32| t >= 0.0 && t.is_finite())?
            }
            b"-p" => sampler.topp = args.number_in(flag, |p: f32| (0.0..=1.0).contains(&p))?,
            b"-k" => sampler.topk = args.number_in(flag, |k: usize| k > 0)?,
            b"-s" => seed = Some(args.number::<u64>(flag)?),
            b"--chat" => chat = true,
            b"--beams" => beams = args.number_in(flag, |b: usize| (1..=MAX_BEAMS).contains(&b))?,
            b"-y" => system = Some(args.value(flag)?),
            b"--template" => {
                let v = args.value(flag)?;
                template = Some(
                    Template::parse(v)
                        .ok_or_else(|| Error::usage("--template takes llama2 or zephyr", v))?,
                );
            }
            b"--stop" => {
                let s = stop_flag(args, flag)?;
                stops
                    .push(s)
                    .map_err(|_| Error::usage("at most 8 --stop strings", s.as_bytes()))?;
            }
            _ => return Err(unknown(flag)),
        }
    }
    if !chat {
        let chat_only = [(system.is_some(), "-y"), (template.is_some(), "--template")];
        if let Some((_, flag)) = chat_only.iter().find(|(given, _)| *given) {
            return Err(Error::usage("only with --chat", flag.as_bytes()));
        }
    }
    let image = host.map(required(model, "-m MODEL")?)?;
    let model = Model::load(image)?;
    let vocab = vocab(host, &model, tokenizer)?;
    let prompt = prompt_text(host, prompt, prompt_file)?;
    let context = ctx.unwrap_or(model.config.seq_len);
    let positions = |n: usize| match n {
        0 => Ok(context),
        n if n <= context => Ok(n),
        n => Err(too_many("-n exceeds the context (see --ctx)", n)),
    };
    // Like llama2.c: no seed (or 0) means the clock, which is never 0 here.
    sampler.seed = match seed {
        Some(s) if s != 0 => s,
        _ => host.now_ns() | 1,
    };
    let compute = compute(host, threads)?;
    if chat {
        let template = chat_template(&model, template)?;
        let system = system.unwrap_or_default();
        let line = host.memory(context.saturating_mul(LINE_BYTES_PER_POSITION))?;
        let text = host.memory(
            line.len()
                .saturating_add(system.len())
                .saturating_add(TEMPLATE_BYTES),
        )?;
        let plan = plan_for(&model, context, text.len(), kv, 0)?;
        let arena = host.memory(plan.bytes())?;
        let mut session = Session::new(&model, vocab, sampler, &plan, arena, compute)?;
        let mut chat = Chat::new(template, system, text);
        // In chat -n limits each answer; the context limits them all.
        let answer = positions(steps.unwrap_or(0))?;
        return converse(host, &mut session, &mut chat, prompt, line, answer, &stops);
    }

    let prompt = prompt.unwrap_or_default();
    let steps = positions(steps.unwrap_or(256))?;
    if beams > 0 {
        if chat || !stops.is_empty() {
            return Err(Error::usage(
                "--beams goes without --chat and --stop",
                b"--beams",
            ));
        }
        let plan = plan_for(&model, steps, prompt.len().max(1), kv, beams)?;
        let arena = host.memory(plan.bytes())?;
        let mut session = Session::new(&model, vocab, sampler, &plan, arena, compute)?;
        return beam_text(host, &mut session, prompt, steps, beams);
    }
    let plan = plan_for(&model, steps, prompt.len().max(1), kv, 0)?;
    let arena = host.memory(plan.bytes())?;
    let mut session = Session::new(&model, vocab, sampler, &plan, arena, compute)?;
    let start = host.now_ns();
    session.extend(prompt)?;
    // The prompt's text is printed too (after BOS), as llama2.c does.
    let mut text = TextStream::new();
    let pairs = session.input().windows(2).map(|w| (w[0], w[1]));
    print_pieces(host, &session.tokenizer, &mut text, pairs)?;
    let left = steps - session.position();
    reply_text(host, &mut session, text, left, &stops)?;
    host.print(b"\n")?;
    let pos = session.position();
    if pos > 1 {
        let secs = (host.now_ns() - start) as f64 / 1e9;
        let mut line = Line::new();
        let _ = writeln!(line, "achieved tok/s: {:.6}", pos as f64 / secs);
        host.eprint(line.as_bytes());
    }
    Ok(())
}

/// Prints the text of each `(previous, id)` token pair through `text`.
fn print_pieces<H: Host>(
    host: &H,
    tokenizer: &Tokenizer<'_, '_>,
    text: &mut TextStream,
    pairs: impl Iterator<Item = (u32, u32)>,
) -> Result<()> {
    let mut out = Stdout::new(host);
    for (prev, id) in pairs {
        text.push(tokenizer.decode(prev, id), &mut |s: &str| {
            let _ = out.write_str(s);
        });
    }
    out.result
}

/// `run --beams`: the prompt's text, then the best hypothesis's, and the
/// score and speed on stderr.
fn beam_text<H: Host>(
    host: &H,
    session: &mut Session<'_, '_>,
    prompt: &[u8],
    steps: usize,
    beams: usize,
) -> Result<()> {
    let start = host.now_ns();
    let outcome = session.beam_search(prompt, steps, beams)?;
    let tokens = session.beam_tokens(&outcome);
    let secs = (host.now_ns() - start) as f64 / 1e9;
    let mut text = TextStream::new();
    let input = session.input();
    let last = input.last().copied().unwrap_or(0);
    let pairs = input.windows(2).map(|w| (w[0], w[1]));
    let answer = core::iter::once(last).chain(tokens.iter().copied());
    let answer = answer.clone().zip(answer.skip(1));
    print_pieces(host, &session.tokenizer, &mut text, pairs.chain(answer))?;
    let mut out = Stdout::new(host);
    text.finish(&mut |s: &str| {
        let _ = out.write_str(s);
    });
    let _ = out.write_str("\n");
    out.result?;
    let positions = input.len() + tokens.len();
    let mut line = Line::new();
    let _ = writeln!(
        line,
        "beam search: {beams} beams, {} tokens, {:.4} log-probability per token{}; \
         achieved tok/s: {:.6}",
        tokens.len(),
        outcome.score,
        if outcome.finished {
            ", ended by EOS"
        } else {
            ""
        },
        positions as f64 / secs
    );
    host.eprint(line.as_bytes());
    Ok(())
}

/// Samples up to `max_tokens` tokens and prints their text, continuing
/// `text` (valid UTF-8 whatever the model emits) with the stop strings
/// withheld.
fn reply_text<H: Host>(
    host: &H,
    session: &mut Session<'_, '_>,
    mut text: TextStream,
    max_tokens: usize,
    stops: &[&str],
) -> Result<End> {
    let mut stop = StopText::new(stops)?;
    let mut out = Stdout::new(host);
    let end = session.reply(max_tokens, |_, piece| {
        let mut hit = false;
        text.push(piece, &mut |s: &str| {
            hit = stop.push(s, &mut |t: &str| {
                let _ = out.write_str(t);
            });
        });
        out.result.clone()?;
        Ok(match hit {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        })
    })?;
    let mut print = |t: &str| {
        let _ = out.write_str(t);
    };
    text.finish(&mut |s: &str| {
        stop.push(s, &mut print);
    });
    stop.finish(&mut print);
    out.result?;
    Ok(end)
}

/// The chat loop: `first` (from -i or -f) and then each line of standard
/// input is a user turn, answered on its own line(s); the conversation
/// stays in the context until end of input or until the context is full.
fn converse<H: Host>(
    host: &H,
    session: &mut Session<'_, '_>,
    chat: &mut Chat<'_>,
    mut first: Option<&[u8]>,
    line: &mut [u8],
    max_tokens: usize,
    stops: &[&str],
) -> Result<()> {
    let interactive = host.interactive();
    loop {
        let user = match first.take() {
            Some(text) => text,
            None => {
                if interactive {
                    host.print(b"User: ")?;
                }
                match host.read_line(line)? {
                    Some(n) => line[..n].strip_suffix(b"\r").unwrap_or(&line[..n]),
                    None => break,
                }
            }
        };
        if user.is_empty() {
            continue;
        }
        chat.user(session, user)?;
        if interactive {
            host.print(b"Assistant: ")?;
        }
        let end = reply_text(host, session, TextStream::new(), max_tokens, stops)?;
        host.print(b"\n")?;
        if end == End::ContextFull {
            return Err(Error::ContextFull {
                needed: session.position() + 1,
                max: session.transformer.config().seq_len,
            });
        }
    }
    if interactive {
        host.print(b"\n")?;
    }
    Ok(())
}

/// Parses whitespace-separated token ids into host memory.
fn read_ids<'h, H: Host>(host: &'h H, path: &[u8], vocab: usize) -> Result<&'h [u32]> {
    let text = host.map(path)?;
    let words = || {
        text.split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
    };
    let n = words().count();
    let ids: &mut [u32] =
        cast_slice_mut(host.memory(n.max(1) * 4)?).ok_or(Error::OutOfMemory { bytes: n * 4 })?;
    for (slot, word) in ids.iter_mut().zip(words()) {
        let id = core::str::from_utf8(word)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| Error::File {
                path: crate::error::text(path),
                problem: "holds something that is not a token id",
                errno: 0,
            })?;
        if id as usize >= vocab {
            return Err(Error::Token {
                id: id.into(),
                vocab,
            });
        }
        *slot = id;
    }
    Ok(&ids[..n])
}

fn logits<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut model, mut tokens, mut output) = (None, None, None);
    let (mut threads, mut ctx, mut kv) = (None, None, None);
    while let Some(flag) = args.next() {
        match flag {
            b"--threads" => threads = Some(threads_flag(args, flag)?),
            b"--ctx" => ctx = Some(ctx_flag(args, flag)?),
            b"--kv" => kv = Some(kv_flag(args, flag)?),
            b"-m" => model = Some(args.value(flag)?),
            b"--tokens" => tokens = Some(args.value(flag)?),
            b"-o" => output = Some(args.value(flag)?),
            _ => return Err(unknown(flag)),
        }
    }
    let model = Model::load(host.map(required(model, "-m MODEL")?)?)?;
    let vocab = model.config.vocab_size;
    let ids = read_ids(host, required(tokens, "--tokens FILE")?, vocab)?;
    let output = required(output, "-o OUT")?;
    if ids.len() < 2 {
        return Err(Error::usage("the token file needs at least two ids", b""));
    }
    let steps = ids.len() - 1;
    let context = ctx.unwrap_or(model.config.seq_len);
    if steps > context {
        return Err(Error::ContextFull {
            needed: steps,
            max: context,
        });
    }
    let plan = plan_for(&model, steps, 1, kv, 0)?;
    let buffers = plan.carve(host.memory(plan.bytes())?)?;
    let mut transformer = Transformer::new(
        &model,
        plan.config(),
        buffers.state,
        compute(host, threads)?,
    )?;

    let mut file = host.create(output)?;
    let mut header = heapless::Vec::<u8, 20>::new();
    for word in [
        0x4743_324c_u32,
        1,
        steps as u32,
        vocab as u32,
        ids.len() as u32,
    ] {
        let _ = header.extend_from_slice(&word.to_le_bytes());
    }
    file.write(&header)?;
    write_le(&mut file, ids.iter().map(|&i| i.to_le_bytes()))?;
    for (pos, &id) in ids[..steps].iter().enumerate() {
        let logits = transformer.forward(id, pos)?;
        write_le(&mut file, logits.iter().map(|v| v.to_le_bytes()))?;
    }
    Ok(())
}

/// What `quantize` writes.
#[derive(Clone, Copy)]
enum Target {
    Gguf(Layout),
    /// llama2.c v2 with this group size.
    V2(u32),
}

fn target(v: &[u8]) -> Result<Target> {
    let bad = || {
        Error::usage(
            "--type takes f32, f16, q8_0, q4_0, q4_0-pure, q4_k, q6_k or v2[:GS]",
            v,
        )
    };
    match v.strip_prefix(b"v2") {
        Some(b"") => Ok(Target::V2(64)),
        Some([b':', gs @ ..]) => core::str::from_utf8(gs)
            .ok()
            .and_then(|g| g.parse().ok())
            .filter(|&g| g > 0)
            .map(Target::V2)
            .ok_or_else(bad),
        _ => Layout::parse(v).map(Target::Gguf).ok_or_else(bad),
    }
}

fn quantize<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    write_model(host, args, None)
}

fn convert<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    write_model(host, args, Some(Target::Gguf(Layout::F32)))
}

/// A [`Target`] with what writing it needs.
enum Job<'m> {
    Gguf(Layout, Vocabulary<'m>),
    V2(u32),
}

/// `quantize` and `convert` (whose type is fixed).
fn write_model<H: Host>(host: &H, args: &mut Args<'_>, fixed: Option<Target>) -> Result<()> {
    let (mut paths, mut kind, mut tokenizer) = (heapless::Vec::<&[u8], 2>::new(), fixed, None);
    while let Some(a) = args.next() {
        match a {
            b"--type" if fixed.is_none() => kind = Some(target(args.value(a)?)?),
            b"-z" => tokenizer = Some(args.value(a)?),
            _ if !a.starts_with(b"-") => paths
                .push(a)
                .map_err(|_| Error::usage("more than IN and OUT", a))?,
            _ => return Err(unknown(a)),
        }
    }
    let [input, output] = paths[..] else {
        return Err(Error::usage("needs IN and OUT", b""));
    };
    let kind = kind.ok_or_else(|| Error::usage("missing required option", b"--type"))?;
    let model = Model::load(host.map(input)?)?;
    check_float(&model)?;
    // Everything that can be refused is, before OUT exists.
    let job = match (kind, tokenizer, model.gguf) {
        (Target::V2(group), _, _) => {
            check_groups(&model, group)?;
            Job::V2(group)
        }
        (Target::Gguf(l), Some(z), _) => Job::Gguf(l, Vocabulary::Llama2c(host.map(z)?)),
        (Target::Gguf(l), None, Some(g)) => Job::Gguf(l, Vocabulary::Gguf(g)),
        (Target::Gguf(_), None, None) => {
            return Err(Error::usage(
                "a llama2.c model needs -z TOKENIZER for the GGUF vocabulary",
                b"",
            ))
        }
    };
    let c = model.config;
    // The longest row of any matrix.
    let widest = c.dim.max(c.hidden_dim);
    let row = cast_slice_mut::<f32>(host.memory(4 * widest)?)
        .ok_or(Error::OutOfMemory { bytes: 4 * widest })?;
    let mut file = Buffered::new(host.create(output)?, host.memory(1 << 16)?);
    let started = host.now_ns();
    let report = |index: usize, count: usize, name: &[u8], dtype: &str, shape: (usize, usize)| {
        let mut line = Line::new();
        let name = core::str::from_utf8(name).unwrap_or("?");
        let _ = writeln!(
            line,
            "[{:>4}/{count}] {name:<28} {dtype:<5} {}x{}",
            index + 1,
            shape.1,
            shape.0
        );
        host.eprint(line.as_bytes());
    };
    match job {
        Job::Gguf(layout, vocab) => {
            let scratch = host.memory(longest_row(&c, layout)?)?;
            let mut progress = |i: usize, n: usize, t: &TensorSpec<'_>| {
                report(i, n, t.name, t.dtype.name(), (t.cols, t.rows))
            };
            let mut source = Quantize {
                model: &model,
                vocab,
                row,
                progress: &mut progress,
            };
            write_gguf(&c, layout, &mut source, &mut file, scratch)?;
        }
        Job::V2(group) => {
            // A row's values and its scales (at most one per value).
            let bytes = host.memory(5 * widest)?;
            let mut progress = |i: usize, n: usize, name: &'static str, shape: (usize, usize)| {
                report(i, n, name.as_bytes(), "Q8_G", shape)
            };
            write_llama2c_v2(&model, group, &mut file, row, bytes, &mut progress)?;
        }
    }
    file.flush()?;
    let mut line = Line::new();
    let secs = (host.now_ns() - started) as f64 / 1e9;
    let _ = writeln!(
        line,
        "barellama: wrote {} in {secs:.1} s",
        core::str::from_utf8(output).unwrap_or("?")
    );
    host.eprint(line.as_bytes());
    Ok(())
}

/// Writes 4-byte little-endian words through a small stack buffer.
fn write_le(out: &mut impl Output, words: impl Iterator<Item = [u8; 4]>) -> Result<()> {
    let mut buf = [0u8; 4096];
    let mut n = 0;
    for w in words {
        buf[n..n + 4].copy_from_slice(&w);
        n += 4;
        if n == buf.len() {
            out.write(&buf)?;
            n = 0;
        }
    }
    out.write(&buf[..n])
}

fn tokenize<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut model, mut tokenizer, mut text, mut file, mut bos) = (None, None, None, None, false);
    while let Some(flag) = args.next() {
        match flag {
            b"-m" => model = Some(args.value(flag)?),
            b"-z" => tokenizer = Some(args.value(flag)?),
            b"-i" => text = Some(args.value(flag)?),
            b"-f" => file = Some(args.value(flag)?),
            b"--bos" => bos = true,
            _ => return Err(unknown(flag)),
        }
    }
    let text = required(prompt_text(host, text, file)?, "-i TEXT or -f FILE")?;
    // The vocabulary alone: a GGUF file with no tensors is enough.
    let (vocab, vocab_size) = match (tokenizer, model) {
        (Some(z), model) => {
            let bytes = host.map(z)?;
            let n = match model {
                Some(path) => Model::load(host.map(path)?)?.config.vocab_size,
                None => llama2c_vocab_size(bytes)?,
            };
            (Vocab::Llama2c(bytes), n)
        }
        (None, Some(path)) => {
            let g = Gguf::parse(host.map(path)?)?;
            let n = g
                .array("tokenizer.ggml.tokens", ValueType::String)?
                .map_or(0, |(n, _)| n as usize);
            (Vocab::Gguf(g), n)
        }
        (None, None) => {
            return Err(Error::usage(
                "tokenize needs",
                b"-z TOKENIZER or -m MODEL.gguf",
            ))
        }
    };
    let plan = TokenizerPlan::new(vocab_size, text.len())?;
    let buffers = plan.carve(host.memory(plan.bytes())?)?;
    let mut tok = match vocab {
        Vocab::Llama2c(bytes) => Tokenizer::from_llama2c(bytes, vocab_size, buffers)?,
        Vocab::Gguf(g) => Tokenizer::from_gguf(&g, vocab_size, buffers)?,
    };
    let ids = tok.encode(text, bos, false)?;
    let mut w = Stdout::new(host);
    for (i, id) in ids.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(w, "{sep}{id}");
    }
    let _ = w.write_str("\n");
    w.result
}

fn inspect<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let mut model = None;
    while let Some(flag) = args.next() {
        match flag {
            b"-m" => model = Some(args.value(flag)?),
            _ => return Err(unknown(flag)),
        }
    }
    let image = host.map(required(model, "-m MODEL")?)?;
    if image.starts_with(b"GGUF") {
        let g = Gguf::parse(image)?;
        inspect_gguf(host, &g)?;
        // A GGUF file may hold metadata only, or a model this engine
        // cannot run: say so, but the listing above is the answer.
        return match Model::load(image) {
            Ok(m) => inspect_config(host, &m),
            Err(e) => out!(host, "not runnable here: {e}\n"),
        };
    }
    let m = Model::load(image)?;
    if let Format::Llama2c {
        version,
        shared_classifier,
    } = m.format
    {
        let classifier = if shared_classifier {
            "shared"
        } else {
            "separate"
        };
        out!(
            host,
            "format: llama2.c v{version}, {classifier} classifier\n"
        )?;
    }
    inspect_config(host, &m)?;
    tensor_table_header(host)?;
    let w = &m.weights;
    let row = |name: fmt::Arguments<'_>, t: &WeightRef<'_>| {
        let mut label = Line::new();
        let _ = label.write_fmt(name);
        let offset = t.data().as_ptr() as usize - image.as_ptr() as usize;
        let shape = Dims([t.cols() as u64, t.rows() as u64, 1, 1], 2);
        out!(
            host,
            "{:<28} {:<6} {:>20} {:>12} {:>12}\n",
            Bytes(label.as_bytes()),
            t.dtype().name(),
            shape,
            t.data().len(),
            offset
        )
    };
    row(format_args!("token_embedding"), &w.token_embedding)?;
    for (l, lw) in w.layers.iter().enumerate() {
        let tensors = [
            ("rms_att", &lw.rms_att),
            ("wq", &lw.wq),
            ("wk", &lw.wk),
            ("wv", &lw.wv),
            ("wo", &lw.wo),
            ("rms_ffn", &lw.rms_ffn),
            ("w1", &lw.w1),
            ("w2", &lw.w2),
            ("w3", &lw.w3),
        ];
        for (name, t) in tensors {
            row(format_args!("layers.{l}.{name}"), t)?;
        }
    }
    row(format_args!("rms_final"), &w.rms_final)?;
    row(format_args!("wcls"), &w.wcls)
}

/// The column titles of `inspect`'s tensor table, for both formats.
fn tensor_table_header<H: Host>(host: &H) -> Result<()> {
    out!(
        host,
        "{:<28} {:<6} {:>20} {:>12} {:>12}\n",
        "tensor",
        "type",
        "shape",
        "bytes",
        "offset"
    )
}

fn inspect_config<H: Host>(host: &H, m: &Model<'_>) -> Result<()> {
    let c = &m.config;
    out!(
        host,
        "dim {} hidden_dim {} n_layers {} n_heads {} n_kv_heads {} vocab_size {} seq_len {}\n\
         head_size {} rope_theta {} norm_eps {}\n\
         weights read per token: {} bytes\n",
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        c.seq_len,
        c.head_size(),
        c.rope_theta,
        c.norm_eps,
        m.bytes_per_token(),
    )
}

/// Metadata (arrays shown by type, length and first elements) and tensors.
fn inspect_gguf<H: Host>(host: &H, g: &Gguf<'_>) -> Result<()> {
    out!(
        host,
        "format: GGUF v{}, alignment {}, {} tensors\n",
        g.version,
        g.alignment,
        g.tensor_count()
    )?;
    for kv in g.metadata() {
        let (key, ty, value) = kv?;
        out!(
            host,
            "{:<44} {:<7} {}\n",
            Bytes(key),
            ty.name(),
            Shown(value)
        )?;
    }
    tensor_table_header(host)?;
    for t in g.tensors() {
        let t = t?;
        out!(
            host,
            "{:<28} {:<6} {:>20} {:>12} {:>12}\n",
            Bytes(t.name),
            t.dtype.name(),
            Dims(t.dims, t.n_dims),
            t.bytes,
            g.file_offset(&t)
        )?;
    }
    Ok(())
}

/// Bytes shown as text (lossy), padded as one field.
struct Bytes<'a>(&'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = Line::new();
        for chunk in self.0.utf8_chunks() {
            let _ = s.write_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                let _ = s.write_char(char::REPLACEMENT_CHARACTER);
            }
        }
        f.pad(core::str::from_utf8(s.as_bytes()).unwrap_or("?"))
    }
}

/// A metadata value: strings quoted and cut at 60 bytes, arrays summarized.
struct Shown<'a>(Value<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Uint(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(s) => {
                let cut = &s[..s.len().min(60)];
                write!(f, "\"{}\"", Bytes(cut).to_escaped())?;
                if cut.len() < s.len() {
                    write!(f, "… ({} bytes)", s.len())?;
                }
                Ok(())
            }
            Value::Array { elem, len, .. } => write!(f, "[{}; {len}]", elem.name()),
        }
    }
}

impl Bytes<'_> {
    /// The text with control characters shown as escapes, for one line.
    fn to_escaped(&self) -> Line {
        let mut s = Line::new();
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                let _ = match c {
                    '\n' => s.write_str("\\n"),
                    c if c.is_control() => write!(s, "\\u{{{:x}}}", c as u32),
                    c => s.write_char(c),
                };
            }
            if !chunk.invalid().is_empty() {
                let _ = s.write_char(char::REPLACEMENT_CHARACTER);
            }
        }
        s
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(core::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

/// A tensor shape as GGML writes it, `ne0×ne1…`, padded as one field.
struct Dims([u64; 4], usize);

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = Line::new();
        for (i, d) in self.0[..self.1].iter().enumerate() {
            let _ = write!(s, "{}{d}", if i == 0 { "" } else { "x" });
        }
        f.pad(core::str::from_utf8(s.as_bytes()).unwrap_or("?"))
    }
}

/// Results of one benchmark run.
struct BenchReport<'a> {
    model: &'a str,
    /// The type of the bulk of the weights (a layer's wq).
    format: &'static str,
    isa: Isa,
    threads: usize,
    tokens: usize,
    tok_per_s: f64,
    /// Prompt tokens and their prefill rate, with `--prompt-tokens`.
    prefill: Option<(usize, f64)>,
    ms_p50: f64,
    ms_p99: f64,
    ttft_ms: f64,
    rss_mb: f64,
    allocs_per_token: f64,
    /// Weight and KV-cache bytes read per decoded token, on average.
    bytes_per_token: f64,
    /// Streaming-read bandwidth (median probe) on the run's threads, bytes/s.
    bandwidth: f64,
    /// The same on one thread.
    bandwidth_1t: f64,
}

/// A weight image at least this large is its own bandwidth probe; smaller
/// models fit in the caches and are probed with a dedicated buffer.
const PROBE_MIN_BYTES: usize = 256 << 20;
/// The dedicated probe buffer: far beyond any L3 we run on.
const PROBE_BYTES: usize = 1 << 30;
/// Decode tokens between two probe passes.
const PROBE_EVERY: usize = 16;

/// Times one streaming read of `buf` with the sum kernel on `compute`'s
/// threads, each claiming 1 MiB pieces in turn.
fn probe_pass<H: Host>(host: &H, compute: Compute<'_>, buf: &[u8]) -> u64 {
    const PIECE: usize = 1 << 20;
    let buf = &buf[..buf.len() / 4 * 4];
    let t = host.now_ns();
    for_each(compute.exec, buf.len().div_ceil(PIECE), &|i| {
        let piece = &buf[i * PIECE..buf.len().min((i + 1) * PIECE)];
        core::hint::black_box(crate::kernels::sum(
            compute.isa,
            core::hint::black_box(piece),
        ));
    });
    (host.now_ns() - t).max(1)
}

/// The memory-bandwidth probe of a benchmark run: streaming reads timed on
/// the decode's threads and, when those are several, on one thread too.
struct Probe<'h> {
    compute: Compute<'h>,
    /// The weight image when it is large enough to probe (see [`PROBE_MIN_BYTES`]).
    image: Option<&'h [u8]>,
    /// Pass times: `[..n]` on all threads, `[half..half + n1]` on one.
    times: &'h mut [u64],
    n: usize,
    n1: usize,
}

impl<'h> Probe<'h> {
    fn new<H: Host>(
        host: &'h H,
        compute: Compute<'h>,
        image: &'h [u8],
        tokens: usize,
    ) -> Result<Self> {
        let slots = 2 * (tokens / PROBE_EVERY + 3);
        Ok(Probe {
            compute,
            image: (image.len() >= PROBE_MIN_BYTES).then_some(image),
            times: cast_slice_mut(host.memory(slots * 8)?)
                .ok_or(Error::OutOfMemory { bytes: slots * 8 })?,
            n: 0,
            n1: 0,
        })
    }

    /// One pass over `buf`, alternating between all threads and one.
    fn pass<H: Host>(&mut self, host: &H, buf: &[u8]) {
        let half = self.times.len() / 2;
        if self.n > self.n1 && self.compute.exec.threads() > 1 {
            let one = Compute::single(self.compute.isa);
            self.times[half + self.n1] = probe_pass(host, one, buf);
            self.n1 += 1;
        } else {
            self.times[self.n] = probe_pass(host, self.compute, buf);
            self.n += 1;
        }
    }

    /// Between decode tokens: a large image is streamed in place, so the
    /// bandwidth is sampled over the same seconds and pages as the decode.
    fn between_tokens<H: Host>(&mut self, host: &H, pos: usize) {
        if let Some(image) = self.image.filter(|_| pos.is_multiple_of(PROBE_EVERY)) {
            self.pass(host, image);
        }
    }

    /// Median bandwidths in bytes/s on all threads and on one; passes over
    /// a dedicated buffer first if none were taken during the decode.
    fn finish<H: Host>(mut self, host: &'h H) -> Result<(f64, f64)> {
        let buf: &[u8] = match self.image {
            Some(image) => image,
            None => {
                let buf = host.memory(PROBE_BYTES)?;
                buf.fill(0);
                buf
            }
        };
        while self.n < 3 || (self.n1 < 3 && self.compute.exec.threads() > 1) {
            self.pass(host, buf);
        }
        let bytes = (buf.len() / 4 * 4) as f64;
        let half = self.times.len() / 2;
        let median = |t: &mut [u64]| {
            t.sort_unstable();
            bytes / (t[t.len() / 2] as f64 / 1e9)
        };
        let all = median(&mut self.times[..self.n]);
        let one = match self.n1 {
            0 => all,
            n1 => median(&mut self.times[half..half + n1]),
        };
        Ok((all, one))
    }
}

fn bench<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut model_path, mut tokenizer, mut tokens) = (None, None, 256usize);
    let (mut json, mut scalar, mut threads, mut ctx, mut kv) = (false, false, None, None, None);
    let mut layout = Synthetic::Gguf(Layout::F32);
    let mut prompt_tokens = 0usize;
    while let Some(flag) = args.next() {
        match flag {
            b"--format" => {
                let v = args.value(flag)?;
                layout = Synthetic::parse(v).ok_or_else(|| {
                    Error::usage(
                        "--format takes f32, f16, q8_0, q4_0, q4_0-pure, q4_k, q6_k or v2",
                        v,
                    )
                })?;
            }
            b"--threads" => threads = Some(threads_flag(args, flag)?),
            b"--ctx" => ctx = Some(ctx_flag(args, flag)?),
            b"--kv" => kv = Some(kv_flag(args, flag)?),
            b"-m" => model_path = Some(args.value(flag)?),
            b"-z" => tokenizer = Some(args.value(flag)?),
            b"-n" => tokens = args.number_in(flag, |n: usize| n > 0)?,
            b"--prompt-tokens" => prompt_tokens = args.number(flag)?,
            b"--scalar" => scalar = true,
            b"--json" => json = true,
            _ => return Err(unknown(flag)),
        }
    }
    let image: &[u8] = match model_path {
        Some(path) => host.map(path)?,
        None => {
            let shape = synth::STORIES110M;
            let buf = host.memory(synth::image_bytes(&shape, layout)?)?;
            synth::write_image(&shape, layout, 0x5EED, buf)?;
            buf
        }
    };
    let model = Model::load(image)?;
    let c = model.config;
    // The prompt (or BOS alone), then the decoded tokens.
    let prompt_len = prompt_tokens.max(1);
    let positions = tokens.saturating_add(prompt_len);
    if positions > ctx.unwrap_or(c.seq_len) {
        return Err(too_many(
            "-n plus --prompt-tokens exceeds the context (see --ctx)",
            positions,
        ));
    }
    let plan = plan_for(&model, positions, 1, kv, 0)?;
    let b = plan.carve(host.memory(plan.bytes())?)?;
    let mut compute = compute(host, threads)?;
    if scalar {
        compute.isa = Isa::SCALAR;
    }
    let mut transformer = Transformer::new(&model, plan.config(), b.state, compute)?;
    let mut sampler = Sampler::new(SamplerConfig::default(), b.candidates, compute.isa);
    let tok = match tokenizer {
        Some(path) => Some(Tokenizer::from_llama2c(
            host.map(path)?,
            c.vocab_size,
            b.tokenizer,
        )?),
        None => None,
    };
    let times: &mut [u64] =
        cast_slice_mut(host.memory(tokens * 8)?).ok_or(Error::OutOfMemory { bytes: tokens * 8 })?;
    let mut probe = Probe::new(
        host,
        Compute {
            isa: host.isa(),
            ..compute
        },
        image,
        tokens,
    )?;

    // BOS and seeded ids stand for the prompt (its text does not change
    // the work); the time to the first sampled token is the TTFT.
    let prompt = &mut b.prompt[..prompt_len];
    let mut rng = 0x5EEDu64;
    for (i, id) in prompt.iter_mut().enumerate() {
        let r = random_u32(&mut rng);
        *id = if i == 0 { 1 } else { r % c.vocab_size as u32 };
    }
    let t0 = host.now_ns();
    let mut token = sampler.sample(transformer.prefill(prompt, 0)?);
    let ttft = host.now_ns() - t0;
    let prefill_tok_per_s = (prompt_tokens > 0).then(|| prompt_len as f64 / (ttft as f64 / 1e9));
    let mut stream = TextStream::new();
    let mut step = |token: u32, pos: usize| -> Result<u32> {
        let next = sampler.sample(transformer.forward(token, pos)?);
        if let Some(t) = &tok {
            stream.push(t.decode(token, next), &mut |_| {});
        }
        Ok(next)
    };
    let allocs_before = host.allocations();
    for (pos, slot) in (prompt_len..).zip(times.iter_mut()) {
        probe.between_tokens(host, pos);
        let t = host.now_ns();
        token = step(token, pos)?;
        *slot = host.now_ns() - t;
    }
    let allocs = host.allocations() - allocs_before;
    let rss = host.peak_rss_bytes();
    let (bandwidth, bandwidth_1t) = probe.finish(host)?;

    let total: u64 = times.iter().sum();
    times.sort_unstable();
    let pct =
        |p: f64| times[(libm::ceil(p * tokens as f64) as usize).clamp(1, tokens) - 1] as f64 / 1e6;
    // Attention at position p reads p + 1 cached keys and values per layer.
    let mean_positions = prompt_len as f64 + (tokens as f64 + 1.0) / 2.0;
    let kv_bytes = mean_positions * (c.n_layers * c.kv_dim() * 2 * 4) as f64;
    let report = BenchReport {
        format: model.weights.layers[0].wq.dtype().name(),
        threads: compute.exec.threads(),
        model: match model_path {
            Some(p) => core::str::from_utf8(p).unwrap_or("model"),
            None => "synthetic-stories110M",
        },
        isa: compute.isa,
        tokens,
        tok_per_s: tokens as f64 / (total as f64 / 1e9),
        prefill: prefill_tok_per_s.map(|t| (prompt_tokens, t)),
        ms_p50: pct(0.5),
        ms_p99: pct(0.99),
        ttft_ms: ttft as f64 / 1e6,
        rss_mb: rss as f64 / 1e6,
        allocs_per_token: allocs as f64 / tokens as f64,
        bytes_per_token: model.bytes_per_token() as f64 + kv_bytes,
        bandwidth,
        bandwidth_1t,
    };
    report.print(host, json)
}

impl BenchReport<'_> {
    fn roofline(&self) -> f64 {
        self.bytes_per_token * self.tok_per_s / self.bandwidth
    }

    fn print<H: Host>(&self, host: &H, json: bool) -> Result<()> {
        let r = self;
        let mut line = Line::new();
        let _ = writeln!(
            line,
            "{}: {}, {} thread{}, {}: {} tokens, {:.2} tok/s, p50 {:.2} ms, p99 {:.2} ms, \
             ttft {:.2} ms, peak RSS {:.0} MB, {} allocs/token; {:.1} MB/token at {:.2} GB/s \
             read bandwidth = {:.0}% of the roofline",
            r.model,
            r.format,
            r.threads,
            if r.threads == 1 { "" } else { "s" },
            r.isa.name(),
            r.tokens,
            r.tok_per_s,
            r.ms_p50,
            r.ms_p99,
            r.ttft_ms,
            r.rss_mb,
            r.allocs_per_token,
            r.bytes_per_token / 1e6,
            r.bandwidth / 1e9,
            r.roofline() * 100.0
        );
        if let Some((n, rate)) = r.prefill {
            let _ = writeln!(line, "prefill: {n} prompt tokens, {rate:.2} tok/s");
        }
        if !json {
            return host.print(line.as_bytes());
        }
        host.eprint(line.as_bytes());
        out!(
            host,
            "{{\"model\":\"{}\",\"format\":\"{}\",\"isa\":\"{}\",\"threads\":{},\"tokens\":{},\
             \"tok_per_s\":{:.3},\"ms_p50\":{:.3},\"ms_p99\":{:.3},\"ttft_ms\":{:.3},\"rss_mb\":{:.1},\
             \"allocs_per_token\":{},\"bytes_per_token\":{:.0},\"bandwidth_gb_s\":{:.3},\"bandwidth_1t_gb_s\":{:.3},\
             \"roofline\":{:.4}{}}}\n",
            JsonStr(r.model),
            r.format,
            r.isa.name(),
            r.threads,
            r.tokens,
            r.tok_per_s,
            r.ms_p50,
            r.ms_p99,
            r.ttft_ms,
            r.rss_mb,
            r.allocs_per_token,
            r.bytes_per_token,
            r.bandwidth / 1e9,
            r.bandwidth_1t / 1e9,
            r.roofline(),
            PrefillJson(r.prefill)
        )
    }
}

/// `,"prefill_tok_per_s":…` when a prompt was prefilled.
struct PrefillJson(Option<(usize, f64)>);

impl fmt::Display for PrefillJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((n, rate)) => write!(f, ",\"prompt_tokens\":{n},\"prefill_tok_per_s\":{rate:.3}"),
            None => Ok(()),
        }
    }
}

/// A string escaped for a JSON string literal.
struct JsonStr<'a>(&'a str);

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}
