//! The half-precision kernels of both levels: f16 weights, and attention
//! over the f16 KV cache as llama.cpp computes it (the scalar twin's
//! `attention_f16`), bit for bit.

use core::arch::x86_64::*;

use super::{by_rows, f16_at, hsum8, prefetch, Level, Rows, AHEAD};
use crate::kernels::expf::LOG2E;
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

/// The eight f64 lanes (`L::Acc8`) of the scalar twin's `dot_f16` of `q`
/// with `R` keys at once. The keys' chains of dependent additions
/// interleave, and `q` is rounded once for all. A short last step
/// reads zero-padded copies: its `+0.0` products change no lane.
///
/// # Safety
///
/// The [contract](super#safety); each key holds `q.len()` values.
#[inline(always)]
unsafe fn dot_f16<L: Level, const R: usize>(q: &[f32], keys: [*const u16; R]) -> [L::Acc8; R] {
    let n = q.len();
    // SAFETY: the level's features (contract 1); full steps read values
    // `i..i + 8` with `i + 8 ≤ n` of `q` and of each key, the last step
    // the copies of its `n − i` values.
    unsafe {
        let mut acc = [L::acc8_zero(); R];
        let mut i = 0;
        while i + 8 <= n {
            dot_step::<L, R>(&mut acc, q.as_ptr().add(i), keys.map(|k| k.add(i)));
            i += 8;
        }
        if i < n {
            let mut qt = [0.0f32; 8];
            qt[..n - i].copy_from_slice(&q[i..]);
            let mut kt = [[0u16; 8]; R];
            for (t, k) in kt.iter_mut().zip(keys) {
                core::ptr::copy_nonoverlapping(k.add(i), t.as_mut_ptr(), n - i);
            }
            dot_step::<L, R>(
                &mut acc,
                qt.as_ptr(),
                core::array::from_fn(|r| kt[r].as_ptr()),
            );
        }
        acc
    }
}

/// Eight values of [`dot_f16`]: from `q` and from each key.
///
/// # Safety
///
/// The [contract](super#safety); `q` and each key hold eight values.
#[inline(always)]
unsafe fn dot_step<L: Level, const R: usize>(
    acc: &mut [L::Acc8; R],
    q: *const f32,
    keys: [*const u16; R],
) {
    // SAFETY: the level's features (contract 1), and the caller's eight
    // values.
    unsafe {
        let qv = round16(_mm256_loadu_ps(q));
        for (a, k) in acc.iter_mut().zip(keys) {
            let p = _mm256_mul_ps(qv, _mm256_cvtph_ps(_mm_loadu_si128(k.cast())));
            *a = L::acc8_add(*a, p);
        }
    }
}

/// Four keys' scores from their [`dot_f16`] lanes, the twin's
/// `join8` done for all four in registers: each key's lanes `l`
/// and `l + 4` (`acc8_half`), then the pairs two apart, then the
/// last two (`hadd`), each rounded to f32 once.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
unsafe fn join4<L: Level>(acc: [L::Acc8; 4]) -> __m128 {
    // SAFETY: the level's features (contract 1).
    unsafe {
        let mut h = [_mm256_setzero_pd(); 4];
        for (h, &a) in h.iter_mut().zip(&acc) {
            *h = L::acc8_half(a);
        }
        // Keys 0, 2, 1, 3.
        let s = _mm256_hadd_pd(pairs(h[0], h[1]), pairs(h[2], h[3]));
        _mm256_cvtpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(s))
    }
}

/// `x`'s lanes `l` and `l + 2` added (for `l` in 0..2), then `y`'s: two
/// keys' pairs of lanes two apart.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pairs(x: __m256d, y: __m256d) -> __m256d {
    _mm256_add_pd(
        _mm256_permute2f128_pd::<0x20>(x, y),
        _mm256_permute2f128_pd::<0x31>(x, y),
    )
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

