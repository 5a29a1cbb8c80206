//! aarch64 NEON twins of the scalar kernels (4 lanes; NEON is part of every
//! aarch64 target). Matrix rows are processed four at a time with two
//! accumulators each, so one load of `x` serves four rows and eight FMA
//! chains hide the FMA latency of Cortex-A76 and Apple cores. The
//! matrix×matrix kernels run the same code for up to four inputs at once,
//! so each weight vector or block is loaded (and unpacked) once for them
//! all; where that would need more accumulators than the 32 registers
//! hold, they take fewer rows per pass.
//!
//! The int8 kernels (Q8_0, Q4_0, Q8G, Q4_K, Q6_K) compute every integer
//! dot product exactly and then repeat the scalar twin's float operations
//! lane by lane, one row per lane, so they give the scalar results bit for
//! bit. The f16 kernels convert with `fcvtl`/`fcvtn` through inline
//! assembly, since the `float16x4_t` intrinsics are not stable.
//!
//! # Files
//!
//! There are two levels: NEON, and NEON with dotprod ([`dot`]), which only
//! the int8 kernels use. So [`float`] (f32 and f16 weights, the attention
//! scores over an f32 cache, and the [`Vector`](crate::kernels::vector::Vector)
//! through which NEON runs the f32 kernels every SIMD level shares) and
//! [`f16`] (the f16 KV cache) are plain NEON code that both levels share;
//! [`blocks`] (the input quantizers, Q8_0, Q4_0, Q8G) and [`kquants`]
//! (Q4_K, Q6_K) are written once as `#[inline(always)]` functions generic
//! over a [`Dot`], the int8 dot product of a level: widening multiplies, or
//! `sdot`. Each level's public int8 functions are thin `#[target_feature]`
//! wrappers (`int8_kernels!`) into which the body compiles whole, with that
//! level's instructions. NEON itself is part of every aarch64 target, so
//! only `sdot` needs the body inlined: it is kept out of closures, which
//! have no target features and are inlined only by heuristics.
//!
//! # Safety
//!
//! Every `unsafe fn` under this module has this contract, which its doc
//! refers to:
//!
//! 1. **Features.** The CPU has NEON, and dotprod too at the dotprod level
//!    (an `Isa` of that level is the proof). A generic body, which has no
//!    `#[target_feature]` of its own, must run inlined into a function
//!    compiled with its level's features: its level's wrapper.
//! 2. **Lengths.** The slices have the lengths that the entry point in
//!    `kernels` checked: a matrix `w` holds `out.len()` whole rows in its
//!    format of `x.len()` values (`x` being the input, or its int8 values),
//!    with a scale per block of the input; vectors that go together are
//!    equally long; `v.len()` is a multiple of `2 · cos.len()` for RoPE;
//!    a strided KV cache holds every position it is asked for.
//!
//! `vld1*` and `vst1*` are unaligned accesses on aarch64, so weight bytes
//! may have any alignment; pointers into them are never dereferenced as
//! wider types, only read through those, `read_unaligned` or byte arrays.

mod blocks;
mod f16;
mod float;
mod kquants;

use core::arch::aarch64::*;
use core::arch::asm;

pub use blocks::{quantize_q8_0, quantize_q8_1, quantize_q8_k};
pub use f16::{attention_f16, f32_to_f16};
pub use float::{
    add, attention_dots, attention_mix, matmul_f16, matmul_f32, matvec_f16, matvec_f32, rmsnorm,
    rope, softmax, sum, swiglu,
};

/// The int8 dot product of a level, implemented by the zero-sized [`Neon`]
/// and [`NeonDot`], whose methods carry the level's `#[target_feature]`.
///
/// # Safety
///
/// Every method: the [contract](self#safety), at the implementing level.
trait Dot {
    /// `acc` plus the 16 products `a[i]·b[i]`, in some lanes.
    unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;

    /// Those products summed four by four: lane `l` gets products
    /// `4l..4l + 4`, the scalar twin's lane sums.
    unsafe fn lanes16(a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// The NEON level.
struct Neon;

impl Dot for Neon {
    /// Widening multiplies and pairwise adds: four instructions for 16 bytes.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        vpadalq_s16(acc, vmull_high_s8(a, b))
    }

    /// Widening multiplies, then pairs of pairs: five instructions.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn lanes16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let low = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        vpaddq_s32(low, vpaddlq_s16(vmull_high_s8(a, b)))
    }
}

/// The NEON level with dotprod.
struct NeonDot;

