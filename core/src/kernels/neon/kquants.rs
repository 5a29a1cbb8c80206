//! The NEON K-quant kernels, generic over the level's [`Dot`]: Q4_K and
//! Q6_K, super-blocks of 256 values in sub-blocks with scales of their own.
//! Exact integer sums per super-block, then the scalar twin's float
//! operations with one row per lane. A matvec is the matrix–matrix kernel
//! with one input.

use core::arch::aarch64::*;
use core::marker::PhantomData;

use super::{by_rows, hsum4, lanes, s8, widen, Dot, Rows, ROWS};
use crate::kernels::Input;

/// Lane `k` of the first is the sum of `v[k]`'s lanes 0 and 1, of the
/// second the sum of its lanes 2 and 3.
#[target_feature(enable = "neon")]
#[inline]
fn hsum2x2(v: [int32x4_t; 4]) -> (int32x4_t, int32x4_t) {
    let (p, q) = (vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
    (vuzp1q_s32(p, q), vuzp2q_s32(p, q))
}

/// Lane `k` is the f16 at byte `at` of `rows[k]`.
///
/// # Safety
///
/// Each row has two readable bytes at `at`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn f16_lanes(rows: [*const u8; ROWS], at: usize) -> float32x4_t {
    // SAFETY: the caller's.
    let h = rows.map(|r| u16::from_le_bytes(unsafe { r.add(at).cast::<[u8; 2]>().read() }));
    // SAFETY: `h` holds four values.
    widen(unsafe { vld1_u16(h.as_ptr()) })
}

/// `scalar::q4k_scales` of the 12 bytes at `s`: the eight scales, then
/// the eight mins.
///
/// # Safety
///
/// `s` points at 12 readable bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q4k_scales(s: *const u8) -> (uint8x8_t, uint8x8_t) {
    // SAFETY: the caller's.
    let w = crate::kernels::scalar::q4k_scale_words(unsafe { &*s.cast::<[u8; 12]>() });
    let pack = |lo: u32, hi: u32| vcreate_u8(u64::from(lo) | (u64::from(hi) << 32));
    (pack(w[0], w[1]), pack(w[2], w[3]))
}

/// One row's Q4_K block `b`, unpacked once, against the input blocks `x`:
/// for each input, lanes 0 and 1 sum to `Σ_j scale_j·(q_j·x_j)` and lanes
/// 2 and 3 to `Σ_j min_j·Σx_j` (`xsums` holds its eight `Σx_j`), so that
/// four rows' results take one register per input.
///
/// # Safety
///
/// The [contract](super#safety); `b` starts a whole block, and each `x[t]`
/// 256 values.
#[inline(always)]
unsafe fn q4k_block<D: Dot, const T: usize>(
    b: *const u8,
    x: [*const i8; T],
    xsums: [int16x8_t; T],
) -> [int32x4_t; T] {
    // SAFETY: the level's features (contract 1); the loads read the block
    // (144 bytes) and the inputs' 256 values.
    unsafe {
        let (low, zero) = (vdupq_n_u8(0xf), vdupq_n_s32(0));
        let (scales, mins) = q4k_scales(b.add(4));
        let scales = vreinterpretq_s16_u16(vmovl_u8(scales));
        let mins = vreinterpretq_s16_u16(vmovl_u8(mins));
        let scales = [vmovl_s16(vget_low_s16(scales)), vmovl_high_s16(scales)];
        let mut isum = [zero; T];
        // Sub-blocks 0..4, then 4..8: a scale per lane after `hsum4`.
        for (half, scales) in scales.into_iter().enumerate() {
            let mut parts = [[zero; 4]; T];
            for c in 0..2 {
                let j = 2 * half + c;
                let (q0, q1) = (vld1q_u8(b.add(16 + 32 * j)), vld1q_u8(b.add(32 + 32 * j)));
                let (l0, l1) = (s8(vandq_u8(q0, low)), s8(vandq_u8(q1, low)));
                let (h0, h1) = (s8(vshrq_n_u8::<4>(q0)), s8(vshrq_n_u8::<4>(q1)));
                for (p, x) in parts.iter_mut().zip(x) {
                    let x = x.add(64 * j);
                    let lo = D::dot16(zero, l0, vld1q_s8(x));
                    p[2 * c] = D::dot16(lo, l1, vld1q_s8(x.add(16)));
                    let hi = D::dot16(zero, h0, vld1q_s8(x.add(32)));
                    p[2 * c + 1] = D::dot16(hi, h1, vld1q_s8(x.add(48)));
                }
            }
            for (s, p) in isum.iter_mut().zip(parts) {
                *s = vmlaq_s32(*s, hsum4(p), scales);
            }
        }
        core::array::from_fn(|t| {
            let xs = xsums[t];
            let low = vmull_s16(vget_low_s16(mins), vget_low_s16(xs));
            let msum = vmlal_high_s16(low, mins, xs);
            vpaddq_s32(isum[t], msum)
        })
    }
}

