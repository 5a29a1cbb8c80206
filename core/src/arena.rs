//! The arena: every byte the engine writes lives in one caller-supplied,
//! 64-byte-aligned buffer. A [`Plan`] computes its exact size from the model
//! config and [`Options`] before any memory exists; [`Plan::carve`] then
//! splits the caller's bytes into the typed buffers.
//!
//! Sizing and carving run the *same* layout code (`Carver` either measures or
//! cuts), so the plan can never disagree with what carving takes.

use crate::beam::{BeamBuffers, MAX_BEAMS};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::kernels::{cast_slice_mut, InputBuffers, Pod};
use crate::model::{KvBuffers, StateBuffers, MAX_BATCH};
use crate::tokenizer::{BpeBuffers, Family, SpmBuffers, TokenizerBuffers};

/// Every carve-out starts on a cache line (and a full AVX-512 vector).
pub const ALIGN: usize = 64;

/// The largest arena this target can address: no Rust object may exceed
/// `isize::MAX` bytes (2 GiB on a 32-bit target).
pub const ADDRESS_SPACE: usize = isize::MAX as usize;

/// How the KV cache stores keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// Exact: what llama2.c does.
    #[default]
    F32,
    /// Half the memory, computed the way llama.cpp (whose default it is)
    /// computes it, so its results can be reproduced.
    F16,
}

/// Choices that change how much memory the engine needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Context length; `0` means the model's own.
    pub seq_len: usize,
    /// Allow `seq_len` beyond the context the model was trained for (as
    /// llama.cpp's `-c` does); RoPE works at any position, quality may not.
    pub allow_longer: bool,
    /// Longest prompt, in bytes, the tokenizer accepts; `0` means
    /// eight bytes per position of context.
    pub prompt_bytes: usize,
    /// The KV cache's element type.
    pub kv: KvType,
    /// Most prompt tokens run through the layers together (each weight
    /// block is then read once per chunk, not once per token); `0` means
    /// [`DEFAULT_BATCH`], `1` plans no batch buffers.
    pub batch: usize,
    /// Hypotheses of a beam search, each with its own KV cache; `0` plans
    /// none. At most [`MAX_BEAMS`].
    pub beams: usize,
    /// The tokenizer family and its table sizes ([`Family::of`] the
    /// vocabulary).
    pub tokenizer: Family,
}

/// Prompt tokens per prefill chunk unless [`Options::batch`] says otherwise.
pub const DEFAULT_BATCH: usize = 128;

/// The resolved sizes of one engine's buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    config: Config,
    prompt_bytes: usize,
    batch: usize,
    beams: usize,
    kv: KvType,
    tokenizer: Family,
    bytes: usize,
}

impl Plan {
    /// Sizes the arena for `config` (as loaded) under `options`.
    pub fn new(config: &Config, options: &Options) -> Result<Plan> {
        Plan::within(config, options, ADDRESS_SPACE)
    }

    /// [`Plan::new`] for an address space of `limit` bytes: every product
    /// of dimensions and the arena's total must stay within it, so the
    /// answer for a 32-bit target can be checked on any machine.
    pub fn within(config: &Config, options: &Options, limit: usize) -> Result<Plan> {
        let seq_len = match options.seq_len {
            0 => config.seq_len,
            n if n <= config.seq_len || options.allow_longer => n,
            n => {
                return Err(Error::ContextFull {
                    needed: n,
                    max: config.seq_len,
                })
            }
        };
        let prompt_bytes = match options.prompt_bytes {
            0 => seq_len
                .checked_mul(8)
                .ok_or(Error::Overflow { field: "seq_len" })?,
            n => n,
        };
        let config = Config { seq_len, ..*config };
        config.validate()?;
        let batch = match options.batch {
            0 => DEFAULT_BATCH,
            n => n,
        };
        if options.beams > MAX_BEAMS {
            return Err(Error::Misuse {
                what: "beams, at most 8",
                value: options.beams as i64,
            });
        }
        let beams = options.beams;
        let mut plan = Plan {
            config,
            prompt_bytes,
            batch: batch.min(MAX_BATCH).min(seq_len).max(beams.min(seq_len)),
            beams,
            kv: options.kv,
            tokenizer: options.tokenizer,
            bytes: 0,
        };
        let mut measure = Carver::measure(limit);
        plan.layout(&mut measure)?;
        plan.bytes = measure.used;
        Ok(plan)
    }

    /// Arena bytes needed; the arena must also start 64-byte aligned.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The config the engine runs with (its `seq_len` may be lowered).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Most tokens one batched forward pass takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Beam-search hypotheses planned for (0: none).
    pub fn beams(&self) -> usize {
        self.beams
    }

