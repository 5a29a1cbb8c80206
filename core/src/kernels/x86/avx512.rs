//! The AVX-512 level (F, BW, VL and VNNI, with AVX2, FMA and F16C): its
//! f32 kernels, sixteen lanes with masked tails; its [`Level`] operations,
//! `vpdpbusd` for every int8 dot product; and the public functions of the
//! kernels it shares with AVX2.

use core::arch::x86_64::*;

use super::blocks::{add_mins, blocks32_rows, with_mins, Format};
use super::{f16_at, hsum8, prefetch, Level, ROWS, STREAMS};
use crate::kernels::vector::{self, vector_kernels, vector_ops, Vector};
use crate::kernels::{scalar, Input};

mod tile;

pub use tile::matmul_f32;

/// The AVX-512 level.
pub struct Avx512;

impl Level for Avx512 {
    /// Q8_0 weights as unsigned `w + 128` (flipping the sign bit), the
    /// offset taken back out through `corr`: one `vpdpbusd` per block.
    const Q8_0_BIAS: i8 = i8::MIN;

    /// One `vpdpbusd`, exact for any bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn lanes_u_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, a, b)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased(w: __m256i) -> __m256i {
        _mm256_xor_si256(w, _mm256_set1_epi8(i8::MIN))
    }

    /// Every block format's lanes on this level: one `vpdpbusd` of the
    /// biased weights onto `corr`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased_lanes(w: __m256i, x: __m256i, corr: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(corr, w, x)
    }

    /// [`blocks32_rows`] with the inputs in pairs, one per half of a
    /// 512-bit vector, which halves the instructions per input. Each half
    /// does exactly the 256-bit arithmetic (the lanes are `vpdpbusd` for
    /// every format here, so `F::lanes` is only needed for a single input,
    /// which goes unpaired), so the results are bitwise the same; an odd
    /// last input is paired with itself.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn blocks32_rows<F: Format, const R: usize, const T: usize>(
        rows: [*const u8; R],
        ahead: usize,
        x: [Input<'_>; T],
    ) -> [[f32; T]; R] {
        if T == 1 {
            // SAFETY: this method's contract is the same.
            return unsafe { blocks32_rows::<Self, F, R, T>(rows, ahead, x) };
        }
        let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
        let sums = x.map(Input::block_sums);
        let pair = |p: usize| (2 * p, (2 * p + 1).min(T - 1));
        // At most two pairs: T ≤ 4.
        let pairs = T.div_ceil(2).min(2);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let mut mins = [[0.0f32; T]; R];
        for b in 0..d[0].len() {
            let mut xq = [_mm512_setzero_si512(); 2];
            let mut corr = [_mm512_setzero_si512(); 2];
            let mut xd = [_mm512_setzero_ps(); 2];
            let xds = d.map(|d| d[b]);
            for p in 0..pairs {
                let (i, j) = pair(p);
                // SAFETY: each input holds 32 values per block (contract 2).
                let load = |t: usize| unsafe { _mm256_loadu_si256(qs[t].add(32 * b).cast()) };
                xq[p] = join(load(i), load(j));
                let ones = _mm512_set1_epi8(F::bias::<Self>());
                corr[p] = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, xq[p]),
                );
                let scale = |t: usize| _mm256_castps_si256(_mm256_set1_ps(xds[t]));
                xd[p] = _mm512_castsi512_ps(join(scale(i), scale(j)));
            }
            for ((a, m), row) in acc.iter_mut().zip(&mut mins).zip(rows) {
                // SAFETY: block `b` of a row is inside it, and of every
                // input (contract 2).
                let (wv, wd) = unsafe {
                    let block = row.add(F::BYTES * b);
                    prefetch(block, ahead);
                    add_mins::<F, T>(m, block, &sums, b);
                    let wv = _mm512_broadcast_i64x4(F::weights::<Self>(block));
                    (wv, _mm512_set1_ps(f16_at(block)))
                };
                for p in 0..pairs {
                    // The same rounded products as the scalar `wd * xd`.
                    let scale = _mm512_mul_ps(wd, xd[p]);
                    let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr[p], wv, xq[p]));
                    a[p] = _mm512_fmadd_ps(scale, sums, a[p]);
                }
            }
        }
        core::array::from_fn(|k| {
            core::array::from_fn(|t| {
                let v = acc[k][t / 2];
                let lanes = hsum8(match t % 2 {
                    0 => _mm512_castps512_ps256(v),
                    _ => _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
                });
                with_mins::<F>(lanes, mins[k][t])
            })
        })
    }
}

