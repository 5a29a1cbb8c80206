//! x86_64 twins of the scalar kernels at two levels: [`avx2`] (AVX2, FMA
//! and F16C: 8 lanes) and [`avx512`] (AVX-512 F, BW, VL and VNNI: 16
//! lanes, masked tails).
//!
//! Decode is bound by how fast one core streams weights from DRAM, and one
//! core reads faster from several streams at once than from one: matvec
//! reads [`ROWS`] rows in parallel (measured here: 8 streams ≈ 1.3× one).
//!
//! # Files
//!
//! Each level's module holds what is written for its own vector width —
//! its f32 matrix kernels (matvec, and for AVX-512 the matmul tile in
//! `avx512/tile.rs`) — and its implementations of [`Level`] and of
//! [`Vector`](crate::kernels::vector::Vector), through which it runs the
//! f32 kernels every SIMD level shares (`kernels/vector.rs`). The integer
//! and half-precision kernels are 256-bit code on both levels that differs
//! in a handful of operations (above all the int8 dot product: one
//! `vpdpbusd` with VNNI, `pmaddubsw`+`pmaddwd` without), so they are written
//! once, one file per weight family: [`blocks`] (Q8_0, Q4_0, llama2.c's
//! Q8G, and the input quantizers), [`kquants`] (Q4_K, Q6_K) and [`f16`] (f16
//! weights, and attention over the f16 KV cache).
//!
//! Those shared kernels are `#[inline(always)]` functions, generic over the
//! [`Level`] where they use its operations, and each level lists them as
//! its public functions (`shared_kernels!`): thin `#[target_feature]`
//! wrappers into which the whole body compiles, with the level's
//! instructions. A body has no target features of its own, so everything it
//! calls must be forced inline too: row kernels are types implementing
//! [`Rows`] rather than closures, and hot loops use plain loops rather than
//! closures over intrinsics (a closure is inlined only if the compiler
//! judges it worth it, and otherwise runs its intrinsics as calls).
//!
//! # Safety
//!
//! Every `unsafe fn` under this module has this contract, which its doc
//! refers to:
//!
//! 1. **Features.** The CPU has the features of the level the function
//!    runs at (an `Isa` of that level is the proof). A generic body, which
//!    has no `#[target_feature]` of its own, must run inlined into a
//!    function compiled with them: its level's wrapper.
//! 2. **Lengths.** The slices have the lengths that the entry point in
//!    `kernels` checked: a matrix `w` holds `out.len()` whole rows in its
//!    format of `x.len()` values (`x` being the input, or its int8 values),
//!    with a scale per block of the input; vectors that go together are
//!    equally long; `v.len()` is a multiple of `2 · cos.len()` for RoPE;
//!    a strided KV cache holds every position it is asked for.
//!
//! Weight bytes may have any alignment: only unaligned loads touch them.

pub mod avx2;
pub mod avx512;
mod blocks;
mod f16;
mod kquants;

use core::arch::x86_64::*;

use crate::kernels::Input;

/// How many positions ahead f16 attention prefetches the cache: positions
/// are a row of the cache apart, too far for the hardware prefetcher.
const AHEAD: usize = 16;

/// Rows per matvec pass: eight concurrent read streams.
const ROWS: usize = 8;
/// The bandwidth probe (`sum`) reads as many streams as matvec does.
const STREAMS: usize = ROWS;

/// The operations in which the two levels' shared kernels differ,
/// implemented by the zero-sized [`avx2::Avx2`] and [`avx512::Avx512`]. The
/// implementations carry their level's `#[target_feature]`, so that they
/// compile into that level's wrappers.
///
/// # Safety
///
/// Every method: the [contract](self#safety), at the implementing level.
trait Level: Sized {
    /// What a Q8_0 weight is biased by for [`Level::q8_0_biased_lanes`].
    const Q8_0_BIAS: i8;

    /// `acc` plus the eight sums of four `a` (unsigned) × `b` (signed) byte
    /// products.
    unsafe fn lanes_u_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;

    /// The eight sums of four `a` (unsigned) × `b` (signed) byte products.
    #[inline(always)]
    unsafe fn lanes_u(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: the caller's contract is this method's.
        unsafe { Self::lanes_u_acc(_mm256_setzero_si256(), a, b) }
    }