    /// Splits `arena` into the engine's buffers.
    pub fn carve<'a>(&self, arena: &'a mut [u8]) -> Result<Buffers<'a>> {
        check_arena(arena, self.bytes)?;
        self.layout(&mut Carver::cut(arena, self.bytes))
    }

    fn layout<'a>(&self, c: &mut Carver<'a>) -> Result<Buffers<'a>> {
        let p = &self.config;
        // One cache per beam.
        let caches = self.beams.max(1);
        let kv_cache = c.count(&[caches, p.n_layers, p.seq_len, p.kv_dim()])?;
        // Per head and position: the f32 cache's scores; the f16 cache's
        // softmax factors, two.
        let att = match self.kv {
            KvType::F32 => c.count(&[p.n_heads, p.seq_len])?,
            KvType::F16 => c.count(&[2, p.n_heads, p.seq_len])?,
        };
        // A row's matmul input: the widest, block-rounded (K-quants use
        // 256), and a block more, room for an f32 copy at any offset from a
        // cache line (`batch_form`).
        let input = c.count(&[p.dim.max(p.hidden_dim).div_ceil(256) + 1, 256])?;
        let rows = self.batch;
        let per_row = |c: &Carver<'a>, width: usize| c.count(&[rows, width]);
        Ok(Buffers {
            state: StateBuffers {
                rows,
                x: c.take(per_row(c, p.dim)?)?,
                xb: c.take(per_row(c, p.dim)?)?,
                xb2: c.take(per_row(c, p.dim)?)?,
                q: c.take(per_row(c, p.dim)?)?,
                k: c.take(per_row(c, p.kv_dim())?)?,
                v: c.take(per_row(c, p.kv_dim())?)?,
                hb: c.take(per_row(c, p.hidden_dim)?)?,
                hb2: c.take(per_row(c, p.hidden_dim)?)?,
                att: c.take(att)?,
                logits: c.take(c.count(&[caches, p.vocab_size])?)?,
                kv: match self.kv {
                    KvType::F32 => KvBuffers::F32 {
                        keys: c.take(kv_cache)?,
                        values: c.take(kv_cache)?,
                    },
                    KvType::F16 => KvBuffers::F16 {
                        keys: c.take(kv_cache)?,
                        values: c.take(kv_cache)?,
                    },
                },
                inv_freq: c.take(p.head_size() / 2)?,
                cos: c.take(per_row(c, p.head_size() / 2)?)?,
                sin: c.take(per_row(c, p.head_size() / 2)?)?,
                input: InputBuffers {
                    qs: c.take(per_row(c, input)?)?,
                    d: c.take(per_row(c, input)?)?,
                    bsums: c.take(per_row(c, input / 16)?)?,
                },
            },
            tokenizer: tokenizer_layout(c, p.vocab_size, self.tokenizer, self.prompt_bytes)?,
            candidates: c.take(c.count(&[2, p.vocab_size])?)?,
            prompt: c.take(p.seq_len + 1)?,
            beams: match self.beams {
                0 => BeamBuffers {
                    tokens: c.take(0)?,
                    best: c.take(0)?,
                },
                n => BeamBuffers {
                    tokens: c.take(c.count(&[n, p.seq_len + 1])?)?,
                    best: c.take(p.seq_len + 1)?,
                },
            },
        })
    }
}

/// The arena for a tokenizer alone (the `tokenize` command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenizerPlan {
    vocab_size: usize,
    kind: Family,
    prompt_bytes: usize,
    bytes: usize,
}

impl TokenizerPlan {
    pub fn new(vocab_size: usize, kind: Family, prompt_bytes: usize) -> Result<Self> {
        let mut measure = Carver::measure(ADDRESS_SPACE);
        tokenizer_layout(&mut measure, vocab_size, kind, prompt_bytes)?;
        Ok(TokenizerPlan {
            vocab_size,
            kind,
            prompt_bytes,
            bytes: measure.used,
        })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn carve<'a>(&self, arena: &'a mut [u8]) -> Result<TokenizerBuffers<'a>> {
        check_arena(arena, self.bytes)?;
        tokenizer_layout(
            &mut Carver::cut(arena, self.bytes),
            self.vocab_size,
            self.kind,
            self.prompt_bytes,
        )
    }
}

fn check_arena(arena: &[u8], needed: usize) -> Result<()> {
    if arena.len() < needed {
        return Err(Error::ArenaTooSmall {
            needed,
            given: arena.len(),
        });
    }
    let address = arena.as_ptr() as usize;
    if !address.is_multiple_of(ALIGN) {
        return Err(Error::ArenaMisaligned { address });
    }
    Ok(())
}

