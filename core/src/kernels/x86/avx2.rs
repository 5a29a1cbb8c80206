//! The AVX2 level (with FMA and F16C): its f32 kernels, eight lanes with
//! masked loads and stores for tails; its [`Level`] operations; and the
//! public functions of the kernels it shares with AVX-512.

use core::arch::x86_64::*;

use super::{hmax8, hsum8, Level, ROWS, STREAMS};
use crate::kernels::vector::{self, vector_kernels, vector_ops, Vector};
use crate::kernels::{scalar, store_rows, Input};

/// The AVX2 level.
pub struct Avx2;

impl Level for Avx2 {
    /// Q8_0 weights are signed: the sign trick keeps `pmaddubsw` exact.
    const Q8_0_BIAS: i8 = 0;

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
}

super::shared_kernels!("avx2,fma,f16c", Avx2, 4);

impl Vector for Avx2 {
    type V = __m256;
    /// Lanes that `maskload` and `maskstore` touch: those whose sign bit
    /// is set.
    type Mask = __m256i;
    const LANES: usize = 8;
    const PAIRS: usize = 4;

    vector_ops! { "avx2,fma";
        add(a, b) = _mm256_add_ps(a, b); sub(a, b) = _mm256_sub_ps(a, b);
        mul(a, b) = _mm256_mul_ps(a, b); div(a, b) = _mm256_div_ps(a, b);
        min(a, b) = _mm256_min_ps(a, b); max(a, b) = _mm256_max_ps(a, b);
        fmadd(a, b, c) = _mm256_fmadd_ps(a, b, c); fnmadd(a, b, c) = _mm256_fnmadd_ps(a, b, c);
        round(v) = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        hsum(v) -> f32 = hsum8(v); hmax(v) -> f32 = hmax8(v);
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn mask(n: usize) -> __m256i {
        lanes(n)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller's: eight readable floats.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller's: eight writable floats.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load_part(p: *const f32, m: __m256i) -> __m256 {
        // SAFETY: the caller's: the lanes of `m` are readable.
        unsafe { _mm256_maskload_ps(p, m) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store_part(p: *mut f32, m: __m256i, v: __m256) {
        // SAFETY: the caller's: the lanes of `m` are writable.
        unsafe { _mm256_maskstore_ps(p, m, v) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }

    /// `2^n` built in the exponent bits.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn scale2(p: __m256, n: __m256) -> __m256 {
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn max_part(acc: __m256, v: __m256, m: __m256i) -> __m256 {
        _mm256_blendv_ps(acc, _mm256_max_ps(acc, v), _mm256_castsi256_ps(m))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn add_part(acc: __m256, v: __m256, m: __m256i) -> __m256 {
        _mm256_add_ps(acc, _mm256_and_ps(v, _mm256_castsi256_ps(m)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp(x: __m256) -> __m256 {
        // SAFETY: this level's features, which the caller guarantees.
        unsafe { vector::exp::<Self>(x) }
    }

    /// Four pairs: each cosine and sine spread to its pair's lanes; even
    /// lanes `v0·c − (v1·s)`, odd lanes `v0·s + (v1·c)`, each one fused
    /// multiply-add as the twin's.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rope(p: *mut f32, cos: *const f32, sin: *const f32) {
        let dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        // SAFETY: the caller's: four cosines and sines, eight values.
        unsafe {
            let c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cos)), dup);
            let s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sin)), dup);
            let x = _mm256_loadu_ps(p);
            let swapped = _mm256_permute_ps::<0b1011_0001>(x);
            let first = _mm256_fmsub_ps(x, c, _mm256_mul_ps(swapped, s));
            let second = _mm256_fmadd_ps(swapped, s, _mm256_mul_ps(x, c));
            _mm256_storeu_ps(p, _mm256_blend_ps::<0b1010_1010>(first, second));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn ggml_exp(x: __m256) -> __m256 {
        let c = scalar::GGML_EXP.map(f32::from_bits);
        let set = _mm256_set1_ps;
        let shift = set(12_582_912.0);
        let z = _mm256_fmadd_ps(x, set(c[0]), shift);
        let n = _mm256_sub_ps(z, shift);
        let b = _mm256_fnmadd_ps(n, set(c[2]), _mm256_fnmadd_ps(n, set(c[1]), x));
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(set(1.0))));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(set(c[3]), b, set(c[4])),
                u,
                _mm256_fmadd_ps(set(c[5]), b, set(c[6])),
            ),
            u,
            _mm256_mul_ps(set(c[7]), b),
        );
        let near = _mm256_fmadd_ps(k, j, k);
        let abs = _mm256_andnot_ps(set(-0.0), n);
        let far = _mm256_cmp_ps::<_CMP_GT_OQ>(abs, set(126.0));
        if _mm256_movemask_ps(far) == 0 {
            return near;
        }
        let down = _mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps());
        let g = _mm256_and_si256(
            _mm256_castps_si256(down),
            _mm256_set1_epi32(0x8200_0000_u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let split = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
        let beyond = _mm256_cmp_ps::<_CMP_GT_OQ>(abs, set(192.0));
        _mm256_blendv_ps(
            _mm256_blendv_ps(near, split, far),
            _mm256_mul_ps(s1, s1),
            beyond,
        )
    }
}

vector_kernels!("avx2,fma", Avx2, STREAMS);

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

/// The attention scores' dot products (the entry point divides them).
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn attention_dots(scores: &mut [f32], q: &[f32], keys: &[f32], stride: usize) {
    // SAFETY: `keys` holds `scores.len()` keys of `q.len()` floats,
    // `stride` apart (contract 2).
    unsafe { dots::<ROWS, 1>(&mut [scores], keys.as_ptr(), stride, [q]) };
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
