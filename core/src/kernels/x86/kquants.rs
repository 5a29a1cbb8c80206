//! The K-quant kernels of both levels: Q4_K and Q6_K, super-blocks of 256
//! values in sub-blocks with scales of their own. Exact integer sums per
//! super-block, then the scalar twin's float formula, so they equal it bit
//! for bit. A matvec is the matrix–matrix kernel with one input.

use core::arch::x86_64::*;
use core::marker::PhantomData;

use super::{
    by_rows, f16_at, first_lanes, hsum4_i32, hsum_each, hsum_i32, per_input, prefetch, Rows,
};
use crate::kernels::Input;

/// The eight lane sums of four `a` (unsigned, below 64) × `b`
/// (signed) byte products, each times its lane's 16-bit scale
/// (`s`, the same in both halves of a lane). Exact: a pair of
/// products is at most 2·63·128 in magnitude, below 2^15.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn scaled_lanes(a: __m256i, b: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), s)
}

/// A Q6_K value's two high bits, the low two of each byte of `s`, in place
/// (bits 4 and 5).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn high2(s: __m256i) -> __m256i {
    _mm256_slli_epi16::<4>(_mm256_and_si256(s, _mm256_set1_epi8(3)))
}

/// The 16-bit lanes of `v` all set to its 16-bit lane `i` (< 8),
/// in both halves.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn spread16(v: __m256i, i: usize) -> __m256i {
    let pair = (((2 * i + 1) << 8) | (2 * i)) as i16;
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(pair))
}

/// A K-quant format, as [`KRows`] reads it.
///
/// # Safety
///
/// Every method: the [contract](super#safety).
pub(super) trait KQuant {
    /// Bytes per super-block.
    const BYTES: usize;
    /// What a row's block needs of an input block's sums of each 16
    /// values, formed once for all rows.
    type Sums: Copy;

    /// [`KQuant::Sums`] from an input block's sixteen sums at `bsums`.
    unsafe fn sums(bsums: *const i16) -> Self::Sums;

    /// The scalar twin's float step for the block at `block` and the `T`
    /// input blocks at `x` (with their sums and scales `d`, one lane per
    /// input in `xd`), one f32 lane per input.
    unsafe fn step<const T: usize>(
        block: *const u8,
        x: [*const i8; T],
        sums: [Self::Sums; T],
        d: [f32; T],
        xd: __m128,
    ) -> __m128;
}

/// Q4_K: eight sub-blocks of 32 nibbles, with 6-bit scales and mins.
pub(super) struct Q4k;

impl KQuant for Q4k {
    const BYTES: usize = 144;
    /// Σx of each 32-value sub-block, the mins' partners.
    type Sums = __m128i;

    #[inline(always)]
    unsafe fn sums(bsums: *const i16) -> __m128i {
        // SAFETY: the caller's: sixteen sums.
        unsafe {
            let bs = _mm256_loadu_si256(bsums.cast());
            _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            )
        }
    }

    #[inline(always)]
    unsafe fn step<const T: usize>(
        block: *const u8,
        x: [*const i8; T],
        pairs: [__m128i; T],
        d: [f32; T],
        xd: __m128,
    ) -> __m128 {
        // SAFETY: the level's features (contract 1); the block's 144 bytes
        // and each input block's 256 values.
        unsafe {
            let low = _mm256_set1_epi8(0xf);
            let w = crate::kernels::scalar::q4k_scale_words(&*block.add(4).cast::<[u8; 12]>());
            let words = _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32);
            // 16-bit lanes: the eight scales, then the eight mins.
            let both = _mm256_cvtepu8_epi16(words);
            let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(both));
            let mins = _mm256_extracti128_si256::<1>(both);
            let mut sumi = [_mm256_setzero_si256(); T];
            for j in 0..4 {
                let q = _mm256_loadu_si256(block.add(16 + 32 * j).cast());
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                let (sl, sh) = (spread16(scales, 2 * j), spread16(scales, 2 * j + 1));
                for (sumi, x) in sumi.iter_mut().zip(x) {
                    let xl = _mm256_loadu_si256(x.add(64 * j).cast());
                    let xh = _mm256_loadu_si256(x.add(64 * j + 32).cast());
                    *sumi = _mm256_add_epi32(*sumi, scaled_lanes(lo, xl, sl));
                    *sumi = _mm256_add_epi32(*sumi, scaled_lanes(hi, xh, sh));
                }
            }
            let (dw, dmin) = (f16_at(block), f16_at(block.add(2)));
            let mut msums = [_mm_setzero_si128(); T];
            for (m, &p) in msums.iter_mut().zip(&pairs) {
                *m = _mm_madd_epi16(mins, p);
            }
            if T == 1 {
                let (isum, msum) = (hsum_i32(sumi[0]), hsum4_i32(msums[0]));
                _mm_set_ss((dw * d[0]) * isum as f32 - (dmin * d[0]) * msum as f32)
            } else {
                let isum = _mm_cvtepi32_ps(hsum_each(sumi));
                let mut wide = [_mm256_setzero_si256(); T];
                for (w, &m) in wide.iter_mut().zip(&msums) {
                    *w = _mm256_zextsi128_si256(m);
                }
                let msum = _mm_cvtepi32_ps(hsum_each(wide));
                _mm_sub_ps(
                    _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dw), xd), isum),
                    _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dmin), xd), msum),
                )
            }
        }
    }
}

