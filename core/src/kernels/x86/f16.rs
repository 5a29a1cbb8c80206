//! The half-precision kernels of both levels: f16 weights, and attention
//! over the f16 KV cache as llama.cpp computes it (the scalar twin's
//! `attention_f16`), bit for bit.

use core::arch::x86_64::*;

use super::{by_rows, f16_at, hsum8, prefetch, Rows, AHEAD};
use crate::kernels::vector::{mix_f16, Factors, MixF16};
use crate::kernels::{scalar, F16Attention, Input};

/// `x` rounded to the nearest f16 (ties to even), as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn round16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// Rows of f16 weights for `T` f32 inputs.
struct F16Rows<'x, const T: usize>([&'x [f32]; T]);

impl<const T: usize> Rows<T> for F16Rows<'_, T> {
    /// [`f16_rows`], in two copies: without prefetching (a constant zero
    /// distance, which leaves that loop free of the test), and with. The
    /// tile over four inputs otherwise keeps too many values for the
    /// registers and spills them in its loop.
    #[inline(always)]
    unsafe fn rows<const R: usize>(&self, rows: [*const u8; R], ahead: usize) -> [[f32; T]; R] {
        // SAFETY: the caller's contract is the same.
        unsafe {
            match ahead {
                0 => f16_rows(rows, 0, self.0),
                _ => f16_rows(rows, ahead, self.0),
            }
        }
    }
}

/// `R` rows of f16 weights dotted with `T` inputs, each weight vector
/// converted once for all of them.
///
/// # Safety
///
/// The [contract](super#safety); `rows` start whole rows that the inputs
/// fit.
#[inline(always)]
unsafe fn f16_rows<const R: usize, const T: usize>(
    rows: [*const u8; R],
    ahead: usize,
    x: [&[f32]; T],
) -> [[f32; T]; R] {
    let n = x[0].len();
    // SAFETY: the level's features (contract 1); a row holds `n` f16
    // values, and every load reads values `i..i + 8` with `i + 8 ≤ n`.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut xv = [_mm256_setzero_ps(); T];
        let mut i = 0;
        while i + 8 <= n {
            for t in 0..T {
                xv[t] = _mm256_loadu_ps(x[t].as_ptr().add(i));
            }
            for k in 0..R {
                prefetch(rows[k].add(2 * i), ahead);
                let wv = _mm256_cvtph_ps(_mm_loadu_si128(rows[k].add(2 * i).cast()));
                for t in 0..T {
                    acc[k][t] = _mm256_fmadd_ps(wv, xv[t], acc[k][t]);
                }
            }
            i += 8;
        }
        let mut out = [[0.0; T]; R];
        for k in 0..R {
            for t in 0..T {
                out[k][t] = hsum8(acc[k][t]);
                for (j, &xj) in x[t].iter().enumerate().skip(i) {
                    out[k][t] += f16_at(rows[k].add(2 * j)) * xj;
                }
            }
        }
        out
    }
}

/// f16 rows four at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matvec_f16(out: &mut [f32], w: &[u8], x: &[f32]) {
    // SAFETY: the caller's contract.
    unsafe { by_rows::<4, 1>(&mut [out], w, true, &F16Rows([x])) };
}

/// [`matvec_f16`] for several inputs, bitwise, each weight vector
/// converted once for a tile of them, `R` rows at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matmul_f16<const R: usize>(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    each_tile!(out, x, T, first => {
        // SAFETY: the caller's contract.
        unsafe { by_rows::<R, T>(out, w, first, &F16Rows(x.map(Input::f32s))) };
    });
}

/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn f32_to_f16(out: &mut [u16], x: &[f32]) {
    let n = x.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: the level's features (contract 1); `out` and `x` are
        // equally long (contract 2) and `i + 8 ≤ n`.
        unsafe {
            let h =
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), h);
        }
        i += 8;
    }
    scalar::f32_to_f16(&mut out[i..], &x[i..]);
}