impl Dot for NeonDot {
    /// One `sdot` (its intrinsic, `vdotq_s32`, is not stable).
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot16(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: `sdot` exists at this level (contract 1) and touches only
        // the registers named.
        unsafe {
            asm!(
                "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
                inout(vreg) acc,
                in(vreg) a,
                in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }

    /// `sdot` sums exactly the scalar twin's groups of four.
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn lanes16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: the caller's contract is the same.
        unsafe { Self::dot16(vdupq_n_s32(0), a, b) }
    }
}

/// The public int8 functions for `$level`, compiled with `$features`.
macro_rules! int8_kernels {
    ($features:literal, $level:ident) => {
        int8_wrappers!($features, neon, $level, $crate::kernels::neon::blocks::BLOCKS32_TILE_ROWS, []);
        spec_kernels!(
            matmul_q5_0, matmul_q5_1, matmul_iq4nl, matmul_q5k, matmul_q3k, matmul_q2k,
            matmul_iq4xs, matmul_bf16,
        );
        level_wrappers! { $features;
            fn matmul_q4k(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = $crate::kernels::neon::kquants::matmul::<$level, $crate::kernels::neon::kquants::Q4k>;
            fn matmul_q6k(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = $crate::kernels::neon::kquants::matmul::<$level, $crate::kernels::neon::kquants::Q6k>;
        }
    };
}

int8_kernels!("neon", Neon);

/// The dotprod level: the int8 kernels with `sdot`; the NEON level's
/// kernels otherwise.
pub mod dot {
    pub use super::{
        add, attention_dots, attention_f16, attention_mix, f32_to_f16, matmul_f16, matmul_f32,
        matvec_f16, matvec_f32, quantize_q8_0, quantize_q8_1, quantize_q8_k, rmsnorm, rope,
        softmax, sum, swiglu,
    };

    use super::NeonDot;

    int8_kernels!("neon,dotprod", NeonDot);
}

/// Four f16 values (bits) as f32, exactly.
#[target_feature(enable = "neon")]
#[inline]
fn widen(h: uint16x4_t) -> float32x4_t {
    let f: float32x4_t;
    // SAFETY: `fcvtl` is part of every aarch64 target, and touches only the
    // registers named.
    unsafe {
        asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) f, in(vreg) h, options(pure, nomem, nostack))
    };
    f
}

/// Four f32 values as f16 bits, rounded to nearest even (the default
/// rounding mode) and overflowing to infinity, as `tensor::f32_to_f16` does
/// for every value but NaN.
#[target_feature(enable = "neon")]
#[inline]
fn narrow(f: float32x4_t) -> uint16x4_t {
    let h: uint16x4_t;
    // SAFETY: `fcvtn` is part of every aarch64 target, and touches only the
    // registers named.
    unsafe {
        asm!("fcvtn {0:v}.4h, {1:v}.4s", out(vreg) h, in(vreg) f, options(pure, nomem, nostack))
    };
    h
}

/// `x` rounded to the nearest f16, kept as f32 (the scalar `round16`).
#[target_feature(enable = "neon")]
#[inline]
fn round16(x: float32x4_t) -> float32x4_t {
    widen(narrow(x))
}

/// The little-endian f16 at `p` (any alignment) as f32.
///
/// # Safety
///
/// `p` points at two readable bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller's.
    let h = u16::from_le_bytes(unsafe { p.cast::<[u8; 2]>().read() });
    let f: f32;
    // SAFETY: `fcvt` is part of every aarch64 target, and touches only the
    // registers named.
    unsafe { asm!("fcvt {0:s}, {1:h}", out(vreg) f, in(vreg) h, options(pure, nomem, nostack)) };
    f
}

/// Loads `valid` (≤ 4) floats from `p`, zero-filling the rest, without
/// reading past them. `p` may be unaligned (weights), so the tail is copied
/// as bytes.
///
/// # Safety
///
/// `p` points at `valid` readable floats.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load(p: *const f32, valid: usize) -> float32x4_t {
    // SAFETY: the caller's: `valid` floats at `p`.
    unsafe {
        if valid == 4 {
            return vld1q_f32(p);
        }
        let mut buf = [0.0f32; 4];
        core::ptr::copy_nonoverlapping(p.cast::<u8>(), buf.as_mut_ptr().cast::<u8>(), 4 * valid);
        vld1q_f32(buf.as_ptr())
    }
}

/// Rows per pass of the int8 kernels: one per lane.
const ROWS: usize = 4;

/// A kernel that [`by_rows`] runs over a matrix: the results of `R` rows
/// for each of its `T` inputs.
trait Rows<const R: usize, const T: usize> {
    /// The results of the rows that start at `rows`, input by input.
    ///
    /// # Safety
    ///
    /// The [contract](self#safety); `rows` start whole rows of the
    /// matrix the kernel's inputs fit.
    unsafe fn rows(&self, rows: [*const u8; R]) -> [[f32; R]; T];
}

/// `out[t][r]` for every row of `w` by `kernel`, `R` rows per pass. A
/// short last pass repeats its last row (computed in full) and keeps only
/// its own rows.
///
/// # Safety
///
/// The [contract](self#safety); the kernel's inputs fit `w`, which holds
/// `out[t].len()` rows.
#[inline(always)]
unsafe fn by_rows<const R: usize, const T: usize>(
    out: &mut [&mut [f32]],
    w: &[u8],
    kernel: &impl Rows<R, T>,
) {
    let count = out[0].len();
    let row_bytes = w.len() / count.max(1);
    for first in (0..count).step_by(R) {
        let valid = (count - first).min(R);
        // SAFETY: every row asked for is below `count`, so it starts in `w`,
        // and the caller's contract is the kernel's.
        let v = unsafe {
            let rows =
                core::array::from_fn(|k| w.as_ptr().add((first + k.min(valid - 1)) * row_bytes));
            kernel.rows(rows)
        };
        for (o, v) in out.iter_mut().zip(v) {
            o[first..first + valid].copy_from_slice(&v[..valid]);
        }
    }
}

/// Lane `k` is the sum of `v[k]`'s lanes.
#[target_feature(enable = "neon")]
#[inline]
fn hsum4(v: [int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]))
}

/// Each vector's lanes (one row per lane) as an array.
#[target_feature(enable = "neon")]
#[inline]
fn lanes<const T: usize>(v: [float32x4_t; T]) -> [[f32; ROWS]; T] {
    v.map(|v| {
        let mut lanes = [0.0f32; ROWS];
        // SAFETY: `lanes` has room for the four floats written.
        unsafe { vst1q_f32(lanes.as_mut_ptr(), v) };
        lanes
    })
}

/// The unsigned bytes of `v` as signed ones (all below 128 here).
#[target_feature(enable = "neon")]
#[inline]
fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}