/// One row's Q6_K block `b`, unpacked once, against the input blocks `x`,
/// whose sums of each 16 values are `xsums`: for each input, lanes summing
/// to `Σ_j scale_j·(q_j·x_j)`. The values are dotted as stored (0..64) and
/// the offset of 32 comes off through the sums, as llama.cpp does.
///
/// # Safety
///
/// The [contract](super#safety); `b` starts a whole block, and each `x[t]`
/// 256 values.
#[inline(always)]
unsafe fn q6k_block<D: Dot, const T: usize>(
    b: *const u8,
    x: [*const i8; T],
    xsums: [[int16x8_t; 2]; T],
) -> [int32x4_t; T] {
    // SAFETY: the level's features (contract 1); the loads read the block
    // (210 bytes) and the inputs' 256 values.
    unsafe {
        let (low, high, zero) = (vdupq_n_u8(0xf), vdupq_n_u8(0x30), vdupq_n_s32(0));
        let scales = vld1q_s8(b.add(192).cast::<i8>());
        let s = [vmovl_s8(vget_low_s8(scales)), vmovl_high_s8(scales)];
        let mut isum = [zero; T];
        for (n, s) in s.iter().enumerate() {
            let (ql, qh) = (b.add(64 * n), b.add(128 + 32 * n));
            let l = [0, 1, 2, 3].map(|i| vld1q_u8(ql.add(16 * i)));
            let h = [vld1q_u8(qh), vld1q_u8(qh.add(16))];
            // Values 16i..16i+16 of this half: four low bits from `l`,
            // two high bits from `h`.
            let q = [
                vorrq_u8(vandq_u8(l[0], low), vandq_u8(vshlq_n_u8::<4>(h[0]), high)),
                vorrq_u8(vandq_u8(l[1], low), vandq_u8(vshlq_n_u8::<4>(h[1]), high)),
                vorrq_u8(vandq_u8(l[2], low), vandq_u8(vshlq_n_u8::<2>(h[0]), high)),
                vorrq_u8(vandq_u8(l[3], low), vandq_u8(vshlq_n_u8::<2>(h[1]), high)),
                vorrq_u8(vshrq_n_u8::<4>(l[0]), vandq_u8(h[0], high)),
                vorrq_u8(vshrq_n_u8::<4>(l[1]), vandq_u8(h[1], high)),
                vorrq_u8(vshrq_n_u8::<4>(l[2]), vandq_u8(vshrq_n_u8::<2>(h[0]), high)),
                vorrq_u8(vshrq_n_u8::<4>(l[3]), vandq_u8(vshrq_n_u8::<2>(h[1]), high)),
            ];
            for (isum, x) in isum.iter_mut().zip(x) {
                let x = x.add(128 * n);
                let mut p = [zero; 8];
                for (i, p) in p.iter_mut().enumerate() {
                    *p = D::dot16(zero, s8(q[i]), vld1q_s8(x.add(16 * i)));
                }
                let lo = hsum4([p[0], p[1], p[2], p[3]]);
                *isum = vmlaq_s32(*isum, lo, vmovl_s16(vget_low_s16(*s)));
                let hi = hsum4([p[4], p[5], p[6], p[7]]);
                *isum = vmlaq_s32(*isum, hi, vmovl_high_s16(*s));
            }
        }
        core::array::from_fn(|t| {
            let xs = xsums[t];
            let mut offset = vmull_s16(vget_low_s16(s[0]), vget_low_s16(xs[0]));
            offset = vmlal_high_s16(offset, s[0], xs[0]);
            offset = vmlal_s16(offset, vget_low_s16(s[1]), vget_low_s16(xs[1]));
            offset = vmlal_high_s16(offset, s[1], xs[1]);
            vsubq_s32(isum[t], vshlq_n_s32::<5>(offset))
        })
    }
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
    /// The f16 scales of four rows' blocks, one row per lane.
    type Scales: Copy;

    /// [`KQuant::Sums`] from an input block's sixteen sums at `bsums`.
    unsafe fn sums(bsums: *const i16) -> Self::Sums;

    /// One row's block at `b` against the `T` input blocks at `x`, in
    /// integer lanes per input.
    unsafe fn block<D: Dot, const T: usize>(
        b: *const u8,
        x: [*const i8; T],
        sums: [Self::Sums; T],
    ) -> [int32x4_t; T];

    /// The scales of the blocks `at` bytes into the rows.
    unsafe fn scales(rows: [*const u8; ROWS], at: usize) -> Self::Scales;

    /// The scalar twin's float step for one input, one row per lane, from
    /// the rows' [`KQuant::block`] lanes and the input block's scale `d`.
    unsafe fn step(scales: Self::Scales, lanes: [int32x4_t; ROWS], d: f32) -> float32x4_t;
}

/// Q4_K: eight sub-blocks of 32 nibbles, with 6-bit scales and mins.
pub(super) struct Q4k;

impl KQuant for Q4k {
    const BYTES: usize = 144;
    /// The sums of each 32 values, the mins' partners.
    type Sums = int16x8_t;
    /// The scales and the mins' scales.
    type Scales = (float32x4_t, float32x4_t);

