//! Numeric kernels: the only home of SIMD and of the core's `unsafe`.
//!
//! Every entry point here is a safe function that checks slice lengths and
//! then runs the twin for the caller's [`Isa`]: `scalar` (the specification,
//! summing left to right as llama2.c does), `x86` (AVX2+FMA, AVX-512F) or
//! `neon`. SIMD twins are tested against the scalar one on every size with
//! tails and unaligned weights. Each twin sums in a fixed order of its own,
//! so a given `Isa` is bitwise reproducible; different ISAs agree within
//! rounding.

#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::tensor::{DType, WeightRef};

/// The SIMD twins' `exp`: Cody–Waite reduction by ln 2 (split in two for
/// accuracy) and the degree-6 polynomial of Cephes' `expf`, accurate to
/// about 2 ulp. Inputs are clamped so 2^n stays a normal number; softmax
/// and SiLU only feed it values far inside that range.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod expf {
    pub const EXP_HI: f32 = 88.0;
    pub const EXP_LO: f32 = -87.33654;
    pub const LOG2E: f32 = core::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const EXP_POLY: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// The instruction-set level the kernels use.
///
/// Only [`Isa::SCALAR`] can be named directly. Other levels come from
/// [`Isa::from_target`] (features the compiler was told the CPU has) or, with
/// the `std` feature, [`Isa::detect`] (features the running CPU reports). That
/// is what makes calling the `#[target_feature]` kernels sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Isa(Level);

// Without run-time detection, levels the compile-time features do not
// enable cannot be constructed.
#[cfg_attr(not(any(test, feature = "std")), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// Plain Rust: the specification every other level is tested against.
    pub const SCALAR: Isa = Isa(Level::Scalar);

    /// The best level the compile-time target features guarantee. This is
    /// what a `no_std` build (firmware) uses: NEON on every aarch64 target.
    pub const fn from_target() -> Isa {
        #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
        return Isa(Level::Avx512);
        #[cfg(all(
            target_arch = "x86_64",
            not(target_feature = "avx512f"),
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        return Isa(Level::Avx2);
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        return Isa(Level::Neon);
        #[allow(unreachable_code)]
        Isa::SCALAR
    }

    /// The best level this CPU supports, asked at run time.
    #[cfg(any(test, feature = "std"))]
    pub fn detect() -> Isa {
        Isa::available().last().unwrap_or(Isa::SCALAR)
    }

    /// Every level this CPU supports, scalar first (for tests and `bench`).
    #[cfg(any(test, feature = "std"))]
    pub fn available() -> impl Iterator<Item = Isa> {
        let mut levels = heapless::Vec::<Isa, 4>::new();
        let _ = levels.push(Isa::SCALAR);
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                let _ = levels.push(Isa(Level::Avx2));
            }
            if std::is_x86_feature_detected!("avx512f") {
                let _ = levels.push(Isa(Level::Avx512));
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                let _ = levels.push(Isa(Level::Neon));
            }
        }
        levels.into_iter()
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => "avx512",
            #[cfg(target_arch = "aarch64")]
            Level::Neon => "neon",
        }
    }
}

