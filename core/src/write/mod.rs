//! The write side: everything that produces model files (the read side is
//! [`crate::image`]). GGUF and llama2.c v2 images stream row by row through
//! an [`Output`](crate::io::Output), so a model of any size is written in
//! bounded memory; the quantizers give llama.cpp's bytes.

pub mod export;
pub mod gguf;
pub mod quant;
pub mod synth;
