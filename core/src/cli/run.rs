//! `run`: generate text after a prompt, chat (`--chat`), or beam search
//! (`--beams`). All three print through one [`TextSink`] per text.

use core::fmt::Write as _;
use core::ops::ControlFlow;

use crate::beam::MAX_BEAMS;
use crate::chat::{default_system, Chat, Template, TEMPLATE_BYTES};
use crate::error::{Error, Result};
use crate::generate::{End, Session, TextSink, MAX_STOP_BYTES};
use crate::image::Model;
use crate::sampler::SamplerConfig;

use super::args::{prompt_text, Args, Common, Size, Takes};
use super::{seconds_since, Host, Line, Stdout};

pub(super) const USAGE: &str = "\
usage: barellama run -m MODEL [-z TOKENIZER] [options]
  -m MODEL      llama2.c .bin checkpoint or GGUF file
  -z TOKENIZER  llama2.c tokenizer.bin (needed for a .bin model; default:
                the vocabulary inside a GGUF file)
  -i, --prompt PROMPT
                prompt text (default: empty)
  -f, --file FILE
                read the prompt from FILE instead, - for standard input (any
                bytes; invalid UTF-8 goes through byte tokens)
  -n STEPS      positions to run, prompt included, as llama2.c's steps (default
                and 0: the whole context; more is cut to the context)
  --n-predict N tokens to generate after the prompt, as llama.cpp's -n
  -t, --temp TEMP
                temperature, 0 = greedy (default 1.0)
  -p, --top-p TOPP
                nucleus sampling threshold in [0, 1] (default 0.9)
  -k, --top-k TOPK
                sample only from the TOPK most likely tokens (default 0: off)
  --min-p P     drop tokens less likely than P times the likeliest (default 0: off)
  --repeat-penalty R
                divide the logits of tokens seen in the last --repeat-last-n
                (multiply the negative ones) by R (default 1.0: off)
  --repeat-last-n N
                how far the penalties look back (default 64; 0: off; -1: the context)
  --presence-penalty A, --frequency-penalty B
                subtract A from a seen token's logit, and B per time seen (default 0)
  -s, --seed SEED
                random seed (default: the clock, printed on stderr)
  --threads N   threads (default: every core); results do not depend on it
  -c, --ctx N   context length (default: the model's, at most 4096; 0: the model's;
                may exceed it, as llama.cpp's -c); also --ctx-size
  --kv f32|f16  KV cache type (default: f32 for llama2.c files, f16 for GGUF,
                each computed as that format's reference engine does)
  --isa NAME    kernels up to this CPU's best: scalar, avx2, avx512 | neon, neon+dotprod
  --beams B     beam search with B hypotheses (1 to 8; 1 is greedy): prints the
                one with the best log-probability per token, at the end
  --stop TEXT   end the generated text where it contains TEXT, which is not
                printed (1 to 64 bytes of UTF-8; repeatable, up to 8 times)
  --chat        chat: each line of standard input (after -i PROMPT, if given) is
                a user turn, answered on the lines after it, until the input ends
                or Ctrl-D; Ctrl-C stops an answer, and at the prompt ends the
                chat. The conversation stays in the context (--ctx); when it is
                full the oldest turns are dropped (the system message stays).
                -n limits each answer (default: the context). Only answers go
                to stdout; the User:/Assistant: markers go to stderr
  -y SYSTEM, --system-prompt SYSTEM
                the chat's system message
  --template T  the chat format: llama2 ([INST] <<SYS>>, as llama2.c's chat),
                mistral ([INST] ... [/INST]), zephyr (<|user|> ... <|assistant|>,
                TinyLlama-Chat), chatml (<|im_start|>role ... <|im_end|>, SmolLM2)
                or llama3 (<|start_header_id|>role<|end_header_id|>); default:
                recognized from a GGUF file's tokenizer.chat_template (chatml,
                with a notice, when it is missing or unknown), llama2 for a .bin
  --verbose     in --chat, the speed after every answer
  the short letters are llama2.c's (-t temperature, -p top-p, -i prompt);
  llama.cpp's long forms are aliases, with --flag VALUE or --flag=VALUE.
  the prompt's special tokens (<|im_start|>, </s> ...) are those tokens; in
  --chat what the user types is text, and cannot close a turn
";

/// Most `--stop` strings `run` takes.
const MAX_STOPS: usize = 8;

/// Bytes of one chat line per position of context: a line longer than this
/// would not fit in the context anyway.
const LINE_BYTES_PER_POSITION: usize = 8;

/// Generated text printed to the host's stdout.
type Text<'s, 'h, H> = TextSink<'s, Stdout<'h, H>>;

/// `--stop TEXT`: UTF-8, so matches fall on character boundaries and the
/// output stays valid UTF-8.
fn stop_flag<'a>(args: &mut Args<'a>, flag: &[u8]) -> Result<&'a str> {
    let v = args.value(flag)?;
    core::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= MAX_STOP_BYTES)
        .ok_or_else(|| Error::usage("--stop takes 1 to 64 bytes of UTF-8", v))
}

