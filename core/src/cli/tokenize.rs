//! `tokenize`: the ids of a text, with a vocabulary alone (no weights).

use core::fmt::Write as _;

use crate::arena::TokenizerPlan;
use crate::error::{Error, Result};
use crate::image::gguf::{Gguf, ValueType};
use crate::image::vocab::llama2c_vocab_size;
use crate::image::vocab::Vocab;
use crate::image::Model;
use crate::tokenizer::Family;
use crate::tokenizer::Tokenizer;

use super::args::{prompt_text, required, tokenizer_bin, Args, Common, Takes};
use super::{Host, Stdout};

pub(super) const USAGE: &str = "\
usage: barellama tokenize (-z TOKENIZER [-m MODEL] | -m MODEL.gguf) (-i TEXT | -f FILE) [--bos]
  prints the ids of TEXT (or of FILE's bytes) on one line; --bos puts BOS first
";

pub(super) fn tokenize<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let (mut text, mut file, mut bos) = (None, None, false);
    let takes = [Takes::Model, Takes::Tokenizer];
    let common = Common::parse(host, args, &takes, |flag, args| {
        match flag {
            b"--bos" => bos = true,
            b"-i" => text = Some(args.value(flag)?),
            b"-f" => file = Some(args.value(flag)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let text = required(prompt_text(host, text, file)?, "-i TEXT or -f FILE")?;
    // The vocabulary alone: a GGUF file with no tensors is enough.
    let (vocab, vocab_size) = match (common.tokenizer, common.model) {
        (Some(z), model) => {
            let bytes = tokenizer_bin(host, z)?;
            let n = match model {
                Some(path) => Model::load(host.map(path)?)?.config.vocab_size,
                None => llama2c_vocab_size(bytes)?,
            };
            (Vocab::Llama2c(bytes), n)
        }
        (None, Some(path)) => {
            let image = host.map(path)?;
            if !image.starts_with(b"GGUF") {
                return Err(Error::usage(
                    "a llama2.c model has no vocabulary: give its tokenizer with -z",
                    path,
                ));
            }
            let g = Gguf::parse(image)?;
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
    let plan = TokenizerPlan::new(vocab_size, Family::of(&vocab)?, text.len())?;
    let buffers = plan.carve(host.memory(plan.bytes())?)?;
    let mut tok = Tokenizer::new(vocab, vocab_size, buffers)?;
    let ids = tok.encode(text, bos, false)?;
    let mut w = Stdout::new(host);
    for (i, id) in ids.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(w, "{sep}{id}");
    }
    let _ = w.write_str("\n");
    w.check()
}
