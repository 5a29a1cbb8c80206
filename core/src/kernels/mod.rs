//! Numeric kernels: the only home of `unsafe` in the core. Every entry point
//! here is a safe function that checks slice lengths before it computes, so
//! the model code above never reasons about bounds.
//!
//! `scalar` is the specification: plain Rust that sums in a fixed order.

mod scalar;

use crate::tensor::{DType, WeightRef};

mod sealed {
    pub trait Sealed {}
}

/// Element types the arena may be viewed as: every bit pattern is a valid
/// value, so reinterpreting zeroed or reused bytes is sound.
pub trait Pod: sealed::Sealed + Copy {}
impl sealed::Sealed for f32 {}
impl Pod for f32 {}
impl sealed::Sealed for u32 {}
impl Pod for u32 {}
impl sealed::Sealed for u64 {}
impl Pod for u64 {}

/// Views 64-byte-aligned bytes as `[T]`; `None` when the start is not
/// aligned for `T` or the length is not a whole number of elements.
pub(crate) fn cast_slice_mut<T: Pod>(bytes: &mut [u8]) -> Option<&mut [T]> {
    // SAFETY: `T: Pod` has no invalid bit patterns and no drop glue, so any
    // initialised bytes form valid `T`s; `align_to_mut` only hands out the
    // middle part that is correctly aligned, and we reject the call unless
    // that middle part is the whole slice.
    let (head, body, tail) = unsafe { bytes.align_to_mut::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

/// `out[r] = Σ_c w[r][c] · x[c]` for every row of `w`.
pub fn matvec(out: &mut [f32], w: &WeightRef<'_>, x: &[f32]) {
    assert_eq!(out.len(), w.rows(), "matvec: output length");
    assert_eq!(x.len(), w.cols(), "matvec: input length");
    match w.dtype() {
        DType::F32 => scalar::matvec_f32(out, w.data(), x),
    }
}

/// Copies row `row` of `w` into `out` as f32 (the embedding lookup).
pub fn row(out: &mut [f32], w: &WeightRef<'_>, row: usize) {
    assert_eq!(out.len(), w.cols(), "row: output length");
    assert!(row < w.rows(), "row: index");
    match w.dtype() {
        DType::F32 => {
            let bytes = w.cols() * 4;
            scalar::f32_from_le(out, &w.data()[row * bytes..][..bytes])
        }
    }
}

/// `out = x / rms(x) · weight`, the RMSNorm of LLaMA.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &WeightRef<'_>, eps: f32) {
    assert_eq!(out.len(), x.len(), "rmsnorm: output length");
    assert_eq!(
        weight.rows() * weight.cols(),
        x.len(),
        "rmsnorm: weight length"
    );
    assert_eq!(weight.dtype(), DType::F32, "rmsnorm: weight type");
    scalar::rmsnorm(out, x, weight.data(), eps)
}

/// In-place softmax over `x`.
pub fn softmax(x: &mut [f32]) {
    scalar::softmax(x)
}

/// Rotates adjacent pairs `(v[2i], v[2i+1])` of every head in `v` by the
/// angles whose cosines and sines are `cos[i]`, `sin[i]` (llama2.c's RoPE).
pub fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert_eq!(cos.len(), sin.len(), "rope: table lengths");
    assert_eq!(v.len() % (2 * cos.len().max(1)), 0, "rope: head size");
    scalar::rope(v, cos, sin)
}

/// `h = silu(h) · g`, the SwiGLU gate.
pub fn swiglu(h: &mut [f32], g: &[f32]) {
    assert_eq!(h.len(), g.len(), "swiglu: lengths");
    scalar::swiglu(h, g)
}

/// `Σ a[i] · b[i]`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths");
    scalar::dot(a, b)
}

/// `y += a · x`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: lengths");
    scalar::axpy(y, a, x)
}

/// `y += x`, the residual connection.
pub fn add(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add: lengths");
    scalar::add(y, x)
}
