//! barellama-core: LLaMA-family inference with zero dynamic allocation.
//!
//! The core takes a weight image as `&[u8]` (a memory-mapped file, or bytes
//! linked into firmware) and a caller-supplied arena, and never allocates:
//! it does not even link `alloc`. A [`Plan`] tells, before any memory
//! exists, exactly how many arena bytes a model needs.
//!
//! ```no_run
//! use barellama_core::{Compute, Isa, Model, Options, Plan, SamplerConfig, Session, Vocab};
//!
//! # fn demo(image: &[u8], tokenizer: &[u8], arena: &mut [u8]) -> barellama_core::Result<()> {
//! let model = Model::load(image)?;
//! let plan = Plan::new(&model.config, &Options { seq_len: 256, ..Options::default() })?;
//! assert!(arena.len() >= plan.bytes()); // and 64-byte aligned
//! let greedy = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
//! // NEON on aarch64, on this thread; hosts use Isa::detect() and a ThreadPool.
//! let compute = Compute::single(Isa::from_target());
//! let mut session = Session::new(&model, Vocab::Llama2c(tokenizer), greedy, &plan, arena, compute)?;
//! session.generate(b"Once upon a time", 256, |_id, piece| {
//!     piece.bytes(|text| { let _ = text; /* write to a UART, a buffer, ... */ });
//!     Ok(())
//! })?;
//! # Ok(()) }
//! ```
#![no_std]

#[cfg(any(test, feature = "std"))]
extern crate std;

// Alphabetical; the README's Layout lists them bottom to top, the order
// in which a module imports only those below it.
pub mod arena;
pub mod beam;
pub mod chat;
pub mod cli;
pub mod config;
pub mod error;
pub mod exec;
pub mod generate;
#[cfg(feature = "std")]
pub mod hosted;
pub mod image;
pub mod io;
pub mod kernels;
pub mod libc;
pub mod model;
mod reader;
pub mod rng;
pub mod sampler;
pub mod tensor;
pub mod tokenizer;
pub mod write;

pub use arena::{KvType, Options, Plan};
pub use chat::{Chat, Template, Turn};
pub use config::Config;
pub use error::{Error, Result};
pub use exec::{Compute, Exec, SingleThread};
pub use generate::{tokenize_parts, End, Part, Session, TextSink};
pub use image::vocab::Vocab;
pub use image::Model;
pub use kernels::Isa;
pub use model::Transformer;
pub use sampler::{Sampler, SamplerConfig};
pub use tokenizer::{Piece, Tokenizer};