/// `libm::expf` (FreeBSD's `e_expf.c`) of eight values at once, bit for
/// bit, for `x ≤ 0` and NaN only — all the online softmax feeds it.
/// The same branches as lane selects: the reduction `k = ⌊x/ln 2⌉`
/// (truncating `x/ln 2 − ½`, or `k = −1` near −ln 2, or none), the
/// rational approximation with separate rounded multiplies and adds
/// as Rust writes them (no fused ones), and `scalbnf`'s two
/// products: by 2^−102, exact, then by 2^(k+102), rounded once.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn expf_nonpos(x: __m256) -> __m256 {
    let set = _mm256_set1_ps;
    let above = |v: __m256i, bits: i32| _mm256_cmpgt_epi32(v, _mm256_set1_epi32(bits));
    let hx = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fff_ffff));
    let reduced = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(_mm256_add_ps(
        _mm256_mul_ps(set(LOG2E), x),
        set(-0.5),
    )));
    let k = _mm256_blendv_ps(
        _mm256_blendv_ps(
            _mm256_setzero_ps(),
            set(-1.0),
            _mm256_castsi256_ps(above(hx, 0x3eb1_7218)),
        ),
        reduced,
        _mm256_castsi256_ps(above(hx, 0x3f85_1592)),
    );
    let hi = _mm256_sub_ps(x, _mm256_mul_ps(k, set(6.931_457_5e-1)));
    let lo = _mm256_mul_ps(k, set(1.428_606_8e-6));
    let r = _mm256_sub_ps(hi, lo);
    let rr = _mm256_mul_ps(r, r);
    let c = _mm256_sub_ps(
        r,
        _mm256_mul_ps(
            rr,
            _mm256_add_ps(set(1.666_662_5e-1), _mm256_mul_ps(rr, set(-2.766_733_3e-3))),
        ),
    );
    let q = _mm256_div_ps(_mm256_mul_ps(r, c), _mm256_sub_ps(set(2.0), c));
    let y = _mm256_add_ps(set(1.0), _mm256_add_ps(_mm256_sub_ps(q, lo), hi));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(k),
        _mm256_set1_epi32(127 + 102),
    )));
    let e = _mm256_mul_ps(_mm256_mul_ps(y, set(f32::from_bits(0x0c80_0000))), scale);
    let tiny = _mm256_castsi256_ps(above(hx, 0x3900_0000));
    let e = _mm256_blendv_ps(_mm256_add_ps(set(1.0), x), e, tiny);
    let zero = _mm256_castsi256_ps(above(hx, 0x42cf_f1b4));
    let e = _mm256_blendv_ps(e, _mm256_setzero_ps(), zero);
    let nan = _mm256_castsi256_ps(above(hx, 0x7f80_0000));
    _mm256_blendv_ps(e, x, nan)
}

/// The scalar twin's `online_softmax`, its exponentials eight at a
/// time: the running maximum first decides, position by position,
/// which factor each one's exponential is (the rescale when the
/// maximum grows, else the weight); then the exponentials, which no
/// longer depend on each other; then the sum, in order.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn online_softmax(scores: &mut [f32], weights: &mut [f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for (s, w) in scores.iter_mut().zip(weights.iter_mut()) {
        let grows = *s > max;
        (*s, *w, max) = match grows {
            true => (0.0, max - *s, *s),
            false => (1.0, *s - max, max),
        };
    }
    let n = scores.len().min(weights.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: the level's features (contract 1); `i + 8 ≤ n`, the
        // length of both slices.
        unsafe {
            let (s, w) = (scores.as_mut_ptr().add(i), weights.as_mut_ptr().add(i));
            let e = expf_nonpos(_mm256_loadu_ps(w));
            let kept = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_loadu_ps(s), _mm256_set1_ps(1.0));
            _mm256_storeu_ps(s, _mm256_blendv_ps(e, _mm256_set1_ps(1.0), kept));
            _mm256_storeu_ps(w, _mm256_blendv_ps(_mm256_set1_ps(1.0), e, kept));
        }
        i += 8;
    }
    for (s, w) in scores[i..n].iter_mut().zip(&mut weights[i..n]) {
        let e = libm::expf(*w);
        (*s, *w) = match *s == 1.0 {
            true => (1.0, e),
            false => (e, 1.0),
        };
    }
    let mut sum = 0.0f32;
    for (&ms, &vs) in scores[..n].iter().zip(&weights[..n]) {
        sum = sum * ms + vs;
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
pub(super) unsafe fn attention_f16<L: Level>(
    out: &mut [f32],
    a: F16Attention<'_>,
    scratch: &mut [f32],
) {
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
    let fours = positions / 4;
    // SAFETY: the level's features (contract 1); each key holds `n` values,
    // and `s` four scores.
    unsafe {
        for (f, s) in rescale.chunks_exact_mut(4).enumerate() {
            let dots = join4::<L>(dot_f16::<L, 4>(
                a.q,
                core::array::from_fn(|j| key(4 * f + j)),
            ));
            _mm_storeu_ps(s.as_mut_ptr(), _mm_mul_ps(dots, _mm_set1_ps(a.scale)));
        }
        for (t, s) in rescale.iter_mut().enumerate().skip(4 * fours) {
            let [acc] = dot_f16::<L, 1>(a.q, [key(t)]);
            *s = _mm_cvtss_f32(join4::<L>([acc; 4])) * a.scale;
        }
    }
    // SAFETY: the caller's contract.
    let inv = unsafe { online_softmax(rescale, weight) };
    // SAFETY: the caller's contract.
    unsafe { mix_f16::<F16x8, 8>(out, a.values, stride, (rescale, weight), inv) };
}
