//! x86_64 twins of the scalar kernels: AVX2+FMA (8 lanes) and AVX-512F
//! (16 lanes, masked tails).
//!
//! Decode is bound by how fast one core streams weights from DRAM, and one
//! core reads faster from several streams at once than from one: matvec
//! reads `ROWS` rows in parallel (measured here: 8 streams ≈ 1.3× one).
//!
//! # Safety (every function here)
//!
//! The caller guarantees that the CPU has the module's features (an `Isa`
//! value of that level is the proof) and that slice lengths are what the
//! scalar twin's entry point in `kernels` checked: `w.len() == rows · cols ·
//! 4` for a matrix, equal lengths for vectors, `v.len()` a multiple of
//! `2 · cos.len()` for RoPE. Weight bytes may have any alignment: only
//! unaligned loads touch them.

/// Rows per matvec pass: eight concurrent read streams.
const ROWS: usize = 8;
/// The bandwidth probe (`sum`) reads as many streams as matvec does.
const STREAMS: usize = ROWS;

pub mod avx2 {
    use super::{ROWS, STREAMS};
    use crate::kernels::expf::*;
    use core::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
            _mm256_set1_ps(EXP_HI),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
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

    /// `R` dot products with `x` (length `n`) of rows `stride` apart at `w`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<const R: usize>(
        w: *const f32,
        stride: usize,
        n: usize,
        x: *const f32,
    ) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut i = 0;
        while i + 8 <= n {
            let xv = _mm256_loadu_ps(x.add(i));
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(k * stride + i)), xv, *a);
            }
            i += 8;
        }
        let mut out = [0.0; R];
        for (k, o) in out.iter_mut().enumerate() {
            let mut s = hsum(acc[k]);
            for j in i..n {
                s += w.add(k * stride + j).read_unaligned() * *x.add(j);
            }
            *o = s;
        }
        out
    }

    /// `out[r] = row_r · x` for rows `stride` apart at `w`, `ROWS` at a time.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dots(out: &mut [f32], w: *const f32, stride: usize, x: &[f32]) {
        let (n, xp) = (x.len(), x.as_ptr());
        let blocks = out.len() / ROWS;
        for (b, o) in out.chunks_exact_mut(ROWS).enumerate() {
            o.copy_from_slice(&rows::<ROWS>(w.add(b * ROWS * stride), stride, n, xp));
        }
        for (r, o) in out.iter_mut().enumerate().skip(blocks * ROWS) {
            *o = rows::<1>(w.add(r * stride), stride, n, xp)[0];
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
        dots(out, w.as_ptr().cast::<f32>(), x.len(), x);
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attention_scores(
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        stride: usize,
        scale: f32,
    ) {
        dots(scores, keys.as_ptr(), stride, q);
        for s in scores {
            *s /= scale;
        }
    }

    /// Accumulates up to `V` vectors of the output in registers while
    /// walking the positions in order.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
        const V: usize = 4;
        let (n, vp) = (out.len(), values.as_ptr());
        for i in (0..n).step_by(8 * V) {
            let active = (n - i).div_ceil(8).min(V);
            let mut masks = [lanes(8); V];
            masks[active - 1] = lanes((n - i - 8 * (active - 1)).min(8));
            let mut acc = [_mm256_setzero_ps(); V];
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

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
        let ss = rows::<1>(x.as_ptr(), 0, x.len(), x.as_ptr())[0];
        let scale = 1.0 / libm::sqrtf(ss / x.len() as f32 + eps);
        let (w, sv) = (weight.as_ptr().cast::<f32>(), _mm256_set1_ps(scale));
        let n = x.len();
        let mut i = 0;
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

    /// A mask of lanes `0..n` (n ≤ 8) for `maskload`/`maskstore`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn lanes(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// Applies `f` to 8 lanes at a time; the last, partial vector loads and
    /// stores only the lanes in its mask (masked lanes never fault).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn map(x: &mut [f32], mut f: impl FnMut(__m256, usize, __m256i) -> __m256) {
        let (p, n) = (x.as_mut_ptr(), x.len());
        let all = lanes(8);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), f(_mm256_loadu_ps(p.add(i)), i, all));
            i += 8;
        }
        if i < n {
            let m = lanes(n - i);
            _mm256_maskstore_ps(p.add(i), m, f(_mm256_maskload_ps(p.add(i), m), i, m));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(x: &mut [f32]) {
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        map(x, |v, _, m| {
            mv = _mm256_blendv_ps(mv, _mm256_max_ps(mv, v), _mm256_castsi256_ps(m));
            v
        });
        let max = _mm256_set1_ps(hmax(mv));
        let mut sv = _mm256_setzero_ps();
        map(x, |v, _, m| {
            let e = exp(_mm256_sub_ps(v, max));
            sv = _mm256_add_ps(sv, _mm256_and_ps(e, _mm256_castsi256_ps(m)));
            e
        });
        let s = _mm256_set1_ps(hsum(sv));
        map(x, |v, _, _| _mm256_div_ps(v, s));
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(h: &mut [f32], g: &[f32]) {
        let (one, gp) = (_mm256_set1_ps(1.0), g.as_ptr());
        map(h, |v, i, m| {
            let sig = _mm256_div_ps(
                one,
                _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), v))),
            );
            _mm256_mul_ps(_mm256_mul_ps(v, sig), _mm256_maskload_ps(gp.add(i), m))
        });
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        for head in v.chunks_exact_mut(2 * half) {
            let mut i = 0;
            while i + 4 <= half {
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
                i += 4;
            }
            crate::kernels::scalar::rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add(y: &mut [f32], x: &[f32]) {
        let xp = x.as_ptr();
        map(y, |v, i, m| {
            _mm256_add_ps(v, _mm256_maskload_ps(xp.add(i), m))
        });
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum(data: &[u8]) -> f32 {
        let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
        let part = n / STREAMS / 8 * 8;
        let mut acc = [_mm256_setzero_ps(); STREAMS];
        for i in (0..part).step_by(8) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(k * part + i)));
            }
        }
        let mut s = acc.iter().map(|&a| hsum(a)).sum::<f32>();
        for j in STREAMS * part..n {
            s += p.add(j).read_unaligned();
        }
        s
    }
}