/// Q6_K: sixteen sub-blocks of 16 six-bit values (a nibble and two high
/// bits, stored `+ 32`), with 8-bit scales.
pub(super) struct Q6k;

impl KQuant for Q6k {
    const BYTES: usize = 210;
    /// The sixteen sums themselves.
    type Sums = __m256i;

    #[inline(always)]
    unsafe fn sums(bsums: *const i16) -> __m256i {
        // SAFETY: the caller's: sixteen sums.
        unsafe { _mm256_loadu_si256(bsums.cast()) }
    }

    #[inline(always)]
    unsafe fn step<const T: usize>(
        block: *const u8,
        x: [*const i8; T],
        bs: [__m256i; T],
        d: [f32; T],
        xd: __m128,
    ) -> __m128 {
        // SAFETY: the level's features (contract 1); the block's 210 bytes
        // and each input block's 256 values.
        unsafe {
            let low = _mm256_set1_epi8(0xf);
            let scales = _mm_loadu_si128(block.add(192).cast());
            // The stored values are q + 32: start from −32·Σ scale·Σx.
            let wide = _mm256_cvtepi8_epi16(scales);
            let mut sumi = [_mm256_setzero_si256(); T];
            for (s, &bs) in sumi.iter_mut().zip(&bs) {
                let offset = _mm256_madd_epi16(wide, bs);
                *s = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset));
            }
            for n in 0..2 {
                let ql0 = _mm256_loadu_si256(block.add(64 * n).cast());
                let ql1 = _mm256_loadu_si256(block.add(64 * n + 32).cast());
                let qh = _mm256_loadu_si256(block.add(128 + 32 * n).cast());
                // Four groups of 32 values: a nibble and two high bits each.
                let groups = [
                    _mm256_or_si256(_mm256_and_si256(ql0, low), high2(qh)),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, low),
                        high2(_mm256_srli_epi16::<2>(qh)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                        high2(_mm256_srli_epi16::<4>(qh)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                        high2(_mm256_srli_epi16::<6>(qh)),
                    ),
                ];
                for (g, q) in groups.into_iter().enumerate() {
                    // Lanes 0..4 are one 16-value sub-block, 4..8 the
                    // next: their two scales, eight times each.
                    let j = (8 * n + 2 * g) as i64;
                    let pick =
                        _mm_set_epi64x((j + 1) * 0x0101_0101_0101_0101, j * 0x0101_0101_0101_0101);
                    let sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                    for (sumi, x) in sumi.iter_mut().zip(x) {
                        let xq = _mm256_loadu_si256(x.add(128 * n + 32 * g).cast());
                        *sumi = _mm256_add_epi32(*sumi, scaled_lanes(q, xq, sv));
                    }
                }
            }
            let dw = f16_at(block.add(208));
            if T == 1 {
                _mm_set_ss((dw * d[0]) * hsum_i32(sumi[0]) as f32)
            } else {
                let isum = _mm_cvtepi32_ps(hsum_each(sumi));
                _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dw), xd), isum)
            }
        }
    }
}

/// K-quant rows in format `K` for `T` inputs.
struct KRows<'x, K, const T: usize>([Input<'x>; T], PhantomData<K>);

impl<K: KQuant, const T: usize> Rows<T> for KRows<'_, K, T> {
    /// Per block, each row's [`KQuant::step`] for every input, one f32 lane
    /// per input, added up block after block.
    #[inline(always)]
    unsafe fn rows<const R: usize>(&self, rows: [*const u8; R], ahead: usize) -> [[f32; T]; R] {
        let x = self.0;
        let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
        let bsums = x.map(|x| x.bsums().as_ptr());
        // SAFETY: the level's features (contract 1); block `b` of every row
        // and of every input (256 values, 16 sums) is inside them.
        unsafe {
            let mut sum = [_mm_setzero_ps(); R];
            for b in 0..d[0].len() {
                let x = qs.map(|q| q.add(256 * b));
                let (xd, db) = (per_input(d, b), d.map(|d| d[b]));
                let mut sums = [K::sums(bsums[0].add(16 * b)); T];
                for (s, &bs) in sums.iter_mut().zip(&bsums).skip(1) {
                    *s = K::sums(bs.add(16 * b));
                }
                for (s, row) in sum.iter_mut().zip(rows) {
                    let block = row.add(K::BYTES * b);
                    // Every line the block touches; its last is the next block's first.
                    for line in 0..K::BYTES.div_ceil(64) {
                        prefetch(block.add(64 * line), ahead);
                    }
                    *s = _mm_add_ps(*s, K::step(block, x, sums, db, xd));
                }
            }
            first_lanes(sum)
        }
    }
}

/// `out[t] = w · x[t]` for weights in K-quant format `K`, four rows by a
/// tile of inputs at a time, each block unpacked once for the tile.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matmul<K: KQuant>(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    each_tile!(out, x, T, first => {
        // SAFETY: the caller's contract.
        unsafe { by_rows::<4, T>(out, w, first, &KRows::<K, T>(x, PhantomData)) };
    });
}