    /// A Q8_0 block's 32 stored (signed) values as `value + Q8_0_BIAS`.
    unsafe fn q8_0_biased(w: __m256i) -> __m256i;

    /// A Q8_0 block's eight exact lane sums with input block `x`, from the
    /// weights as [`Level::q8_0_biased`] gives them and `corr`: the input's
    /// lane sums times `−Q8_0_BIAS` ([`blocks`]' `correction`).
    unsafe fn q8_0_biased_lanes(w: __m256i, x: __m256i, corr: __m256i) -> __m256i;

    /// `R` rows of 32-value blocks in format `F` for `T` inputs:
    /// [`blocks::blocks32_rows`] itself, or a faster equal.
    #[inline(always)]
    unsafe fn blocks32_rows<F: blocks::Format, const R: usize, const T: usize>(
        rows: [*const u8; R],
        ahead: usize,
        x: [Input<'_>; T],
    ) -> [[f32; T]; R] {
        // SAFETY: the caller's contract is this method's.
        unsafe { blocks::blocks32_rows::<Self, F, R, T>(rows, ahead, x) }
    }
}

/// A kernel that [`by_rows`] runs over a matrix: the results of some rows
/// for each of its `T` inputs.
trait Rows<const T: usize> {
    /// The results of the `R` rows that start at `rows`, each told to
    /// prefetch the lines `ahead` bytes further on (none for 0).
    ///
    /// # Safety
    ///
    /// The [contract](self#safety); `rows` start whole rows of the
    /// matrix the kernel's inputs fit.
    unsafe fn rows<const R: usize>(&self, rows: [*const u8; R], ahead: usize) -> [[f32; T]; R];
}

/// The public functions of the kernels both levels share, for `$level`
/// compiled with `$features`; `$tile` is the rows per pass of its 32-value
/// block tiles, whose twice as many registers per (row, input) leave room
/// for half as many rows in the Q8G and f16 tiles.
macro_rules! shared_kernels {
    ($features:literal, $level:ident, $tile:literal) => {
        int8_wrappers!($features, x86, $level, $tile, [, { $tile / 2 }]);
        spec_kernels!(
            matmul_q5_0, matmul_q5_1, matmul_iq4nl, matmul_q5k, matmul_q3k, matmul_q2k,
            matmul_iq4xs, matmul_bf16,
        );
        level_wrappers! { $features;
            fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32]) = super::blocks::quantize_q8_0;
            fn quantize_q8_1(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32])
                = super::blocks::quantize_q8_1;
            fn quantize_q8_k(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16])
                = $crate::kernels::input::quantize_q8_k_by::<super::blocks::Q8k>;
            fn matmul_q4k(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = super::kquants::matmul::<super::kquants::Q4k>;
            fn matmul_q6k(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = super::kquants::matmul::<super::kquants::Q6k>;
            fn matvec_f16(out: &mut [f32], w: &[u8], x: &[f32]) = super::f16::matvec_f16;
            fn matmul_f16(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = super::f16::matmul_f16::<{ $tile / 2 }>;
            fn f32_to_f16(out: &mut [u16], x: &[f32]) = super::f16::f32_to_f16;
            fn attention_f16(
                out: &mut [f32],
                a: $crate::kernels::F16Attention<'_>,
                scratch: &mut [f32],
            ) = super::f16::attention_f16;
            #[cfg(test)]
            fn online_softmax(scores: &mut [f32], weights: &mut [f32]) -> f32
                = super::f16::online_softmax;
        }
    };
}
use shared_kernels;

/// GGML's horizontal sum of eight floats: halves, then pairs.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hmax8(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum_i32(v: __m256i) -> i32 {
    hsum4_i32(_mm_add_epi32(
        _mm256_castsi256_si128(v),
        _mm256_extracti128_si256::<1>(v),
    ))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum4_i32(s: __m128i) -> i32 {
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b1011_0001>(s)))
}

/// The sums of each of four vectors' lanes, in one vector.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum4x_i32(v: [__m256i; 4]) -> __m128i {
    let s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
}