/// Calls the twin of `$f` for `$isa`'s level.
macro_rules! dispatch {
    ($isa:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $isa.0 {
            Level::Scalar => scalar::$f($($arg),*),
            // SAFETY: a non-scalar `Isa` exists only once its CPU features
            // were detected or enabled at compile time, and every caller of
            // this macro has checked the lengths the twin relies on.
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { x86::avx2::$f($($arg),*) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe { x86::avx512::$f($($arg),*) },
            // SAFETY: as above.
            #[cfg(target_arch = "aarch64")]
            Level::Neon => unsafe { neon::$f($($arg),*) },
        }
    };
}

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

/// Views bytes as `[T]`; `None` when the start is not aligned for `T` or
/// the length is not a whole number of elements.
pub(crate) fn cast_slice_mut<T: Pod>(bytes: &mut [u8]) -> Option<&mut [T]> {
    // SAFETY: `T: Pod` has no invalid bit patterns and no drop glue, so any
    // initialised bytes form valid `T`s; `align_to_mut` only hands out the
    // middle part that is correctly aligned, and we reject the call unless
    // that middle part is the whole slice.
    let (head, body, tail) = unsafe { bytes.align_to_mut::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

/// `out[r] = Σ_c w[r][c] · x[c]` for every row of `w`.
pub fn matvec(isa: Isa, out: &mut [f32], w: &WeightRef<'_>, x: &[f32]) {
    assert_eq!(out.len(), w.rows(), "matvec: output length");
    assert_eq!(x.len(), w.cols(), "matvec: input length");
    match w.dtype() {
        DType::F32 => dispatch!(isa, matvec_f32(out, w.data(), x)),
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
pub fn rmsnorm(isa: Isa, out: &mut [f32], x: &[f32], weight: &WeightRef<'_>, eps: f32) {
    assert_eq!(out.len(), x.len(), "rmsnorm: output length");
    assert_eq!(
        weight.rows() * weight.cols(),
        x.len(),
        "rmsnorm: weight length"
    );
    assert_eq!(weight.dtype(), DType::F32, "rmsnorm: weight type");
    dispatch!(isa, rmsnorm(out, x, weight.data(), eps))
}

/// In-place softmax over `x`.
pub fn softmax(isa: Isa, x: &mut [f32]) {
    dispatch!(isa, softmax(x))
}

/// Rotates adjacent pairs `(v[2i], v[2i+1])` of every head in `v` by the
/// angles whose cosines and sines are `cos[i]`, `sin[i]` (llama2.c's RoPE).
pub fn rope(isa: Isa, v: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert_eq!(cos.len(), sin.len(), "rope: table lengths");
    assert!(!cos.is_empty(), "rope: empty tables");
    assert_eq!(v.len() % (2 * cos.len()), 0, "rope: head size");
    dispatch!(isa, rope(v, cos, sin))
}

/// `h = silu(h) · g`, the SwiGLU gate.
pub fn swiglu(isa: Isa, h: &mut [f32], g: &[f32]) {
    assert_eq!(h.len(), g.len(), "swiglu: lengths");
    dispatch!(isa, swiglu(h, g))
}

/// One query head's attention scores over the cached positions:
/// `scores[t] = (q · k_t) / scale`, key `t` being `keys[t·stride..][..q.len()]`
/// (a head's slice of the KV cache, whose positions lie `stride` apart).
pub fn attention_scores(
    isa: Isa,
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scale: f32,
) {
    assert!(
        !q.is_empty() && stride >= q.len(),
        "attention_scores: stride"
    );
    if let Some(last) = scores.len().checked_sub(1) {
        assert!(
            keys.len() >= last * stride + q.len(),
            "attention_scores: keys"
        );
    }
    dispatch!(isa, attention_scores(scores, q, keys, stride, scale))
}

/// One head's attention output: `out = Σ_t weights[t] · v_t`, value `t`
/// being `values[t·stride..][..out.len()]`, summed in order of `t`.
pub fn attention_mix(isa: Isa, out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
    assert!(
        !out.is_empty() && stride >= out.len(),
        "attention_mix: stride"
    );
    if let Some(last) = weights.len().checked_sub(1) {
        assert!(
            values.len() >= last * stride + out.len(),
            "attention_mix: values"
        );
    }
    dispatch!(isa, attention_mix(out, weights, values, stride))
}

/// `y += x`, the residual connection.
pub fn add(isa: Isa, y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add: lengths");
    dispatch!(isa, add(y, x))
}

/// The sum of little-endian f32 values in `data` (whose length must be a
/// multiple of 4). A streaming read as fast as the ISA allows — several
/// interleaved streams, as matvec reads several rows — so it is the memory
/// bandwidth probe that decode speed is compared with.
pub fn sum(isa: Isa, data: &[u8]) -> f32 {
    assert_eq!(data.len() % 4, 0, "sum: length");
    dispatch!(isa, sum(data))
}

#[cfg(test)]
mod tests;