/// The scalar twin's `dot_f16` of `q` with `R` keys at once, in its
/// order (llama.cpp's AVX2 one) on both levels: 32 values a step, each
/// of four accumulators of eight lanes taking one fused product; `q`
/// rounded once for all keys; the accumulators joined as the twin's
/// `join32` (the horizontal adds pair neighbouring lanes); the values
/// after the last whole step added in f64.
///
/// # Safety
///
/// The [contract](super#safety); each key holds `q.len()` values.
#[inline(always)]
unsafe fn dot_f16<const R: usize>(q: &[f32], keys: [*const u16; R]) -> [f32; R] {
    let n = q.len();
    let whole = n & !31;
    // SAFETY: the level's features (contract 1); the steps read values
    // below `whole ≤ n` of `q` and of each key, the tail values below `n`.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for i in (0..whole).step_by(32) {
            for j in 0..4 {
                let qv = round16(_mm256_loadu_ps(q.as_ptr().add(i + 8 * j)));
                for (a, k) in acc.iter_mut().zip(keys) {
                    let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.add(i + 8 * j).cast()));
                    a[j] = _mm256_fmadd_ps(kv, qv, a[j]);
                }
            }
        }
        // A loop, not `array::from_fn`: its closure would not be inlined
        // into this function's features, and each intrinsic would be a call.
        let mut out = [0.0f32; R];
        for (o, (a, k)) in out.iter_mut().zip(acc.iter().zip(keys)) {
            let v = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let h = _mm_hadd_ps(h, h);
            let mut sum = f64::from(_mm_cvtss_f32(_mm_hadd_ps(h, h)));
            for (j, &x) in q.iter().enumerate().skip(whole) {
                sum += f64::from(scalar::round16(x) * f16_at(k.add(j).cast()));
            }
            *o = sum as f32;
        }
        out
    }
}

/// The x86 f16 attention's vectors: eight values, converted with F16C.
struct F16x8;

impl MixF16 for F16x8 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn mix<const C: usize>(out: *mut f32, values: *const u16, f: &Factors<'_>) {
        let (stride, rescale, weight, inv) = (f.stride, f.rescale, f.weight, f.inv);
        // SAFETY: the level's features (contract 1); the loads read values
        // `8c..8c + 8` (c < C) of a position, the stores as many outputs, all
        // inside them as the caller guarantees.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); C];
            for (t, (&ms, &vs)) in rescale.iter().zip(weight).enumerate() {
                if ms != 1.0 {
                    for a in &mut acc {
                        *a = round16(_mm256_mul_ps(*a, _mm256_set1_ps(ms)));
                    }
                }
                let v = values.add(t * stride);
                for c in (0..C).step_by(4) {
                    prefetch(v.add(8 * c).cast(), 2 * AHEAD * stride);
                }
                for (c, a) in acc.iter_mut().enumerate() {
                    let vv = _mm256_cvtph_ps(_mm_loadu_si128(v.add(8 * c).cast()));
                    *a = round16(_mm256_fmadd_ps(vv, _mm256_set1_ps(vs), *a));
                }
            }
            for (c, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(8 * c), _mm256_mul_ps(*a, _mm256_set1_ps(inv)));
            }
        }
    }
}

/// `crate::libc::expf` of four values in f64 lanes, bit for bit: the same
/// reduction and polynomial with the same fused steps, the table entry
/// gathered; the ends (below ln 2^-150, above ln 2^128, NaN) blended in
/// as the scalar's early returns give them.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn expf4(x: __m128) -> __m128 {
    use crate::libc::{EXP2_TABLE, EXP_OVERFLOW, EXP_POLY, EXP_UNDERFLOW, INV_LN2_32, SHIFT};
    let set = _mm256_set1_pd;
    let xd = _mm256_cvtps_pd(x);
    let kd = _mm256_fmadd_pd(set(INV_LN2_32), xd, set(SHIFT));
    let ki = _mm256_castpd_si256(kd);
    let r = _mm256_fmsub_pd(set(INV_LN2_32), xd, _mm256_sub_pd(kd, set(SHIFT)));
    let at = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    // SAFETY: every index is below 32, the table's length.
    let t = unsafe { _mm256_i64gather_epi64::<8>(EXP2_TABLE.as_ptr().cast(), at) };
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    let z = _mm256_fmadd_pd(set(EXP_POLY[0]), r, set(EXP_POLY[1]));
    let y = _mm256_fmadd_pd(set(EXP_POLY[2]), r, set(1.0));
    let y = _mm256_fmadd_pd(z, _mm256_mul_pd(r, r), y);
    let e = _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
    let low = _mm_cmplt_ps(x, _mm_set1_ps(EXP_UNDERFLOW));
    let high = _mm_cmpgt_ps(x, _mm_set1_ps(EXP_OVERFLOW));
    let nan = _mm_cmpunord_ps(x, x);
    let e = _mm_andnot_ps(low, e);
    let e = _mm_blendv_ps(e, _mm_set1_ps(f32::INFINITY), high);
    _mm_blendv_ps(e, _mm_add_ps(x, x), nan)
}