/// The tokenizer's buffers for `kind` (see [`Family::sizes`]).
fn tokenizer_layout<'a>(
    c: &mut Carver<'a>,
    vocab_size: usize,
    kind: Family,
    prompt_bytes: usize,
) -> Result<TokenizerBuffers<'a>> {
    let s = kind
        .sizes(vocab_size, prompt_bytes)
        .ok_or(Error::Overflow { field: "tokenizer" })?;
    Ok(TokenizerBuffers {
        starts: c.take(s.vocab)?,
        lens: c.take(s.vocab)?,
        specials: c.take(s.vocab)?,
        ids: c.take(s.work)?,
        claims: c.take(s.prompt)?,
        spm: SpmBuffers {
            scores: c.take(s.spm_vocab)?,
            sorted: c.take(s.spm_vocab)?,
            pair_ids: c.take(s.spm_work)?,
            pair_scores: c.take(s.spm_work)?,
        },
        bpe: BpeBuffers {
            by_text: c.take(s.token_slots)?,
            merges: c.take(s.merge_words)?,
            cps: c.take(s.cps)?,
            links: c.take(s.links)?,
            heap: c.take(s.heap)?,
        },
    })
}

/// All carve-outs of one engine.
pub struct Buffers<'a> {
    pub state: StateBuffers<'a>,
    pub tokenizer: TokenizerBuffers<'a>,
    /// The sampler's candidate sort keys and their sort scratch.
    pub candidates: &'a mut [u64],
    /// The context's tokens by position, and the one sampled last (so one
    /// more than the context).
    pub prompt: &'a mut [u32],
    pub beams: BeamBuffers<'a>,
}

/// Bump allocator over the arena. In measuring mode it only adds up the
/// aligned sizes and hands out empty slices. Nothing it counts or takes
/// may exceed `limit` bytes.
struct Carver<'a> {
    rest: Option<&'a mut [u8]>,
    used: usize,
    limit: usize,
}

impl<'a> Carver<'a> {
    fn measure(limit: usize) -> Self {
        Carver {
            rest: None,
            used: 0,
            limit,
        }
    }

    /// Cuts an arena already checked to hold `planned` bytes.
    fn cut(arena: &'a mut [u8], planned: usize) -> Self {
        Carver {
            rest: Some(arena),
            used: 0,
            limit: planned,
        }
    }

    /// The product of `factors`, if it stays within the limit.
    fn count(&self, factors: &[usize]) -> Result<usize> {
        factors
            .iter()
            .try_fold(1usize, |acc, &f| acc.checked_mul(f))
            .filter(|&n| n <= self.limit)
            .ok_or(Error::Overflow { field: "arena" })
    }