/// [`hsum4x_i32`] of up to four vectors.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum_each<const T: usize>(v: [__m256i; T]) -> __m128i {
    let z = _mm256_setzero_si256();
    hsum4x_i32(core::array::from_fn(|t| if t < T { v[t] } else { z }))
}

/// Up to four inputs' values of block `b`, one per lane (zeros past `T`).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn per_input<const T: usize>(d: [&[f32]; T], b: usize) -> __m128 {
    let mut lanes = [0.0f32; 4];
    for (l, d) in lanes.iter_mut().zip(d) {
        *l = d[b];
    }
    // SAFETY: `lanes` holds the four floats read.
    unsafe { _mm_loadu_ps(lanes.as_ptr()) }
}

/// Each row's first `T` lanes: the sums [`per_input`] laid out.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn first_lanes<const R: usize, const T: usize>(v: [__m128; R]) -> [[f32; T]; R] {
    v.map(|v| {
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` has room for the four floats written.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), v) };
        core::array::from_fn(|t| lanes[t])
    })
}

/// The little-endian f16 at `p` (any alignment) as f32.
///
/// # Safety
///
/// The [contract](self#safety); `p` points at two readable bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller's: `p` points at two readable bytes.
    let bits = i32::from(unsafe { p.cast::<u16>().read_unaligned() });
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

/// `out[t][r] = row r · input t` for every row of `w` by `kernel`: `R`
/// rows per pass (each input block loaded once for them all, their
/// dependency chains interleaved), then one at a time, each told to
/// prefetch two passes ahead, or (`prefetch` false) not at all.
///
/// The loops are compiled twice, for each value of `prefetch`: without
/// prefetching the distance is a constant zero, which frees the kernel of
/// its test and of the register that holds it (a four-input tile has none
/// to spare: with one copy, AVX2's Q8_0 prefill ran 8% slower).
///
/// # Safety
///
/// The [contract](self#safety); the kernel's inputs fit `w`, which holds
/// `out[t].len()` rows.
#[inline(always)]
unsafe fn by_rows<const R: usize, const T: usize>(
    out: &mut [&mut [f32]],
    w: &[u8],
    prefetch: bool,
    kernel: &impl Rows<T>,
) {
    // SAFETY: the caller's contract.
    unsafe {
        match prefetch {
            true => by_rows_with::<R, T>(out, w, true, kernel),
            false => by_rows_with::<R, T>(out, w, false, kernel),
        }
    }
}

/// [`by_rows`], one copy.
///
/// # Safety
///
/// [`by_rows`]'s.
#[inline(always)]
unsafe fn by_rows_with<const R: usize, const T: usize>(
    out: &mut [&mut [f32]],
    w: &[u8],
    prefetch: bool,
    kernel: &impl Rows<T>,
) {
    let rows = out[0].len();
    let row_bytes = w.len() / rows.max(1);
    // SAFETY: `r < rows`, so row `r` starts inside `w`.
    let row = |r: usize| unsafe { w.as_ptr().add(r * row_bytes) };
    let ahead = |passes: usize| usize::from(prefetch) * passes * row_bytes;
    let whole = rows / R * R;
    // SAFETY: the caller's contract, and whole rows of `w`.
    unsafe {
        for r in (0..whole).step_by(R) {
            let v = kernel.rows::<R>(core::array::from_fn(|k| row(r + k)), ahead(2 * R));
            crate::kernels::store_rows(out, r, &v);
        }
        for r in whole..rows {
            crate::kernels::store_rows(out, r, &kernel.rows::<1>([row(r)], ahead(2)));
        }
    }
}

/// Asks for the cache line `ahead` bytes past `p`: the same spot some
/// rows further. Each matrix is read once per token from DRAM, and
/// these kernels do enough arithmetic per byte to fill the
/// out-of-order window before enough loads are in flight. (A line
/// past the matrix is never touched: prefetching does not fault.)
/// `ahead` 0 asks for nothing: a matmul's later tiles read rows the
/// first one brought into L2, and prefetching them into L1 again
/// only crowds out the inputs.
#[inline(always)]
fn prefetch(p: *const u8, ahead: usize) {
    if ahead != 0 {
        // SAFETY: a prefetch (SSE, which every x86_64 CPU has) reads
        // nothing into the program and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast()) };
    }
}