super::shared_kernels!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Avx512,
    8
);

/// Both halves of a 512-bit vector set to `a` and `b`.
#[target_feature(enable = "avx512f")]
#[inline]
fn join(a: __m256i, b: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b)
}

/// Lanes `0..n` of 16 (n ≤ 16).
#[inline]
fn mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// `R` dot products with `x` (length `n`) of rows `stride` apart at `w`.
///
/// # Safety
///
/// The [contract](super#safety); `w` starts `R` rows of `n` floats,
/// `stride` apart, and `x` holds `n` floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rows<const R: usize>(w: *const f32, stride: usize, n: usize, x: *const f32) -> [f32; R] {
    let mut acc = [_mm512_setzero_ps(); R];
    let mut i = 0;
    // SAFETY: the loads read values `i..i + 16` with `i + 16 ≤ n`, then
    // the masked values `i..n`, of a row or of `x`.
    unsafe {
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
    }
    let mut out = [0.0; R];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = _mm512_reduce_add_ps(a);
    }
    out
}

/// `out[r] = row_r · x` for rows `stride` apart at `w`, `ROWS` at a time.
///
/// # Safety
///
/// The [contract](super#safety); `w` starts `out.len()` rows of
/// `x.len()` floats, `stride` apart.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dots(out: &mut [f32], w: *const f32, stride: usize, x: &[f32]) {
    let (n, xp) = (x.len(), x.as_ptr());
    let blocks = out.len() / ROWS;
    // SAFETY: the rows asked for are below `out.len()`, as the caller
    // guarantees `w` holds.
    unsafe {
        for (b, o) in out.chunks_exact_mut(ROWS).enumerate() {
            o.copy_from_slice(&rows::<ROWS>(w.add(b * ROWS * stride), stride, n, xp));
        }
        for (r, o) in out.iter_mut().enumerate().skip(blocks * ROWS) {
            *o = rows::<1>(w.add(r * stride), stride, n, xp)[0];
        }
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx512f")]
pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
    // SAFETY: `w` holds `out.len()` rows of `x.len()` floats (contract 2).
    unsafe { dots(out, w.as_ptr().cast::<f32>(), x.len(), x) };
}

/// The attention scores' dot products (the entry point divides them).
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "avx512f")]
pub unsafe fn attention_dots(scores: &mut [f32], q: &[f32], keys: &[f32], stride: usize) {
    // SAFETY: `keys` holds `scores.len()` keys of `q.len()` floats,
    // `stride` apart (contract 2).
    unsafe { dots(scores, keys.as_ptr(), stride, q) };
}

impl Vector for Avx512 {
    type V = __m512;
    type Mask = __mmask16;
    const LANES: usize = 16;
    const PAIRS: usize = 8;

