//! `inspect`: a model's format, configuration and tensor table, and for
//! GGUF every metadata entry; a file this engine cannot run says why.

use core::fmt::{self, Write as _};

use crate::arena::TokenizerPlan;
use crate::chat::Template;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::image::gguf::{Gguf, Value, ValueType};
use crate::image::vocab::Vocab;
use crate::image::{Format, Model};
use crate::tensor::WeightRef;
use crate::tokenizer::{Family, Tokenizer};

use super::args::{Args, Common, Takes};
use super::{Host, Line};

pub(super) const USAGE: &str = "\
usage: barellama inspect -m MODEL
  prints the format, configuration and tensor table
";

pub(super) fn inspect<H: Host>(host: &H, args: &mut Args<'_>) -> Result<()> {
    let common = Common::parse(host, args, &[Takes::Model], |_, _| Ok(false))?;
    let image = common.image(host)?;
    if image.starts_with(b"GGUF") {
        let g = Gguf::parse(image)?;
        gguf(host, &g)?;
        // A GGUF file may hold metadata only, or a model or vocabulary
        // this engine cannot run: say so, but the listing above is the
        // answer.
        if let Err(e) = vocabulary(host, &g) {
            out!(host, "vocabulary not usable here: {e}\n")?;
        }
        return match Model::load(image) {
            Ok(m) => config(host, &m),
            Err(e) => out!(host, "not runnable here: {e}\n"),
        };
    }
    let m = common.load(image)?;
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
    config(host, &m)?;
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

/// The vocabulary of a GGUF file as the engine reads it: its family and
/// pre-tokenizer, special ids, and the chat format its template shows.
fn vocabulary<H: Host>(host: &H, g: &Gguf<'_>) -> Result<()> {
    let Some((n, _)) = g.array("tokenizer.ggml.tokens", ValueType::String)? else {
        return Ok(());
    };
    let n = usize::try_from(n).map_err(|_| Error::Overflow {
        field: "tokenizer.ggml.tokens",
    })?;
    let vocab = Vocab::Gguf(*g);
    let plan = TokenizerPlan::new(n, Family::of(&vocab)?, 1)?;
    let t = Tokenizer::new(vocab, n, plan.carve(host.memory(plan.bytes())?)?)?;
    let (family, pre) = t.family();
    out!(host, "vocabulary: {family}, {n} pieces")?;
    if let Some(pre) = pre {
        out!(host, ", pre-tokenizer {}", pre.name())?;
    }
    let starts = if t.add_bos() { "with" } else { "without" };
    out!(
        host,
        "\nspecial ids: BOS {}, EOS {}; prompts start {starts} BOS; generation ends at",
        t.bos(),
        t.eos()
    )?;
    for id in t.eog() {
        out!(host, " {id} {}", Bytes(t.piece(*id)).to_escaped())?;
    }
    let template = g.string("tokenizer.chat_template")?;
    match template.and_then(Template::recognize) {
        Some(t) => out!(
            host,
            "\nchat format: {} (from tokenizer.chat_template)\n",
            t.name()
        ),
        None => out!(
            host,
            "\nchat format: none recognized (--chat uses chatml)\n"
        ),
    }
}

/// The column titles of the tensor table, for both formats.
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

fn config<H: Host>(host: &H, m: &Model<'_>) -> Result<()> {
    let Config {
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads,
        vocab_size,
        seq_len,
        rope_theta,
        rope_scale,
        norm_eps,
    } = m.config;
    let (head_size, bytes) = (m.config.head_size(), m.bytes_per_token());
    out!(
        host,
        "dim {dim} hidden_dim {hidden_dim} n_layers {n_layers} n_heads {n_heads} \
         n_kv_heads {n_kv_heads} vocab_size {vocab_size} seq_len {seq_len}\n\
         head_size {head_size} rope_theta {rope_theta} norm_eps {norm_eps}\n"
    )?;
    if rope_scale != 1.0 {
        out!(host, "rope scale {rope_scale} (linear scaling)\n")?;
    }
    if let Some(f) = m.weights.rope_freqs {
        out!(
            host,
            "rope frequency factors: {} (rope_freqs.weight)\n",
            f.cols()
        )?;
    }
    out!(host, "weights read per token: {bytes} bytes\n")
}

/// Metadata (arrays shown by type, length and first elements) and tensors.
fn gguf<H: Host>(host: &H, g: &Gguf<'_>) -> Result<()> {
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