    fn take<T: Pod>(&mut self, n: usize) -> Result<&'a mut [T]> {
        let overflow = Error::Overflow { field: "arena" };
        let bytes = self.count(&[n, core::mem::size_of::<T>()])?;
        let padded = bytes
            .checked_next_multiple_of(ALIGN)
            .ok_or(overflow.clone())?;
        self.used = self
            .used
            .checked_add(padded)
            .filter(|&u| u <= self.limit)
            .ok_or(overflow)?;
        let Some(rest) = self.rest.take() else {
            return Ok(&mut []);
        };
        if rest.len() < padded {
            return Err(Error::ArenaTooSmall {
                needed: self.used,
                given: self.used - padded + rest.len(),
            });
        }
        let (head, tail) = rest.split_at_mut(padded);
        self.rest = Some(tail);
        let address = head.as_ptr() as usize;
        cast_slice_mut(&mut head[..bytes]).ok_or(Error::ArenaMisaligned { address })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            dim: 64,
            hidden_dim: 172,
            n_layers: 5,
            n_heads: 8,
            n_kv_heads: 4,
            vocab_size: 512,
            seq_len: 512,
            rope_theta: 10000.0,
            rope_scale: 1.0,
            norm_eps: 1e-5,
        }
    }

    /// A 64-byte-aligned buffer of at least `n` bytes.
    fn aligned(n: usize) -> std::vec::Vec<u8> {
        std::vec![0u8; n + ALIGN]
    }

    fn aligned_slice(v: &mut [u8], n: usize) -> &mut [u8] {
        let off = v.as_ptr().align_offset(ALIGN);
        &mut v[off..off + n]
    }

    #[test]
    fn plan_is_exactly_what_carving_uses() {
        let plan = Plan::new(&config(), &Options::default()).unwrap();
        let mut v = aligned(plan.bytes());
        let arena = aligned_slice(&mut v, plan.bytes());
        let b = plan.carve(arena).unwrap();
        match &b.state.kv {
            KvBuffers::F32 { keys, .. } => assert_eq!(keys.len(), 5 * 512 * 32),
            KvBuffers::F16 { .. } => panic!("f32 is the default"),
        }
        assert_eq!(b.prompt.len(), 513);
        // A row per token of the default batch, each activation buffer
        // whole cache lines.
        assert_eq!(b.state.rows, DEFAULT_BATCH);
        let addr = b.state.x.as_ptr() as usize;
        assert_eq!(addr % ALIGN, 0);
        assert_eq!(b.state.xb.as_ptr() as usize - addr, DEFAULT_BATCH * 64 * 4);

        let mut v = aligned(plan.bytes());
        let short = aligned_slice(&mut v, plan.bytes() - 1);
        assert_eq!(
            plan.carve(short).err(),
            Some(Error::ArenaTooSmall {
                needed: plan.bytes(),
                given: plan.bytes() - 1
            })
        );
    }

    #[test]
    fn lower_seq_len_shrinks_and_higher_is_refused() {
        let full = Plan::new(&config(), &Options::default()).unwrap();
        let short = Plan::new(
            &config(),
            &Options {
                seq_len: 64,
                ..Options::default()
            },
        )
        .unwrap();
        assert!(short.bytes() < full.bytes());
        assert_eq!(short.config().seq_len, 64);
        let err = Plan::new(
            &config(),
            &Options {
                seq_len: 513,
                ..Options::default()
            },
        );
        assert_eq!(
            err,
            Err(Error::ContextFull {
                needed: 513,
                max: 512
            })
        );
    }

    /// stories110M's shape with a 2²⁰-position context: a 77 GB KV cache,
    /// which a 64-bit target can plan and a 32-bit one cannot address.
    #[test]
    fn sizes_beyond_a_32_bit_address_space_are_errors() {
        let big = Config {
            dim: 768,
            hidden_dim: 2048,
            n_layers: 12,
            n_heads: 12,
            n_kv_heads: 12,
            vocab_size: 32000,
            seq_len: 1 << 20,
            ..config()
        };
        let options = Options::default();
        let u32_limit = u32::MAX as usize;
        assert_eq!(
            Plan::within(&big, &options, u32_limit),
            Err(Error::Overflow { field: "arena" })
        );
        let plan = Plan::new(&big, &options).unwrap();
        assert!(plan.bytes() > 2 * 12 * (1 << 20) * 768 * 4);
        // Each buffer fits, their sum does not.
        let fits = Config {
            seq_len: 65536,
            ..big
        };
        let one_cache = 12 * 65536 * 768 * 4;
        assert!(one_cache <= u32_limit && 2 * one_cache > u32_limit);
        assert_eq!(
            Plan::within(&fits, &options, u32_limit),
            Err(Error::Overflow { field: "arena" })
        );
        // A vocabulary whose sort keys alone pass the limit.
        let vocab = Config {
            vocab_size: 1 << 30,
            seq_len: 16,
            ..big
        };
        assert_eq!(
            Plan::within(&vocab, &options, u32_limit),
            Err(Error::Overflow { field: "arena" })
        );
        assert_eq!(
            Plan::within(&config(), &options, u32_limit).map(|p| p.bytes()),
            Ok(Plan::new(&config(), &options).unwrap().bytes())
        );
    }

    #[test]
    fn f16_cache_halves_the_kv_memory() {
        let f32 = Plan::new(&config(), &Options::default()).unwrap();
        let f16 = Plan::new(
            &config(),
            &Options {
                kv: KvType::F16,
                ..Options::default()
            },
        )
        .unwrap();
        // Two caches of 5 × 512 × 32, at 4 and at 2 bytes, less a second
        // float per head and position.
        let saved = 2 * 5 * 512 * 32 * 2 - 8 * 512 * 4;
        assert_eq!(f32.bytes() - f16.bytes(), saved);
    }

    #[test]
    fn misaligned_arena_is_an_error() {
        let plan = Plan::new(&config(), &Options::default()).unwrap();
        let mut v = aligned(plan.bytes() + 1);
        let off = v.as_ptr().align_offset(ALIGN) + 1;
        let arena = &mut v[off..off + plan.bytes()];
        assert!(matches!(
            plan.carve(arena),
            Err(Error::ArenaMisaligned { .. })
        ));
    }
}