/// The chat format and its default system message: `--template`, else
/// the one a GGUF file's `tokenizer.chat_template` shows (ChatML, with a
/// notice, when there is none or it is unknown, as llama.cpp falls back),
/// else (llama2.c files) llama2.c's own.
fn chat_template<'m, H: Host>(
    host: &H,
    model: &Model<'m>,
    chosen: Option<Template>,
) -> Result<(Template, Option<&'m [u8]>)> {
    let Some(g) = model.gguf else {
        return Ok((chosen.unwrap_or(Template::Llama2), None));
    };
    let jinja = g.string("tokenizer.chat_template")?;
    let template = match chosen.or_else(|| jinja.and_then(Template::recognize)) {
        Some(t) => t,
        None => {
            host.eprint(
                b"barellama: the model's chat template is missing or not one this engine \
                  knows; using chatml (choose with --template)\n",
            );
            Template::ChatMl
        }
    };
    let system = jinja.filter(|_| template == Template::ChatMl);
    Ok((template, system.and_then(default_system)))
}

/// What `run` was asked for, beyond the common flags.
#[derive(Default)]
struct Request<'a> {
    prompt: Option<&'a [u8]>,
    file: Option<&'a [u8]>,
    /// `-n`: positions, prompt included.
    steps: Option<usize>,
    /// `--n-predict`: tokens after the prompt.
    predict: Option<usize>,
    seed: Option<u64>,
    /// `--repeat-last-n -1`: the whole context.
    repeat_context: bool,
    chat: bool,
    verbose: bool,
    system: Option<&'a [u8]>,
    template: Option<Template>,
    beams: usize,
    stops: heapless::Vec<&'a str, MAX_STOPS>,
}

