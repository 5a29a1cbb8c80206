//! The AVX2 level (with FMA and F16C): its f32 kernels, eight lanes with
//! masked loads and stores for tails; its [`Level`] operations; and the
//! public functions of the kernels it shares with AVX-512.

use core::arch::x86_64::*;

use super::{hmax8, hsum8, Level, ROWS, STREAMS};
use crate::kernels::expf::*;
use crate::kernels::{scalar, store_rows, Input};

/// The AVX2 level.
pub struct Avx2;

impl Level for Avx2 {
    /// Q8_0 weights are signed: the sign trick keeps `pmaddubsw` exact.
    const Q8_0_BIAS: i8 = 0;

    /// Two registers.
    type Acc8 = [__m256d; 2];

    /// `pmaddubsw` saturates pairs at 2^15: callers keep `a` at most 128
    /// (|−128| as unsigned) and inputs are at most 127 in magnitude.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn lanes_u_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)),
        )
    }

    /// As they are.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased(w: __m256i) -> __m256i {
        w
    }

    /// The sign trick: |w| · (x with w's signs).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased_lanes(w: __m256i, x: __m256i, _corr: __m256i) -> __m256i {
        // SAFETY: this level's features, which the caller guarantees.
        unsafe { Self::lanes_u(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_zero() -> Self::Acc8 {
        [_mm256_setzero_pd(); 2]
    }

    /// Lanes 0–3 plus the first four products, lanes 4–7 the last four.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_add(a: Self::Acc8, p: __m256) -> Self::Acc8 {
        [
            _mm256_add_pd(a[0], _mm256_cvtps_pd(_mm256_castps256_ps128(p))),
            _mm256_add_pd(a[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(p))),
        ]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_half(a: Self::Acc8) -> __m256d {
        _mm256_add_pd(a[0], a[1])
    }
}

super::shared_kernels!("avx2,fma,f16c", Avx2, 4);

#[target_feature(enable = "avx2,fma")]
#[inline]
fn exp(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
        _mm256_set1_ps(EXP_HI),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(e))
}

/// `R` dot products with each of `T` inputs `x` (length `n`) of rows
/// `stride` apart at `w`, each weight vector loaded once for all `T`.
///
/// # Safety
///
/// The [contract](super#safety); `w` starts `R` rows of `n` floats,
/// `stride` apart, and each `x[t]` holds `n` floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows<const R: usize, const T: usize>(
    w: *const f32,
    stride: usize,
    n: usize,
    x: [*const f32; T],
) -> [[f32; T]; R] {
    // SAFETY: every load reads values `i..i + 8` with `i + 8 ≤ n`, or value
    // `j < n`, of a row or an input, which the caller guarantees exist.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut i = 0;
        while i + 8 <= n {
            let xv = x.map(|x| _mm256_loadu_ps(x.add(i)));
            for (k, a) in acc.iter_mut().enumerate() {
                let wv = _mm256_loadu_ps(w.add(k * stride + i));
                for t in 0..T {
                    a[t] = _mm256_fmadd_ps(wv, xv[t], a[t]);
                }
            }
            i += 8;
        }
        let mut out = [[0.0; T]; R];
        for (k, o) in out.iter_mut().enumerate() {
            for t in 0..T {
                let mut s = hsum8(acc[k][t]);
                for j in i..n {
                    s += w.add(k * stride + j).read_unaligned() * *x[t].add(j);
                }
                o[t] = s;
            }
        }
        out
    }
}

