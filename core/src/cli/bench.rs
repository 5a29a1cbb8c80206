//! `bench`: decode speed. A session is fed a seeded prompt of ids, whose
//! prefill is the time to first token, then decodes token by token, each
//! step timed; a probe measures the machine's streaming-read bandwidth
//! over the same seconds, and the report is one line or one JSON object.

use core::fmt::{self, Write as _};

use crate::error::{Error, Result};
use crate::exec::{for_each, Compute};
use crate::generate::TextSink;
use crate::image::vocab::Vocab;
use crate::image::Model;
use crate::kernels::{cast_slice_mut, Isa};
use crate::rng::random_u32;
use crate::sampler::SamplerConfig;
use crate::write::export::Layout;
use crate::write::synth::{self, Synthetic};

use super::args::{Args, Common, Size, Takes};
use super::{too_many, Host, Line};

pub(super) const USAGE: &str = "\
usage: barellama bench [-m MODEL | --format F] [-z TOKENIZER] [-n TOKENS] [--prompt-tokens P]
                       [--threads N] [--ctx N] [--kv f32|f16] [--scalar] [--json]
  -m MODEL      model to measure (default: a seeded synthetic stories110M-shape model)
  --format F    the synthetic model's weights: f32 (default, a llama2.c file), GGUF
                f16, q8_0, q4_0 (with a Q6_K classifier), q4_0-pure, q4_1, q4_k
                (Q4_K_M's mix of Q4_K and Q6_K) or q6_k, or v2 (llama2.c's int8,
                groups of 64)
  -z TOKENIZER  also decode each token to text, as run does (default: a GGUF
                model's own vocabulary)
  -n TOKENS     tokens to generate (default 256, or as many as the context holds)
  --prompt-tokens P
                first prefill a P-token prompt in batches and report its rate too
  --threads N   threads (default: every core)
  --isa NAME    kernels up to this CPU's best: scalar, avx2, avx512 | neon, neon+dotprod
  --scalar      use the scalar kernels (the specification) instead of SIMD
  --json        print one JSON object (the summary line goes to stderr)
reports tok/s, ms/token p50 and p99, time to first token, peak RSS,
allocations per token, and the fraction of this machine's streaming-read
bandwidth the decode reaches (bytes read per token x tok/s / bandwidth)
";

/// Tokens `bench` generates without `-n`, when the context holds them.
const DEFAULT_TOKENS: usize = 256;

pub(super) fn bench<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut tokens, mut prompt_tokens, mut json, mut scalar) = (None, 0usize, false, false);
    let mut layout = Synthetic::Gguf(Layout::F32);
    let mut common = Common::parse(host, args, Takes::ALL, |flag, args| {
        match flag {
            b"--format" => {
                let v = args.value(flag)?;
                layout = Synthetic::parse(v).ok_or_else(|| {
                    Error::usage(
                        "--format takes f32, f16, q8_0, q4_0, q4_0-pure, q4_1, q4_k, q6_k or v2",
                        v,
                    )
                })?;
            }
            b"-n" => {
                tokens = Some(args.number_in(
                    flag,
                    "-n takes a whole number of 1 or more",
                    |n: usize| n > 0,
                )?)
            }
            b"--prompt-tokens" => {
                prompt_tokens = args.number(flag, "--prompt-tokens takes a whole number")?
            }
            b"--scalar" => scalar = true,
            b"--json" => json = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if scalar {
        common.isa = Some(Isa::SCALAR);
    }
    let image: &[u8] = match common.model {
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
    let context = common.context(&model);
    // By default as many as fit, up to DEFAULT_TOKENS.
    let room = context.saturating_sub(prompt_len).max(1);
    let tokens = tokens.unwrap_or(DEFAULT_TOKENS.min(room));
    let positions = tokens.saturating_add(prompt_len);
    if positions > context {
        return Err(too_many(
            "-n plus --prompt-tokens exceeds the context (see --ctx)",
            positions,
        ));
    }
    let compute = common.compute(host)?;
    let (vocab, decode) = match vocab(host, &common, &model)? {
        Some(vocab) => (vocab, true),
        None => (Vocab::Llama2c(nameless(host, c.vocab_size)?), false),
    };
    let size = Size {
        positions,
        prompt_bytes: 1,
        beams: 0,
    };
    let sampler = SamplerConfig::default();
    let mut session = common.session(host, &model, vocab, sampler, compute, size)?;
    let times: &mut [u64] = words(host, tokens)?;
    let probe_compute = Compute {
        isa: host.isa(),
        ..compute
    };
    let mut probe = Probe::new(host, probe_compute, image, tokens)?;

    // BOS and seeded ids stand for the prompt (its text does not change
    // the work); the time to the first sampled token is the TTFT.
    let prompt: &mut [u32] = words(host, prompt_len)?;
    let mut rng = 0x5EEDu64;
    for (i, id) in prompt.iter_mut().enumerate() {
        let r = random_u32(&mut rng);
        *id = if i == 0 {
            session.tokenizer.bos()
        } else {
            r % c.vocab_size as u32
        };
    }
    let mut text = TextSink::plain(Discard);
    let t0 = host.now_ns();
    let mut token = session.extend_tokens(prompt)?;
    let ttft = host.now_ns() - t0;
    let prefill_tok_per_s = (prompt_tokens > 0).then(|| prompt_len as f64 / (ttft as f64 / 1e9));
    let allocs_before = host.allocations();
    for slot in times.iter_mut() {
        probe.between_tokens(host, session.position());
        let t = host.now_ns();
        let next = session.step()?;
        if decode {
            text.echo(session.tokenizer.decode(token, next));
        }
        token = next;
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
    let report = Report {
        format: model.weights.layers[0].wq.dtype().name(),
        threads: compute.exec.threads(),
        model: match common.model {
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

/// The vocabulary to decode with, as `run` does: `-z`'s, or a GGUF
/// file's own; `None` for a model without one (the synthetic models, a
/// llama2.c file without `-z`), which is fed ids and decodes nothing.
fn vocab<'h, H: Host>(
    host: &'h H,
    common: &Common<'_>,
    model: &Model<'h>,
) -> Result<Option<Vocab<'h>>> {
    let own = model
        .gguf
        .is_some_and(|g| matches!(g.get("tokenizer.ggml.tokens"), Ok(Some(_))));
    match common.tokenizer.is_some() || own {
        true => common.vocab(host, model).map(Some),
        false => Ok(None),
    }
}

/// A llama2.c `tokenizer.bin` of `n` empty pieces, for a model without a
/// vocabulary: a session needs one, though here it only names BOS. Zeroed
/// memory is already `n` records of score 0 and length 0 after the header.
fn nameless<H: Host>(host: &H, n: usize) -> Result<&[u8]> {
    let bytes = host.memory(n.saturating_mul(8).saturating_add(4))?;
    bytes[..4].copy_from_slice(&1i32.to_le_bytes()); // max_token_length
    Ok(bytes)
}

/// `n` zeroed words of host memory.
fn words<T: crate::kernels::Pod, H: Host>(host: &H, n: usize) -> Result<&mut [T]> {
    let bytes = n.saturating_mul(core::mem::size_of::<T>());
    cast_slice_mut(host.memory(bytes)?).ok_or(Error::OutOfMemory { bytes })
}

/// Where bench's decoded text goes: turning tokens into text is part of
/// the work measured, printing it is not.
struct Discard;

impl fmt::Write for Discard {
    fn write_str(&mut self, _: &str) -> fmt::Result {
        Ok(())
    }
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
        Ok(Probe {
            compute,
            image: (image.len() >= PROBE_MIN_BYTES).then_some(image),
            times: words(host, 2 * (tokens / PROBE_EVERY + 3))?,
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

/// Results of one benchmark run.
#[derive(Clone, Copy)]
struct Report<'a> {
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

impl Report<'_> {
    fn roofline(&self) -> f64 {
        self.bytes_per_token * self.tok_per_s / self.bandwidth
    }

    fn print<H: Host>(&self, host: &H, json: bool) -> Result<()> {
        let Report {
            model,
            format,
            isa,
            threads,
            tokens,
            tok_per_s,
            prefill,
            ms_p50,
            ms_p99,
            ttft_ms,
            rss_mb,
            allocs_per_token,
            bytes_per_token,
            bandwidth,
            bandwidth_1t,
        } = *self;
        let (isa, roofline) = (isa.name(), self.roofline());
        let plural = if threads == 1 { "" } else { "s" };
        let (mb_per_token, percent) = (bytes_per_token / 1e6, roofline * 100.0);
        let (gb_s, gb_s_1t) = (bandwidth / 1e9, bandwidth_1t / 1e9);
        let mut line = Line::new();
        let _ = writeln!(
            line,
            "{model}: {format}, {threads} thread{plural}, {isa}: {tokens} tokens, \
             {tok_per_s:.2} tok/s, p50 {ms_p50:.2} ms, p99 {ms_p99:.2} ms, ttft {ttft_ms:.2} ms, \
             peak RSS {rss_mb:.0} MB, {allocs_per_token} allocs/token; {mb_per_token:.1} MB/token \
             at {gb_s:.2} GB/s read bandwidth = {percent:.0}% of the roofline"
        );
        if let Some((n, rate)) = prefill {
            let _ = writeln!(line, "prefill: {n} prompt tokens, {rate:.2} tok/s");
        }
        if !json {
            return host.print(line.as_bytes());
        }
        host.eprint(line.as_bytes());
        let (model, prefill) = (JsonStr(model), PrefillJson(prefill));
        out!(
            host,
            "{{\"model\":\"{model}\",\"format\":\"{format}\",\"isa\":\"{isa}\",\
             \"threads\":{threads},\"tokens\":{tokens},\"tok_per_s\":{tok_per_s:.3},\
             \"ms_p50\":{ms_p50:.3},\"ms_p99\":{ms_p99:.3},\"ttft_ms\":{ttft_ms:.3},\
             \"rss_mb\":{rss_mb:.1},\"allocs_per_token\":{allocs_per_token},\
             \"bytes_per_token\":{bytes_per_token:.0},\"bandwidth_gb_s\":{gb_s:.3},\
             \"bandwidth_1t_gb_s\":{gb_s_1t:.3},\"roofline\":{roofline:.4}{prefill}}}\n"
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
