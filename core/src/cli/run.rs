//! `run`: generate text after a prompt, chat (`--chat`), or beam search
//! (`--beams`). All three print through one [`TextSink`] per text.

use core::fmt::Write as _;

use crate::beam::MAX_BEAMS;
use crate::chat::{default_system, Chat, Template, TEMPLATE_BYTES};
use crate::error::{Error, Result};
use crate::generate::{End, Session, TextSink, MAX_STOP_BYTES};
use crate::image::Model;
use crate::sampler::SamplerConfig;

use super::args::{prompt_text, Args, Common, Size, Takes};
use super::{seconds_since, too_many, Host, Line, Stdout};

pub(super) const USAGE: &str = "\
usage: barellama run -m MODEL [-z TOKENIZER] [options]
  -m MODEL      llama2.c .bin checkpoint or GGUF file
  -z TOKENIZER  llama2.c tokenizer.bin (needed for a .bin model; default:
                the vocabulary inside a GGUF file)
  -i PROMPT     prompt text (default: empty)
  -f FILE       read the prompt from FILE instead (any bytes; invalid UTF-8
                goes through byte tokens)
  -n STEPS      positions to run, prompt included (default and 0: the whole context)
  -t TEMP       temperature, 0 = greedy (default 1.0)
  -p TOPP       nucleus sampling threshold in [0, 1] (default 0.9)
  -k TOPK       sample only from the TOPK most likely tokens (default: off)
  -s SEED       random seed (default: the time)
  --threads N   threads (default: every core); results do not depend on it
  --ctx N       context length (default: the model's, at most 4096; 0: the model's;
                may exceed it, as llama.cpp's -c)
  --kv f32|f16  KV cache type (default: f32 for llama2.c files, f16 for GGUF,
                each computed as that format's reference engine does)
  --isa NAME    kernels up to this CPU's best: scalar, avx2, avx512 | neon, neon+dotprod
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
  --template T  the chat format: llama2 ([INST] <<SYS>>, as llama2.c's chat),
                mistral ([INST] ... [/INST]), zephyr (<|user|> ... <|assistant|>,
                TinyLlama-Chat), chatml (<|im_start|>role ... <|im_end|>, SmolLM2)
                or llama3 (<|start_header_id|>role<|end_header_id|>); default:
                recognized from a GGUF file's tokenizer.chat_template (chatml,
                with a notice, when it is missing or unknown), llama2 for a .bin
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

pub(super) fn run<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut prompt, mut prompt_file, mut steps, mut seed) = (None, None, None, None);
    let mut sampler = SamplerConfig::default();
    let (mut chat, mut system, mut template) = (false, None, None);
    let mut beams = 0usize;
    let mut stops = heapless::Vec::<&str, MAX_STOPS>::new();
    let common = Common::parse(host, args, Takes::ALL, |flag, args| {
        match flag {
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
                template = Some(Template::parse(v).ok_or_else(|| {
                    Error::usage(
                        "--template takes llama2, mistral, zephyr, chatml or llama3",
                        v,
                    )
                })?);
            }
            b"--stop" => {
                let s = stop_flag(args, flag)?;
                stops
                    .push(s)
                    .map_err(|_| Error::usage("at most 8 --stop strings", s.as_bytes()))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if !chat {
        let chat_only = [(system.is_some(), "-y"), (template.is_some(), "--template")];
        if let Some((_, flag)) = chat_only.iter().find(|(given, _)| *given) {
            return Err(Error::usage("only with --chat", flag.as_bytes()));
        }
    }
    let model = Model::load(common.image(host)?)?;
    let vocab = common.vocab(host, &model)?;
    let prompt = prompt_text(host, prompt, prompt_file)?;
    let context = common.context(&model);
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
    let compute = common.compute(host)?;
    if chat {
        let (template, default) = chat_template(host, &model, template)?;
        let system = system.or(default).unwrap_or_default();
        let line = host.memory(context.saturating_mul(LINE_BYTES_PER_POSITION))?;
        let text = host.memory(
            line.len()
                .saturating_add(system.len())
                .saturating_add(TEMPLATE_BYTES),
        )?;
        let size = Size {
            positions: context,
            prompt_bytes: text.len(),
            beams: 0,
        };
        let mut session = common.session(host, &model, vocab, sampler, compute, size)?;
        let mut chat = Chat::new(template, system, text);
        // In chat -n limits each answer; the context limits them all.
        let answer = positions(steps.unwrap_or(0))?;
        return converse(host, &mut session, &mut chat, prompt, line, answer, &stops);
    }

    let prompt = prompt.unwrap_or_default();
    let steps = positions(steps.unwrap_or(0))?;
    if beams > 0 && !stops.is_empty() {
        return Err(Error::usage(
            "--beams goes without --chat and --stop",
            b"--beams",
        ));
    }
    let size = Size {
        positions: steps,
        prompt_bytes: prompt.len().max(1),
        beams,
    };
    let mut session = common.session(host, &model, vocab, sampler, compute, size)?;
    match beams {
        0 => generate(host, &mut session, prompt, steps, &stops),
        _ => beam_text(host, &mut session, prompt, steps, beams),
    }
}

/// `run`: the prompt's text (after BOS, as llama2.c prints it), then the
/// generated text until `steps` positions have run, and the speed on
/// stderr.
fn generate<H: Host>(
    host: &H,
    session: &mut Session<'_, '_>,
    prompt: &[u8],
    steps: usize,
    stops: &[&str],
) -> Result<()> {
    let start = host.now_ns();
    session.extend(prompt)?;
    let mut text = TextSink::new(Stdout::new(host), stops)?;
    echo_input(session, &mut text);
    text.writer().check()?;
    let left = steps - session.position();
    reply(session, &mut text, left)?;
    host.print(b"\n")?;
    let pos = session.position();
    if pos > 1 {
        let mut line = Line::new();
        let tok_per_s = pos as f64 / seconds_since(host, start);
        let _ = writeln!(line, "achieved tok/s: {tok_per_s:.6}");
        host.eprint(line.as_bytes());
    }
    Ok(())
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
/// `text`, which a stop string or a failed print ends; then ends `text`.
fn reply<H: Host>(
    session: &mut Session<'_, '_>,
    text: &mut Text<'_, '_, H>,
    max_tokens: usize,
) -> Result<End> {
    let end = session.reply(max_tokens, |_, piece| Ok(text.push(piece)))?;
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
        let end = reply(
            session,
            &mut TextSink::new(Stdout::new(host), stops)?,
            max_tokens,
        )?;
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