/// `run`'s own flag `flag`, parsed into `r` and `sampler`; whether it was one.
fn run_flag<'a>(
    flag: &'a [u8],
    args: &mut Args<'a>,
    r: &mut Request<'a>,
    sampler: &mut SamplerConfig,
) -> Result<bool> {
    const NONNEGATIVE: fn(f32) -> bool = |x| x >= 0.0 && x.is_finite();
    match flag {
        b"-i" | b"--prompt" => r.prompt = Some(args.value(flag)?),
        b"-f" | b"--file" => r.file = Some(args.value(flag)?),
        b"-n" => r.steps = Some(args.number(flag, "-n takes a whole number of positions")?),
        b"--n-predict" => {
            r.predict = Some(args.number(flag, "--n-predict takes a whole number of tokens")?)
        }
        b"-t" | b"--temp" => {
            sampler.temperature = args.number_in(
                flag,
                "-t (--temp) takes a temperature of 0 or more",
                NONNEGATIVE,
            )?
        }
        // llama.cpp's -p is the prompt: say so when the value is no number.
        b"-p" if !is_number(args.peek()) => {
            return Err(Error::usage(
                "-p is top-p here, as in llama2.c; the prompt is -i or --prompt",
                args.value(flag)?,
            ))
        }
        b"-p" | b"--top-p" => {
            sampler.topp = args.number_in(flag, "-p (--top-p) takes a number in [0, 1]", |p| {
                (0.0..=1.0).contains(&p)
            })?
        }
        b"-k" | b"--top-k" => {
            sampler.topk = args.number(flag, "-k (--top-k) takes a whole number (0: off)")?
        }
        b"--min-p" => {
            sampler.min_p = args.number_in(flag, "--min-p takes a number in [0, 1]", |p| {
                (0.0..=1.0).contains(&p)
            })?
        }
        b"--repeat-penalty" => {
            sampler.repeat_penalty = args.number_in(
                flag,
                "--repeat-penalty takes a number above 0 (1: off)",
                |x: f32| x > 0.0 && x.is_finite(),
            )?
        }
        b"--repeat-last-n" => {
            let n: i64 = args.number_in(
                flag,
                "--repeat-last-n takes a whole number of tokens (0: off, -1: the context)",
                |n| n >= -1,
            )?;
            r.repeat_context = n == -1;
            sampler.repeat_last_n = usize::try_from(n).unwrap_or(0);
        }
        b"--presence-penalty" => {
            sampler.presence_penalty =
                args.number_in(flag, "--presence-penalty takes a number", f32::is_finite)?
        }
        b"--frequency-penalty" => {
            sampler.frequency_penalty =
                args.number_in(flag, "--frequency-penalty takes a number", f32::is_finite)?
        }
        b"-s" | b"--seed" => {
            r.seed = Some(args.number(flag, "-s (--seed) takes a whole number of 0 or more")?)
        }
        b"--chat" => r.chat = true,
        b"--verbose" => r.verbose = true,
        b"--beams" => {
            r.beams = args.number_in(flag, "--beams takes 1 to 8", |b: usize| {
                (1..=MAX_BEAMS).contains(&b)
            })?
        }
        b"-y" | b"--system-prompt" => r.system = Some(args.value(flag)?),
        b"--template" => {
            let v = args.value(flag)?;
            r.template = Some(Template::parse(v).ok_or_else(|| {
                Error::usage(
                    "--template takes llama2, mistral, zephyr, chatml or llama3",
                    v,
                )
            })?);
        }
        b"--stop" => {
            let s = stop_flag(args, flag)?;
            r.stops
                .push(s)
                .map_err(|_| Error::usage("at most 8 --stop strings", s.as_bytes()))?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Whether `arg` reads as a number (a value `-p` can take).
fn is_number(arg: Option<&[u8]>) -> bool {
    arg.and_then(|a| core::str::from_utf8(a).ok())
        .is_some_and(|a| a.parse::<f64>().is_ok())
}

pub(super) fn run<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let started = host.now_ns();
    let mut r = Request::default();
    let mut sampler = SamplerConfig::default();
    let common = Common::parse(host, args, Takes::ALL, |flag, args| {
        run_flag(flag, args, &mut r, &mut sampler)
    })?;
    if !r.chat {
        let chat_only = [
            (r.system.is_some(), "-y"),
            (r.template.is_some(), "--template"),
            (r.verbose, "--verbose"),
        ];
        if let Some((_, flag)) = chat_only.iter().find(|(given, _)| *given) {
            return Err(Error::usage("only with --chat", flag.as_bytes()));
        }
    }
    if r.chat && r.file == Some(b"-") {
        return Err(Error::usage(
            "--chat reads its turns from standard input; give the first with -i or -f FILE",
            b"-f -",
        ));
    }
    if r.steps.is_some() && r.predict.is_some() {
        return Err(Error::usage(
            "give -n or --n-predict, not both",
            b"--n-predict",
        ));
    }
    let model = common.model(host)?;
    let vocab = common.vocab(host, &model)?;
    let prompt = prompt_text(host, r.prompt, r.file)?;
    let context = common.context(&model);
    if r.repeat_context {
        sampler.repeat_last_n = context;
    }
    // Like llama2.c: no seed (or 0) means the clock, which is never 0 here.
    let clock = !matches!(r.seed, Some(s) if s != 0);
    sampler.seed = match clock {
        true => host.now_ns() | 1,
        false => r.seed.unwrap_or(1),
    };
    // Said with the run's report, after the text.
    let say_seed = || {
        if clock && sampler.temperature > 0.0 && r.beams == 0 {
            let mut line = Line::new();
            let seed = sampler.seed;
            let _ = writeln!(
                line,
                "barellama: seed {seed} (from the clock; -s repeats it)"
            );
            host.eprint(line.as_bytes());
        }
    };
    let compute = common.compute(host)?;
    if r.chat {
        let (template, default) = chat_template(host, &model, r.template)?;
        let system = r.system.or(default).unwrap_or_default();
        let line_bytes = context.saturating_mul(LINE_BYTES_PER_POSITION);
        let line = host.memory(line_bytes)?;
        let log = host.memory(line_bytes)?;
        let text = host.memory(
            line_bytes
                .saturating_add(system.len())
                .saturating_add(TEMPLATE_BYTES),
        )?;
        let size = Size {
            positions: context,
            prompt_bytes: text.len(),
            beams: 0,
        };
        let mut session = common.session(host, &model, vocab, sampler, compute, size)?;
        let mut chat = Chat::new(template, system, text, log);
        // In chat -n limits each answer; by default the context does.
        let answer = r.steps.or(r.predict).filter(|&n| n > 0).unwrap_or(context);
        let talk = Talk {
            first: prompt,
            line,
            max_tokens: answer,
            stops: &r.stops,
            verbose: r.verbose,
        };
        converse(host, &mut session, &mut chat, talk)?;
        say_seed();
        return Ok(());
    }

    let prompt = prompt.unwrap_or_default();
    if r.beams > 0 && !r.stops.is_empty() {
        return Err(Error::usage(
            "--beams goes without --chat and --stop",
            b"--beams",
        ));
    }
    // -n is llama2.c's steps, cut to the context; --n-predict counts
    // after the prompt, so it is settled once the prompt is tokenized.
    let steps = match r.steps {
        Some(n) if n > 0 => n.min(context),
        _ => context,
    };
    let size = Size {
        positions: context,
        prompt_bytes: prompt.len().max(1),
        beams: r.beams,
    };
    let mut session = common.session(host, &model, vocab, sampler, compute, size)?;
    let loaded = host.now_ns();
    match r.beams {
        0 => {
            let limit = match r.predict {
                Some(n) => Limit::Tokens(n),
                None => Limit::Positions(steps),
            };
            generate(
                host,
                &mut session,
                prompt,
                limit,
                &r.stops,
                loaded - started,
            )?;
            say_seed();
            Ok(())
        }
        _ => beam_text(host, &mut session, prompt, steps, r.beams),
    }
}

/// Where `run`'s generation stops.
#[derive(Clone, Copy)]
enum Limit {
    /// `-n`: this many positions, the prompt's included.
    Positions(usize),
    /// `--n-predict`: this many tokens after the prompt.
    Tokens(usize),
}

/// `run`: the prompt's text (after BOS, as llama2.c prints it), then the
/// generated text until the limit, the context or an end of generation;
/// on stderr the speed, as llama2.c prints it, and a summary as llama.cpp's.
fn generate<H: Host>(
    host: &H,
    session: &mut Session<'_, '_>,
    prompt: &[u8],
    limit: Limit,
    stops: &[&str],
    load_ns: u64,
) -> Result<()> {
    let start = host.now_ns();
    session.extend(prompt)?;
    let prompt_ns = host.now_ns() - start;
    let prompt_tokens = session.position() + 1;
    let mut text = TextSink::new(Stdout::new(host), stops)?;
    echo_input(session, &mut text);
    text.writer().check()?;
    let context = session.transformer.config().seq_len;
    let left = match limit {
        Limit::Positions(steps) => steps.saturating_sub(session.position()),
        Limit::Tokens(n) => n.min(context - session.position()),
    };
    let before = host.now_ns();
    reply(host, session, &mut text, left)?;
    let generated = session.position() + 1 - prompt_tokens;
    let gen_ns = host.now_ns() - before;
    host.print(b"\n")?;
    host.flush()?;
    let pos = session.position();
    let mut line = Line::new();
    if pos > 1 {
        let tok_per_s = pos as f64 / seconds_since(host, start);
        let _ = writeln!(line, "achieved tok/s: {tok_per_s:.6}");
    }
    let _ = writeln!(
        line,
        "barellama: load {:.2} ms; prompt {prompt_tokens} tokens in {:.2} ms ({:.2} tok/s); \
         generated {generated} tokens in {:.2} ms ({:.2} tok/s)",
        load_ns as f64 / 1e6,
        prompt_ns as f64 / 1e6,
        rate(prompt_tokens, prompt_ns),
        gen_ns as f64 / 1e6,
        rate(generated, gen_ns),
    );
    host.eprint(line.as_bytes());
    Ok(())
}

/// Tokens per second, 0 when no time passed.
fn rate(tokens: usize, ns: u64) -> f64 {
    match ns {
        0 => 0.0,
        ns => tokens as f64 * 1e9 / ns as f64,
    }
}

/// Prints the text of the session's last input (after its first token).
fn echo_input<H: Host>(session: &Session<'_, '_>, text: &mut Text<'_, '_, H>) {
    for w in session.input().windows(2) {
        text.echo(session.tokenizer.decode(w[0], w[1]));
    }
}

/// Ends `text`: the error of a failed print is the host's, which
/// [`Stdout`] kept (the sink only knows that one failed).
fn finish<H: Host>(text: &mut Text<'_, '_, H>) -> Result<()> {
    let _ = text.finish();
    text.writer().check()
}

/// Samples up to `max_tokens` tokens and prints their text through
/// `text`, a piece at a time; a stop string, Ctrl-C (once caught) or a
/// failed print ends it. Does not end `text`.
fn reply<H: Host>(
    host: &H,
    session: &mut Session<'_, '_>,
    text: &mut Text<'_, '_, H>,
    max_tokens: usize,
) -> Result<End> {
    let end = session.reply(max_tokens, |_, piece| {
        if host.interrupted() {
            return Ok(ControlFlow::Break(()));
        }
        let flow = text.push(piece);
        text.writer().check()?;
        host.flush()?;
        Ok(flow)
    })?;
    finish(text)?;
    Ok(end)
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
    let secs = seconds_since(host, start);
    // The whole text at once; --beams refuses --stop, so none can stop it.
    let mut text = TextSink::plain(Stdout::new(host));
    echo_input(session, &mut text);
    let input = session.input();
    let answer = core::iter::once(input.last().copied().unwrap_or(0)).chain(tokens.iter().copied());
    for (prev, id) in answer.clone().zip(answer.skip(1)) {
        text.echo(session.tokenizer.decode(prev, id));
    }
    finish(&mut text)?;
    host.print(b"\n")?;
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

/// A chat's settings.
struct Talk<'t> {
    /// The first user turn, from -i or -f.
    first: Option<&'t [u8]>,
    /// Where each line of standard input is read.
    line: &'t mut [u8],
    /// Most tokens per answer.
    max_tokens: usize,
    stops: &'t [&'t str],
    verbose: bool,
}

/// The chat loop: the first turn (from -i or -f) and then each line of
/// standard input is a user turn, answered on its own line(s), until the
/// input ends or Ctrl-C comes at the prompt. Ctrl-C during an answer
/// stops it; a full context drops the oldest turns.
fn converse<H: Host>(
    host: &H,
    session: &mut Session<'_, '_>,
    chat: &mut Chat<'_>,
    mut talk: Talk<'_>,
) -> Result<()> {
    host.catch_interrupts();
    let interactive = host.interactive();
    let (mut answers, mut tokens, mut ns) = (0usize, 0usize, 0u64);
    loop {
        let user = match talk.first.take() {
            Some(text) => text,
            None => {
                if interactive {
                    host.eprint(b"User: ");
                }
                match host.read_line(talk.line)? {
                    Some(n) => talk.line[..n]
                        .strip_suffix(b"\r")
                        .unwrap_or(&talk.line[..n]),
                    None => break,
                }
            }
        };
        if user.is_empty() {
            continue;
        }
        match chat.user(session, user) {
            Ok(0) => {}
            Ok(n) => notice(host, "the context is full: turns dropped, oldest first", n),
            Err(Error::ContextFull { needed, max }) => {
                let needed = needed.max(max + 1);
                notice(
                    host,
                    "this turn is not sent: the context is too short for it; positions needed",
                    needed,
                );
                continue;
            }
            Err(e) => return Err(e),
        }
        if interactive {
            host.eprint(b"Assistant: ");
        }
        let mut text = TextSink::new(Stdout::new(host), talk.stops)?;
        let mut left = talk.max_tokens;
        let before = host.now_ns();
        let mut generated = 0;
        loop {
            let at = session.position();
            let end = reply(host, session, &mut text, left)?;
            let n = session.position() - at;
            (left, generated) = (left - n, generated + n);
            if end != End::ContextFull || left == 0 {
                break;
            }
            match chat.make_room(session)? {
                true => notice(host, "the context is full: turns dropped, oldest first", 1),
                false => {
                    notice(host, "the context is full: this answer ends here", 0);
                    break;
                }
            }
        }
        host.print(b"\n")?;
        host.flush()?;
        // A Ctrl-C that came as the answer ended stops nothing more.
        let _ = host.interrupted();
        let took = host.now_ns() - before;
        (answers, tokens, ns) = (answers + 1, tokens + generated, ns + took);
        if talk.verbose {
            speed(host, "answer", 1, generated, took);
        }
    }
    if interactive {
        host.eprint(b"\n");
    }
    if answers > 0 {
        speed(host, "chat", answers, tokens, ns);
    }
    Ok(())
}

/// A chat notice on stderr; `n` when it is not 0.
fn notice<H: Host>(host: &H, what: &str, n: usize) {
    let mut line = Line::new();
    let _ = match n {
        0 => writeln!(line, "barellama: {what}"),
        n => writeln!(line, "barellama: {what}: {n}"),
    };
    host.eprint(line.as_bytes());
}

/// The speed of `answers` answers on stderr.
fn speed<H: Host>(host: &H, what: &str, answers: usize, tokens: usize, ns: u64) {
    let mut line = Line::new();
    let _ = writeln!(
        line,
        "barellama: {what}: {answers} answer(s), {tokens} tokens generated in {:.2} ms \
         ({:.2} tok/s)",
        ns as f64 / 1e6,
        rate(tokens, ns),
    );
    host.eprint(line.as_bytes());
}