pub mod avx512 {
    use super::{ROWS, STREAMS};
    use crate::kernels::expf::*;
    use core::arch::x86_64::*;

    /// Lanes `0..n` of 16 (n ≤ 16).
    #[inline]
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_LO)),
            _mm512_set1_ps(EXP_HI),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let p = _mm512_fmadd_ps(
            p,
            _mm512_mul_ps(r, r),
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(p, n)
    }

    /// `R` dot products with `x` (length `n`) of rows `stride` apart at `w`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows<const R: usize>(
        w: *const f32,
        stride: usize,
        n: usize,
        x: *const f32,
    ) -> [f32; R] {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut i = 0;
        while i + 16 <= n {
            let xv = _mm512_loadu_ps(x.add(i));
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(k * stride + i)), xv, *a);
            }
            i += 16;
        }
        if i < n {
            let m = mask(n - i);
            let xv = _mm512_maskz_loadu_ps(m, x.add(i));
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w.add(k * stride + i)), xv, *a);
            }
        }
        let mut out = [0.0; R];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
        out
    }

    /// `out[r] = row_r · x` for rows `stride` apart at `w`, `ROWS` at a time.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dots(out: &mut [f32], w: *const f32, stride: usize, x: &[f32]) {
        let (n, xp) = (x.len(), x.as_ptr());
        let blocks = out.len() / ROWS;
        for (b, o) in out.chunks_exact_mut(ROWS).enumerate() {
            o.copy_from_slice(&rows::<ROWS>(w.add(b * ROWS * stride), stride, n, xp));
        }
        for (r, o) in out.iter_mut().enumerate().skip(blocks * ROWS) {
            *o = rows::<1>(w.add(r * stride), stride, n, xp)[0];
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
        dots(out, w.as_ptr().cast::<f32>(), x.len(), x);
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn attention_scores(
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        stride: usize,
        scale: f32,
    ) {
        dots(scores, keys.as_ptr(), stride, q);
        for s in scores {
            *s /= scale;
        }
    }

    /// Accumulates up to `V` vectors of the output in registers while
    /// walking the positions in order.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
        const V: usize = 4;
        let (n, vp) = (out.len(), values.as_ptr());
        for i in (0..n).step_by(16 * V) {
            let active = (n - i).div_ceil(16).min(V);
            let mut masks = [mask(16); V];
            masks[active - 1] = mask((n - i - 16 * (active - 1)).min(16));
            let mut acc = [_mm512_setzero_ps(); V];
            for (t, &a) in weights.iter().enumerate() {
                let (a, v) = (_mm512_set1_ps(a), vp.add(t * stride + i));
                for j in 0..active {
                    acc[j] =
                        _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(masks[j], v.add(16 * j)), acc[j]);
                }
            }
            for j in 0..active {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i + 16 * j), masks[j], acc[j]);
            }
        }
    }

    /// Applies `f` to 16 lanes at a time; the last, partial vector loads
    /// and stores only the lanes in its mask.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn map(x: &mut [f32], mut f: impl FnMut(__m512, usize, __mmask16) -> __m512) {
        let (p, n) = (x.as_mut_ptr(), x.len());
        let mut i = 0;
        while i < n {
            let m = mask((n - i).min(16));
            _mm512_mask_storeu_ps(p.add(i), m, f(_mm512_maskz_loadu_ps(m, p.add(i)), i, m));
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
        let ss = rows::<1>(x.as_ptr(), 0, x.len(), x.as_ptr())[0];
        let scale = _mm512_set1_ps(1.0 / libm::sqrtf(ss / x.len() as f32 + eps));
        out.copy_from_slice(x);
        let w = weight.as_ptr().cast::<f32>();
        map(out, |v, i, m| {
            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w.add(i)), _mm512_mul_ps(scale, v))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax(x: &mut [f32]) {
        let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
        map(x, |v, _, m| {
            mv = _mm512_mask_max_ps(mv, m, mv, v);
            v
        });
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
        let mut sv = _mm512_setzero_ps();
        map(x, |v, _, m| {
            let e = exp(_mm512_sub_ps(v, max));
            sv = _mm512_mask_add_ps(sv, m, sv, e);
            e
        });
        let s = _mm512_set1_ps(_mm512_reduce_add_ps(sv));
        map(x, |v, _, _| _mm512_div_ps(v, s));
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn swiglu(h: &mut [f32], g: &[f32]) {
        let one = _mm512_set1_ps(1.0);
        let gp = g.as_ptr();
        map(h, |v, i, m| {
            let sig = _mm512_div_ps(
                one,
                _mm512_add_ps(one, exp(_mm512_sub_ps(_mm512_setzero_ps(), v))),
            );
            _mm512_mul_ps(_mm512_mul_ps(v, sig), _mm512_maskz_loadu_ps(m, gp.add(i)))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        for head in v.chunks_exact_mut(2 * half) {
            let mut i = 0;
            while i + 8 <= half {
                let c = _mm512_permutexvar_ps(
                    dup,
                    _mm512_castps256_ps512(_mm256_loadu_ps(cos.as_ptr().add(i))),
                );
                let s = _mm512_permutexvar_ps(
                    dup,
                    _mm512_castps256_ps512(_mm256_loadu_ps(sin.as_ptr().add(i))),
                );
                let p = head.as_mut_ptr().add(2 * i);
                let x = _mm512_loadu_ps(p);
                let swapped = _mm512_permute_ps::<0b1011_0001>(x);
                _mm512_storeu_ps(p, _mm512_fmaddsub_ps(x, c, _mm512_mul_ps(swapped, s)));
                i += 8;
            }
            crate::kernels::scalar::rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn add(y: &mut [f32], x: &[f32]) {
        let xp = x.as_ptr();
        map(y, |v, i, m| {
            _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, xp.add(i)))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum(data: &[u8]) -> f32 {
        let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
        let part = n / STREAMS / 16 * 16;
        let mut acc = [_mm512_setzero_ps(); STREAMS];
        for i in (0..part).step_by(16) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_add_ps(*a, _mm512_loadu_ps(p.add(k * part + i)));
            }
        }
        let mut i = STREAMS * part;
        while i < n {
            let m = mask((n - i).min(16));
            acc[0] = _mm512_add_ps(acc[0], _mm512_maskz_loadu_ps(m, p.add(i)));
            i += 16;
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }
}