/// The scalar twin's `online_softmax`, its exponentials four at a time:
/// the running maximum first decides, position by position, which factor
/// each one's exponential is (the rescale when the maximum grows, else the
/// weight); then the exponentials, which no longer depend on each other;
/// then the sum, in order, each step fused.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn online_softmax(scores: &mut [f32], weights: &mut [f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for (s, w) in scores.iter_mut().zip(weights.iter_mut()) {
        (*s, *w, max) = match *s > max {
            true => (0.0, max - *s, *s),
            false => (1.0, *s - max, max),
        };
    }
    let n = scores.len().min(weights.len());
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: the level's features (contract 1); `i + 4 ≤ n`, the
        // length of both slices.
        unsafe {
            let (s, w) = (scores.as_mut_ptr().add(i), weights.as_mut_ptr().add(i));
            let e = expf4(_mm_loadu_ps(w));
            let held = _mm_cmpeq_ps(_mm_loadu_ps(s), _mm_set1_ps(1.0));
            _mm_storeu_ps(s, _mm_blendv_ps(e, _mm_set1_ps(1.0), held));
            _mm_storeu_ps(w, _mm_blendv_ps(_mm_set1_ps(1.0), e, held));
        }
        i += 4;
    }
    for (s, w) in scores[i..n].iter_mut().zip(&mut weights[i..n]) {
        let e = crate::libc::expf(*w);
        (*s, *w) = match *s == 1.0 {
            true => (1.0, e),
            false => (e, 1.0),
        };
    }
    let mut sum = 0.0f32;
    for (&ms, &vs) in scores[..n].iter().zip(&weights[..n]) {
        // SAFETY: the level's features (contract 1).
        sum = unsafe {
            _mm_cvtss_f32(_mm_fmadd_ss(
                _mm_set_ss(sum),
                _mm_set_ss(ms),
                _mm_set_ss(vs),
            ))
        };
    }
    if sum == 0.0 {
        0.0
    } else {
        1.0 / sum
    }
}

/// The scalar twin in its three passes: the scores (independent dot
/// products, which the core overlaps), the softmax factors, then the
/// values ([`mix_f16`]), eight vectors of outputs at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn attention_f16(out: &mut [f32], a: F16Attention<'_>, scratch: &mut [f32]) {
    let (positions, stride) = (a.positions, a.stride);
    let (rescale, weight) = scratch[..2 * positions].split_at_mut(positions);
    let n = out.len();
    // SAFETY: `t < positions`, whose keys the cache holds (contract 2).
    let key = |t: usize| unsafe {
        let k = a.keys.as_ptr().add(t * stride);
        for line in (0..n).step_by(32) {
            prefetch(k.add(line).cast(), 2 * AHEAD * stride);
        }
        k
    };
    for (f, s) in rescale.chunks_exact_mut(4).enumerate() {
        // SAFETY: the caller's contract; the four keys exist.
        let dots = unsafe { dot_f16::<4>(a.q, core::array::from_fn(|j| key(4 * f + j))) };
        for (s, d) in s.iter_mut().zip(dots) {
            *s = d * a.scale;
        }
    }
    let fours = positions / 4;
    for (t, s) in rescale.iter_mut().enumerate().skip(4 * fours) {
        // SAFETY: the caller's contract; key `t` exists.
        let [d] = unsafe { dot_f16::<1>(a.q, [key(t)]) };
        *s = d * a.scale;
    }
    // SAFETY: the caller's contract.
    let inv = unsafe { online_softmax(rescale, weight) };
    // SAFETY: the caller's contract.
    unsafe { mix_f16::<F16x8, 8>(out, a.values, stride, (rescale, weight), inv) };
}