    vector_ops! { "avx512f";
        add(a, b) = _mm512_add_ps(a, b); sub(a, b) = _mm512_sub_ps(a, b);
        mul(a, b) = _mm512_mul_ps(a, b); div(a, b) = _mm512_div_ps(a, b);
        min(a, b) = _mm512_min_ps(a, b); max(a, b) = _mm512_max_ps(a, b);
        fmadd(a, b, c) = _mm512_fmadd_ps(a, b, c); fnmadd(a, b, c) = _mm512_fnmadd_ps(a, b, c);
        round(v) = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        scale2(p, n) = _mm512_scalef_ps(p, n);
        hsum(v) -> f32 = _mm512_reduce_add_ps(v); hmax(v) -> f32 = _mm512_reduce_max_ps(v);
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn mask(n: usize) -> __mmask16 {
        mask(n)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller's: sixteen readable floats.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller's: sixteen writable floats.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_part(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the caller's: the lanes of `m` are readable.
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_part(p: *mut f32, m: __mmask16, v: __m512) {
        // SAFETY: the caller's: the lanes of `m` are writable.
        unsafe { _mm512_mask_storeu_ps(p, m, v) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn max_part(acc: __m512, v: __m512, m: __mmask16) -> __m512 {
        _mm512_mask_max_ps(acc, m, acc, v)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn add_part(acc: __m512, v: __m512, m: __mmask16) -> __m512 {
        _mm512_mask_add_ps(acc, m, acc, v)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn exp(x: __m512) -> __m512 {
        // SAFETY: this level's features, which the caller guarantees.
        unsafe { vector::exp::<Self>(x) }
    }

    /// Eight pairs, as AVX2 does four.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rope(p: *mut f32, cos: *const f32, sin: *const f32) {
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        // SAFETY: the caller's: eight cosines and sines, sixteen values.
        unsafe {
            let c = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(cos)));
            let s = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(sin)));
            let x = _mm512_loadu_ps(p);
            let swapped = _mm512_permute_ps::<0b1011_0001>(x);
            let first = _mm512_fmsub_ps(x, c, _mm512_mul_ps(swapped, s));
            let second = _mm512_fmadd_ps(swapped, s, _mm512_mul_ps(x, c));
            _mm512_storeu_ps(p, _mm512_mask_blend_ps(0xaaaa, first, second));
        }
    }

    /// As AVX2 computes it, with masks.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn ggml_exp(x: __m512) -> __m512 {
        let c = scalar::GGML_EXP.map(f32::from_bits);
        let set = _mm512_set1_ps;
        let shift = set(12_582_912.0);
        let z = _mm512_fmadd_ps(x, set(c[0]), shift);
        let n = _mm512_sub_ps(z, shift);
        let b = _mm512_fnmadd_ps(n, set(c[2]), _mm512_fnmadd_ps(n, set(c[1]), x));
        let e = _mm512_slli_epi32::<23>(_mm512_castps_si512(z));
        let k = _mm512_castsi512_ps(_mm512_add_epi32(e, _mm512_castps_si512(set(1.0))));
        let u = _mm512_mul_ps(b, b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(set(c[3]), b, set(c[4])),
                u,
                _mm512_fmadd_ps(set(c[5]), b, set(c[6])),
            ),
            u,
            _mm512_mul_ps(set(c[7]), b),
        );
        let near = _mm512_fmadd_ps(k, j, k);
        let abs = _mm512_abs_ps(n);
        let far = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs, set(126.0));
        if far == 0 {
            return near;
        }
        let down = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
        let g = _mm512_maskz_mov_epi32(down, _mm512_set1_epi32(0x8200_0000_u32 as i32));
        let s1 = _mm512_castsi512_ps(_mm512_add_epi32(g, _mm512_set1_epi32(0x7f00_0000)));
        let s2 = _mm512_castsi512_ps(_mm512_sub_epi32(e, g));
        let split = _mm512_mul_ps(_mm512_fmadd_ps(s2, j, s2), s1);
        let beyond = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs, set(192.0));
        let v = _mm512_mask_blend_ps(far, near, split);
        _mm512_mask_blend_ps(beyond, v, _mm512_mul_ps(s1, s1))
    }

    /// The rest goes into the first stream, a masked vector at a time,
    /// before the streams are summed.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn sum_streams<const S: usize>(mut acc: [__m512; S], rest: *const f32, n: usize) -> f32 {
        let mut i = 0;
        while i < n {
            let m = mask((n - i).min(16));
            // SAFETY: the caller's: `n` floats at `rest`, of which `m`
            // covers only those from `i`.
            acc[0] = _mm512_add_ps(acc[0], unsafe { _mm512_maskz_loadu_ps(m, rest.add(i)) });
            i += 16;
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }
}

vector_kernels!("avx512f", Avx512, STREAMS);
