//! `logits`: teacher-forced logits of a token list in the `L2CG` format
//! that the goldens use, to compare with llama2.c and llama.cpp.

use crate::error::{Error, Result};
use crate::io::Output;
use crate::kernels::cast_slice_mut;
use crate::model::Transformer;
use crate::tokenizer::Family;

use super::args::{required, Args, Common, Size, Takes};
use super::Host;

pub(super) const USAGE: &str = "\
usage: barellama logits -m MODEL --tokens FILE -o OUT.bin [--threads N] [--ctx N] [--kv f32|f16]
  feeds the whitespace-separated ids of FILE one at a time from position 0 and
  writes the logits after each of the first (ids - 1) in L2CG format; the
  logits are bitwise the same for every --threads; OUT appears only when
  complete (see quantize --help) and may not be MODEL or FILE
  --isa NAME    kernels up to this CPU's best: scalar, avx2, avx512 | neon, neon+dotprod
";

/// `L2CG`, the format's magic.
const MAGIC: u32 = 0x4743_324c;

pub(super) fn logits<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut tokens, mut output) = (None, None);
    let takes = [Takes::Model, Takes::Engine];
    let common = Common::parse(host, args, &takes, |flag, args| {
        match flag {
            b"--tokens" => tokens = Some(args.value(flag)?),
            b"-o" => output = Some(args.value(flag)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let model = common.model(host)?;
    let vocab = model.config.vocab_size;
    let ids = read_ids(host, required(tokens, "--tokens FILE")?, vocab)?;
    let output = required(output, "-o OUT")?;
    if ids.len() < 2 {
        return Err(Error::usage("the token file needs at least two ids", b""));
    }
    let steps = ids.len() - 1;
    let context = common.context(&model);
    if steps > context {
        return Err(Error::ContextFull {
            needed: steps,
            max: context,
        });
    }
    let size = Size {
        positions: steps,
        prompt_bytes: 1,
        beams: 0,
    };
    // No tokenizer runs: the plan's, whatever its family, goes unused.
    let plan = common.plan(&model, Family::default(), size)?;
    let buffers = plan.carve(host.memory(plan.bytes())?)?;
    let compute = common.compute(host)?;
    let mut transformer = Transformer::new(&model, plan.config(), buffers.state, compute)?;

    let mut file = host.create(output)?;
    let mut header = heapless::Vec::<u8, 20>::new();
    for word in [MAGIC, 1, steps as u32, vocab as u32, ids.len() as u32] {
        let _ = header.extend_from_slice(&word.to_le_bytes());
    }
    file.write(&header)?;
    write_le(&mut file, ids.iter().map(|&i| i.to_le_bytes()))?;
    for (pos, &id) in ids[..steps].iter().enumerate() {
        let logits = transformer.forward(id, pos)?;
        write_le(&mut file, logits.iter().map(|v| v.to_le_bytes()))?;
    }
    host.commit(file)
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
