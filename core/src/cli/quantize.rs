//! `quantize` and `convert`: a model rewritten as GGUF of another type or
//! as llama2.c v2, a row at a time, everything refusable refused before
//! the output is created, and the output in place only once complete.

use core::fmt::Write as _;

use crate::error::{Error, Result};
use crate::image::vocab::Vocab;
use crate::image::Model;
use crate::io::Buffered;
use crate::kernels::cast_slice_mut;
use crate::write::export::{
    check_float, check_groups, check_vocab, longest_row, write_gguf, write_llama2c_v2, Layout,
    Quantize,
};
use crate::write::gguf::TensorSpec;

use super::args::{Args, Common, Takes};
use super::{seconds_since, Host, Line};

pub(super) const USAGE: &str = "\
usage: barellama quantize IN OUT --type TYPE [-z TOKENIZER]
       barellama convert IN OUT [-z TOKENIZER]       (quantize --type f32)
  IN            a llama2.c .bin (v0, v1) or GGUF file with F32 or F16 weights
  OUT           the GGUF file to write, or with --type v2 a llama2.c v2 file
  --type TYPE   f32, f16, q8_0, q4_0 (with a Q6_K classifier, as llama-quantize
                writes Q4_0), q4_0-pure (every matrix Q4_0), q4_1 (with a Q6_K
                classifier), q4_k (llama-quantize's Q4_K_M mix of Q4_K and
                Q6_K), q6_k, or v2[:GS] (llama2.c's int8 for runq, in groups of
                GS values; default 64)
  -z TOKENIZER  the GGUF file's vocabulary from a llama2.c tokenizer.bin
                (default: IN's own vocabulary, when IN is GGUF)
  rows are read, quantized and written one at a time: memory stays a row
  whatever the model's size; progress goes to stderr
  OUT is written as a temporary file beside it and renamed over it when
  complete: a failed run leaves no file and an existing OUT as it was; OUT
  may not be IN or TOKENIZER (by any name or link)
";

pub(super) fn quantize<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    write_model(host, args, None)
}

pub(super) fn convert<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    write_model(host, args, Some(Target::Gguf(Layout::F32)))
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
            "--type takes f32, f16, q8_0, q4_0, q4_0-pure, q4_1, q4_k, q6_k or v2[:GS]",
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

/// A [`Target`] with what writing it needs.
enum Job<'m> {
    Gguf(Layout, Vocab<'m>),
    V2(u32),
}

/// `quantize` and `convert` (whose type is `fixed`).
fn write_model<H: Host>(host: &H, args: &mut Args<'_>, fixed: Option<Target>) -> Result<()> {
    let (mut paths, mut kind) = (heapless::Vec::<&[u8], 2>::new(), fixed);
    let common = Common::parse(host, args, &[Takes::Tokenizer], |a, args| {
        match a {
            b"--type" if fixed.is_none() => kind = Some(target(args.value(a)?)?),
            _ if !a.starts_with(b"-") => paths
                .push(a)
                .map_err(|_| Error::usage("more than IN and OUT", a))?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let [input, output] = paths[..] else {
        return Err(Error::usage("needs IN and OUT", b""));
    };
    let kind = kind.ok_or_else(|| Error::usage("missing required option", b"--type"))?;
    let model = Model::load(host.map(input)?)?;
    check_float(&model)?;
    // Everything that can be refused is, before OUT is created: the
    // model's shape against the type, the vocabulary, the memory.
    let job = match (kind, common.tokenizer, model.gguf) {
        (Target::V2(group), _, _) => {
            check_groups(&model, group)?;
            Job::V2(group)
        }
        (Target::Gguf(l), Some(z), _) => Job::Gguf(l, Vocab::Llama2c(host.map(z)?)),
        (Target::Gguf(l), None, Some(g)) => Job::Gguf(l, Vocab::Gguf(g)),
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
    let scratch = match &job {
        Job::Gguf(layout, vocab) => {
            check_vocab(vocab, c.vocab_size)?;
            longest_row(&c, *layout)?
        }
        // A row's values and its scales (at most one per value).
        Job::V2(_) => 5 * widest,
    };
    let (scratch, buffer) = (host.memory(scratch)?, host.memory(1 << 16)?);
    let mut file = Buffered::new(host.create(output)?, buffer);
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
            let mut progress = |i: usize, n: usize, name: &'static str, shape: (usize, usize)| {
                report(i, n, name.as_bytes(), "Q8_G", shape)
            };
            write_llama2c_v2(&model, group, &mut file, row, scratch, &mut progress)?;
        }
    }
    host.commit(file.finish()?)?;
    let mut line = Line::new();
    let _ = writeln!(
        line,
        "barellama: wrote {} in {:.1} s",
        core::str::from_utf8(output).unwrap_or("?"),
        seconds_since(host, started)
    );
    host.eprint(line.as_bytes());
    Ok(())
}