/// `out[t][r] = row_r · x[t]` for rows `stride` apart at `w`, `R` at a
/// time.
///
/// # Safety
///
/// The [contract](super#safety); `w` starts `out[0].len()` rows of
/// `x[0].len()` floats, `stride` apart.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dots<const R: usize, const T: usize>(
    out: &mut [&mut [f32]],
    w: *const f32,
    stride: usize,
    x: [&[f32]; T],
) {
    let (n, xp) = (x[0].len(), x.map(|x| x.as_ptr()));
    let count = out[0].len();
    let whole = count / R * R;
    // SAFETY: rows `r..r + R` (or row `r`) are below `count`, which the
    // caller guarantees `w` holds.
    unsafe {
        for r in (0..whole).step_by(R) {
            store_rows(out, r, &rows::<R, T>(w.add(r * stride), stride, n, xp));
        }
        for r in whole..count {
            store_rows(out, r, &rows::<1, T>(w.add(r * stride), stride, n, xp));
        }
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
    // SAFETY: `w` holds `out.len()` rows of `x.len()` floats (contract 2).
    unsafe { dots::<ROWS, 1>(&mut [out], w.as_ptr().cast::<f32>(), x.len(), [x]) };
}

/// [`matvec_f32`] for several inputs, bitwise: two rows by up to four
/// inputs per pass, eight accumulators as matvec has.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matmul_f32(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    let w = w.as_ptr().cast::<f32>();
    each_tile!(out, x, T, _ => {
        let x = x.map(Input::f32s);
        // SAFETY: `w` holds the outputs' rows of `x[0].len()` floats.
        unsafe { dots::<2, T>(out, w, x[0].len(), x) };
    });
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn attention_scores(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scale: f32,
) {
    // SAFETY: `keys` holds `scores.len()` keys of `q.len()` floats,
    // `stride` apart (contract 2).
    unsafe { dots::<ROWS, 1>(&mut [&mut *scores], keys.as_ptr(), stride, [q]) };
    for s in scores {
        *s /= scale;
    }
}

/// Accumulates up to `V` vectors of the output in registers while
/// walking the positions in order.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
    const V: usize = 4;
    let (n, vp) = (out.len(), values.as_ptr());
    for i in (0..n).step_by(8 * V) {
        let active = (n - i).div_ceil(8).min(V);
        let mut masks = [lanes(8); V];
        masks[active - 1] = lanes((n - i - 8 * (active - 1)).min(8));
        let mut acc = [_mm256_setzero_ps(); V];
        // SAFETY: the masked loads and stores touch only values (and
        // outputs) below `n` of each position, which `values` holds
        // (contract 2); masked-off lanes are not accessed.
        unsafe {
            for (t, &a) in weights.iter().enumerate() {
                let (a, v) = (_mm256_set1_ps(a), vp.add(t * stride + i));
                for j in 0..active {
                    acc[j] = _mm256_fmadd_ps(a, _mm256_maskload_ps(v.add(8 * j), masks[j]), acc[j]);
                }
            }
            for j in 0..active {
                _mm256_maskstore_ps(out.as_mut_ptr().add(i + 8 * j), masks[j], acc[j]);
            }
        }
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
    let scale = scalar::rms_scale(x, eps);
    let (w, sv) = (weight.as_ptr().cast::<f32>(), _mm256_set1_ps(scale));
    let n = x.len();
    let mut i = 0;
    // SAFETY: `out`, `x` and the weight's floats are `n` long (contract
    // 2), and each step reads values `i..i + 8` with `i + 8 ≤ n`, or `j < n`.
    unsafe {
        while i + 8 <= n {
            let v = _mm256_mul_ps(sv, _mm256_loadu_ps(x.as_ptr().add(i)));
            _mm256_storeu_ps(
                out.as_mut_ptr().add(i),
                _mm256_mul_ps(_mm256_loadu_ps(w.add(i)), v),
            );
            i += 8;
        }
        for j in i..n {
            out[j] = w.add(j).read_unaligned() * (scale * x[j]);
        }
    }
}

/// A mask of lanes `0..n` (n ≤ 8) for `maskload`/`maskstore`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn lanes(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Applies `f` to 8 lanes at a time; the last, partial vector loads and
/// stores only the lanes in its mask (masked lanes never fault).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn map(x: &mut [f32], mut f: impl FnMut(__m256, usize, __m256i) -> __m256) {
    let (p, n) = (x.as_mut_ptr(), x.len());
    let all = lanes(8);
    let mut i = 0;
    // SAFETY: full vectors are values `i..i + 8` with `i + 8 ≤ n`; the
    // last one's mask covers only values below `n`.
    unsafe {
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), f(_mm256_loadu_ps(p.add(i)), i, all));
            i += 8;
        }
        if i < n {
            let m = lanes(n - i);
            _mm256_maskstore_ps(p.add(i), m, f(_mm256_maskload_ps(p.add(i), m), i, m));
        }
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax(x: &mut [f32]) {
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    map(x, |v, _, m| {
        mv = _mm256_blendv_ps(mv, _mm256_max_ps(mv, v), _mm256_castsi256_ps(m));
        v
    });
    let max = _mm256_set1_ps(hmax8(mv));
    let mut sv = _mm256_setzero_ps();
    map(x, |v, _, m| {
        let e = exp(_mm256_sub_ps(v, max));
        sv = _mm256_add_ps(sv, _mm256_and_ps(e, _mm256_castsi256_ps(m)));
        e
    });
    let s = _mm256_set1_ps(hsum8(sv));
    map(x, |v, _, _| _mm256_div_ps(v, s));
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn swiglu(h: &mut [f32], g: &[f32]) {
    let (one, gp) = (_mm256_set1_ps(1.0), g.as_ptr());
    map(h, |v, i, m| {
        let sig = _mm256_div_ps(
            one,
            _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), v))),
        );
        // SAFETY: `g` is as long as `h` (contract 2), and `m` masks
        // off the lanes past it.
        let gv = unsafe { _mm256_maskload_ps(gp.add(i), m) };
        _mm256_mul_ps(_mm256_mul_ps(v, sig), gv)
    });
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    for head in v.chunks_exact_mut(2 * half) {
        let mut i = 0;
        while i + 4 <= half {
            // SAFETY: `i + 4 ≤ half`, the length of `cos` and `sin` (contract
            // 2), and the head holds `2 · half` values.
            unsafe {
                let c = _mm256_permutevar8x32_ps(
                    _mm256_castps128_ps256(_mm_loadu_ps(cos.as_ptr().add(i))),
                    dup,
                );
                let s = _mm256_permutevar8x32_ps(
                    _mm256_castps128_ps256(_mm_loadu_ps(sin.as_ptr().add(i))),
                    dup,
                );
                let p = head.as_mut_ptr().add(2 * i);
                let x = _mm256_loadu_ps(p);
                let swapped = _mm256_permute_ps::<0b1011_0001>(x);
                // even lanes: v0·c − v1·s; odd lanes: v1·c + v0·s
                _mm256_storeu_ps(p, _mm256_fmaddsub_ps(x, c, _mm256_mul_ps(swapped, s)));
            }
            i += 4;
        }
        scalar::rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn add(y: &mut [f32], x: &[f32]) {
    let xp = x.as_ptr();
    map(y, |v, i, m| {
        // SAFETY: `x` is as long as `y` (contract 2), and `m` masks off
        // the lanes past it.
        _mm256_add_ps(v, unsafe { _mm256_maskload_ps(xp.add(i), m) })
    });
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sum(data: &[u8]) -> f32 {
    let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
    let part = n / STREAMS / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); STREAMS];
    // SAFETY: stream `k` reads floats `k·part..(k + 1)·part`, the tail
    // those from `STREAMS·part` to `n`: all inside `data`.
    unsafe {
        for i in (0..part).step_by(8) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(k * part + i)));
            }
        }
        let mut s = acc.iter().map(|&a| hsum8(a)).sum::<f32>();
        for j in STREAMS * part..n {
            s += p.add(j).read_unaligned();
        }
        s
    }
}