    #[inline(always)]
    unsafe fn sums(bsums: *const i16) -> int16x8_t {
        // SAFETY: the caller's: sixteen sums.
        unsafe { vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums.add(8))) }
    }

    #[inline(always)]
    unsafe fn block<D: Dot, const T: usize>(
        b: *const u8,
        x: [*const i8; T],
        xsums: [int16x8_t; T],
    ) -> [int32x4_t; T] {
        // SAFETY: the caller's contract is the same.
        unsafe { q4k_block::<D, T>(b, x, xsums) }
    }

    #[inline(always)]
    unsafe fn scales(rows: [*const u8; ROWS], at: usize) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller's: each block starts with the two f16 scales.
        unsafe { (f16_lanes(rows, at), f16_lanes(rows, at + 2)) }
    }

    #[inline(always)]
    unsafe fn step(
        (dw, dmin): (float32x4_t, float32x4_t),
        lanes: [int32x4_t; ROWS],
        d: f32,
    ) -> float32x4_t {
        // SAFETY: NEON (contract 1).
        unsafe {
            let (isum, msum) = hsum2x2(lanes);
            let (dw, dmin) = (vmulq_n_f32(dw, d), vmulq_n_f32(dmin, d));
            let (isum, msum) = (vcvtq_f32_s32(isum), vcvtq_f32_s32(msum));
            vsubq_f32(vmulq_f32(dw, isum), vmulq_f32(dmin, msum))
        }
    }
}

/// Q6_K: sixteen sub-blocks of 16 six-bit values (stored `+ 32`), with
/// 8-bit scales.
pub(super) struct Q6k;

impl KQuant for Q6k {
    const BYTES: usize = 210;
    /// The sixteen sums themselves.
    type Sums = [int16x8_t; 2];
    type Scales = float32x4_t;

    #[inline(always)]
    unsafe fn sums(bsums: *const i16) -> [int16x8_t; 2] {
        // SAFETY: the caller's: sixteen sums.
        unsafe { [vld1q_s16(bsums), vld1q_s16(bsums.add(8))] }
    }

    #[inline(always)]
    unsafe fn block<D: Dot, const T: usize>(
        b: *const u8,
        x: [*const i8; T],
        xsums: [[int16x8_t; 2]; T],
    ) -> [int32x4_t; T] {
        // SAFETY: the caller's contract is the same.
        unsafe { q6k_block::<D, T>(b, x, xsums) }
    }

    #[inline(always)]
    unsafe fn scales(rows: [*const u8; ROWS], at: usize) -> float32x4_t {
        // SAFETY: the caller's: the f16 scale ends each block.
        unsafe { f16_lanes(rows, at + 208) }
    }

    /// The scalar twin's `(d_w·d_x)·isum`.
    #[inline(always)]
    unsafe fn step(dw: float32x4_t, lanes: [int32x4_t; ROWS], d: f32) -> float32x4_t {
        // SAFETY: NEON (contract 1).
        unsafe { vmulq_f32(vmulq_n_f32(dw, d), vcvtq_f32_s32(hsum4(lanes))) }
    }
}

/// K-quant rows in format `K` for `T` inputs, with level `D`'s dot
/// products.
struct KRows<'x, D, K, const T: usize>([Input<'x>; T], PhantomData<(D, K)>);

impl<D: Dot, K: KQuant, const T: usize> Rows<ROWS, T> for KRows<'_, D, K, T> {
    /// Per block, the exact integer sums of each row and input, then the
    /// scalar twin's float operations with one row per lane.
    #[inline(always)]
    unsafe fn rows(&self, rows: [*const u8; ROWS]) -> [[f32; ROWS]; T] {
        let (qs, d) = (self.0.map(|x| x.qs().as_ptr()), self.0.map(Input::scales));
        let bsums = self.0.map(|x| x.bsums().as_ptr());
        // SAFETY: the level's features (contract 1); block `b` of every
        // row and input (256 values, 16 sums) is inside them.
        unsafe {
            let mut sum = [vdupq_n_f32(0.0); T];
            for b in 0..d[0].len() {
                let x = qs.map(|q| q.add(256 * b));
                let xsums = bsums.map(|s| K::sums(s.add(16 * b)));
                let mut ints = [[vdupq_n_s32(0); T]; ROWS];
                for (i, r) in ints.iter_mut().zip(rows) {
                    *i = K::block::<D, T>(r.add(K::BYTES * b), x, xsums);
                }
                let scales = K::scales(rows, K::BYTES * b);
                for ((t, s), dt) in sum.iter_mut().enumerate().zip(d) {
                    *s = vaddq_f32(*s, K::step(scales, ints.map(|i| i[t]), dt[b]));
                }
            }
            lanes(sum)
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
pub(super) unsafe fn matmul<D: Dot, K: KQuant>(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    each_tile!(out, x, T, _ => {
        // SAFETY: the caller's contract.
        unsafe { by_rows::<ROWS, T>(out, w, &KRows::<D, K, T>(x, PhantomData)) };
    });
}
