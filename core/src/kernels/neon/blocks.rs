//! The NEON int8 block kernels: Q8_0, Q4_0 and Q4_1 (blocks of 32 values
//! with an f16 scale) and llama2.c's Q8G (groups of a multiple of 16 values with an
//! f32 scale), generic over the level's [`Dot`]; and the quantizers of the
//! input they take, which both levels share.

use core::arch::aarch64::*;
use core::marker::PhantomData;

use super::{by_rows, f16_at, hsum4, lanes, s8, Dot, Rows, ROWS};
use crate::kernels::input::{quantize_q8_k_by, Q8kBlocks};
use crate::kernels::{scalar, Input};

/// Sixteen i32 lanes (four vectors) as bytes in order, saturating.
#[target_feature(enable = "neon")]
#[inline]
fn narrow_i8(q: [int32x4_t; 4]) -> int8x16_t {
    let lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
    let hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
    vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
}

/// The scalar twin's `quantize_q8_0`, equal to it for finite input:
/// `fcvtns` rounds half to even.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { quantize_blocks32(x, qs, d, &mut []) }
}

/// The scalar twin's `quantize_q8_1`, equal to it for finite input.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_1(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { quantize_blocks32(x, qs, d, s) }
}

/// Blocks of 32 values quantized as Q8_0, with their scaled sums in `s`
/// unless it is empty (Q8_1).
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn quantize_blocks32(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (b, db) in d.iter_mut().enumerate() {
        // SAFETY: `x` and `qs` hold 32 values per scale in `d` (contract
        // 2), so block `b` is inside both.
        unsafe {
            let p = x.as_ptr().add(32 * b);
            let v: [float32x4_t; 8] = core::array::from_fn(|k| vld1q_f32(p.add(4 * k)));
            let amax = vmaxvq_f32(
                v.iter()
                    .fold(vdupq_n_f32(0.0), |m, &x| vmaxq_f32(m, vabsq_f32(x))),
            );
            *db = scalar::block_scale(amax);
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let q = v.map(|x| vcvtnq_s32_f32(vmulq_n_f32(x, id)));
            let out = qs.as_mut_ptr().add(32 * b);
            vst1q_s8(out, narrow_i8([q[0], q[1], q[2], q[3]]));
            vst1q_s8(out.add(16), narrow_i8([q[4], q[5], q[6], q[7]]));
            if let Some(s) = s.get_mut(b) {
                let sum = q.iter().fold(vdupq_n_s32(0), |a, &q| vaddq_s32(a, q));
                *s = scalar::block_sum(amax, vaddvq_s32(sum));
            }
        }
    }
}

/// The scalar twin's `quantize_q8_k`, equal to it for finite input.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_k(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    // SAFETY: the caller's contract.
    unsafe { quantize_q8_k_by::<Q8k>(x, qs, d, bsums) };
}

/// The NEON vectors for [`quantize_q8_k_by`].
struct Q8k;

impl Q8kBlocks for Q8k {
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn amax(xb: &[f32]) -> f32 {
        let mut m = vdupq_n_f32(0.0);
        for k in 0..64 {
            // SAFETY: the loads stay in `xb` (256 values).
            m = vmaxq_f32(m, vabsq_f32(unsafe { vld1q_f32(xb.as_ptr().add(4 * k)) }));
        }
        vmaxvq_f32(m)
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn quantize(xb: &[f32], iscale: f32, q: &mut [i8], sums: &mut [i16]) {
        for (g, s) in sums.iter_mut().enumerate() {
            // SAFETY: group `g` of 16 values lies inside `xb` and `q` (256
            // values each).
            let v: [int32x4_t; 4] = unsafe {
                let v = core::array::from_fn(|k| {
                    let x = vld1q_f32(xb.as_ptr().add(16 * g + 4 * k));
                    vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(x, iscale)), vdupq_n_s32(127))
                });
                vst1q_s8(q.as_mut_ptr().add(16 * g), narrow_i8(v));
                v
            };
            *s = vaddvq_s32(vaddq_s32(vaddq_s32(v[0], v[1]), vaddq_s32(v[2], v[3]))) as i16;
        }
    }
}

/// Rows per pass of the Q8_0 and Q4_0 tiles, which keep eight lane sums
/// (two registers) per row and input: two rows by four inputs hold 16 of
/// the 32 registers, leaving room for the inputs' eight and the weights.
pub(super) const BLOCKS32_TILE_ROWS: usize = 2;

/// `scalar::hsum8` of eight lanes held as two vectors.
#[target_feature(enable = "neon")]
#[inline]
fn hsum8(a: [float32x4_t; 2]) -> f32 {
    let r = vaddq_f32(a[0], a[1]);
    vpadds_f32(vadd_f32(vget_low_f32(r), vget_high_f32(r)))
}

/// A format of blocks of 32 values behind an f16 scale.
pub(super) trait Format {
    /// Bytes per block: the scale, then the values.
    const BYTES: usize;

    /// Whether an f16 minimum follows the scale, adding `m·s` per block
    /// with the input block's scaled sum `s` (Q4_1).
    const MIN: bool = false;

    /// The 32 values of the block at `b`.
    ///
    /// # Safety
    ///
    /// `b` starts a whole block.
    unsafe fn values(b: *const u8) -> [int8x16_t; 2];
}

/// Q8_0: 32 signed bytes.
pub(super) struct Q8_0;

impl Format for Q8_0 {
    const BYTES: usize = 34;

    #[inline(always)]
    unsafe fn values(b: *const u8) -> [int8x16_t; 2] {
        // SAFETY: the caller's: the 32 bytes follow the scale.
        unsafe {
            let q = b.add(2).cast::<i8>();
            [vld1q_s8(q), vld1q_s8(q.add(16))]
        }
    }
}

/// 16 bytes of nibbles, the low ones first, at the end of a block: Q4_0
/// (stored as value + 8 after the scale) and, with `M`, Q4_1 (unsigned,
/// after the scale and an f16 minimum).
pub(super) struct Nibbles<const M: bool>;

impl<const M: bool> Format for Nibbles<M> {
    const BYTES: usize = if M { 20 } else { 18 };
    const MIN: bool = M;

    #[inline(always)]
    unsafe fn values(b: *const u8) -> [int8x16_t; 2] {
        // SAFETY: the caller's: the 16 bytes end the block; NEON is part
        // of every aarch64 target.
        unsafe {
            let q = vld1q_u8(b.add(Self::BYTES - 16));
            let v = [s8(vandq_u8(q, vdupq_n_u8(0xf))), s8(vshrq_n_u8::<4>(q))];
            match M {
                true => v,
                false => v.map(|v| vsubq_s8(v, vdupq_n_s8(8))),
            }
        }
    }
}

/// Rows of blocks in format `F` for `T` inputs, with level `D`'s lane
/// sums.
struct Blocks32<'x, D, F, const T: usize>([Input<'x>; T], PhantomData<(D, F)>);

impl<D: Dot, F: Format, const R: usize, const T: usize> Rows<R, T> for Blocks32<'_, D, F, T> {
    /// The scalar twin's `matvec_blocks32`: per block, the eight lane sums
    /// of each (row, input) scaled with one fused multiply-add each into
    /// its eight running sums, then `hsum8`; a format's minimums times
    /// the input's block sums summed apart, with fused multiply-adds, and
    /// added at the end. A block's 32 weights are loaded once for all `T`
    /// inputs.
    #[inline(always)]
    unsafe fn rows(&self, rows: [*const u8; R]) -> [[f32; R]; T] {
        let (qs, d) = (self.0.map(|x| x.qs().as_ptr()), self.0.map(Input::scales));
        let sums = self.0.map(Input::block_sums);
        // SAFETY: the level's features (contract 1); block `b` of every
        // row and input is inside them, as the caller guarantees.
        unsafe {
            let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; R];
            let mut mins = [[0.0f32; T]; R];
            for b in 0..d[0].len() {
                let xq = qs.map(|q| [vld1q_s8(q.add(32 * b)), vld1q_s8(q.add(32 * b + 16))]);
                for ((a, m), r) in acc.iter_mut().zip(&mut mins).zip(rows) {
                    let block = r.add(F::BYTES * b);
                    let [w0, w1] = F::values(block);
                    let wd = f16_at(block);
                    for ((a, x), d) in a.iter_mut().zip(&xq).zip(d) {
                        let s = wd * d[b];
                        a[0] = vfmaq_n_f32(a[0], vcvtq_f32_s32(D::lanes16(w0, x[0])), s);
                        a[1] = vfmaq_n_f32(a[1], vcvtq_f32_s32(D::lanes16(w1, x[1])), s);
                    }
                    if F::MIN {
                        let wm = f16_at(block.add(2));
                        for (m, s) in m.iter_mut().zip(&sums) {
                            let v = vfma_n_f32(vdup_n_f32(*m), vdup_n_f32(wm), s[b]);
                            *m = vget_lane_f32::<0>(v);
                        }
                    }
                }
            }
            core::array::from_fn(|t| {
                core::array::from_fn(|k| match F::MIN {
                    true => hsum8(acc[k][t]) + mins[k][t],
                    false => hsum8(acc[k][t]),
                })
            })
        }
    }
}

/// Rows of blocks in format `F`, four at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matvec_blocks32<D: Dot, F: Format>(
    out: &mut [f32],
    w: &[u8],
    qs: &[i8],
    d: &[f32],
) {
    let x = Blocks32::<D, F, 1>([Input::Q8_0 { qs, d }], PhantomData);
    // SAFETY: the caller's contract.
    unsafe { by_rows::<ROWS, 1>(&mut [out], w, &x) };
}

/// [`matvec_blocks32`] for several inputs, bitwise, each weight block
/// loaded (and unpacked) once for a tile of them, `R` rows at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matmul_blocks32<D: Dot, F: Format, const R: usize>(
    out: &mut [&mut [f32]],
    w: &[u8],
    x: &[Input<'_>],
) {
    each_tile!(out, x, T, _ => {
        let x = Blocks32::<D, F, T>(x, PhantomData);
        // SAFETY: the caller's contract.
        unsafe { by_rows::<R, T>(out, w, &x) };
    });
}

/// llama2.c's Q8G rows for `T` inputs, groups of `gs` values: `w` and
/// `scales` are the matrix's values and scales.
struct Q8g<'x, D, const T: usize> {
    w: *const u8,
    scales: *const u8,
    x: [Input<'x>; T],
    gs: usize,
    level: PhantomData<D>,
}

impl<D: Dot, const T: usize> Rows<ROWS, T> for Q8g<'_, D, T> {
    /// The scalar twin's `matvec_q8g`, the group size a multiple of 16:
    /// per group the exact integer sum of each row (one per lane) and
    /// input, then `runq`'s float step for each, group after group.
    #[inline(always)]
    unsafe fn rows(&self, rows: [*const u8; ROWS]) -> [[f32; ROWS]; T] {
        let (x, gs) = (self.x, self.gs);
        let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
        // SAFETY: the level's features (contract 1); a row's scales follow
        // from where its values start; group `g` of every row, of its
        // scales and of every input is inside them, as the caller
        // guarantees.
        unsafe {
            let mut val = [vdupq_n_f32(0.0); T];
            // A row's scales, from where its values start.
            let scales = rows.map(|r| {
                let values = r.offset_from(self.w) as usize;
                self.scales.add(4 * (values / gs))
            });
            for g in 0..d[0].len() {
                let mut sums = [[vdupq_n_s32(0); T]; ROWS];
                for (acc, r) in sums.iter_mut().zip(rows) {
                    for at in (gs * g..gs * (g + 1)).step_by(16) {
                        let w = vld1q_s8(r.add(at).cast());
                        for (a, q) in acc.iter_mut().zip(qs) {
                            *a = D::dot16(*a, w, vld1q_s8(q.add(at)));
                        }
                    }
                }
                let ws = scales.map(|s| f32::from_le_bytes(s.add(4 * g).cast::<[u8; 4]>().read()));
                let ws = vld1q_f32(ws.as_ptr());
                for ((t, v), dt) in val.iter_mut().enumerate().zip(d) {
                    let isum = vcvtq_f32_s32(hsum4(sums.map(|s| s[t])));
                    *v = vaddq_f32(*v, vmulq_n_f32(vmulq_f32(isum, ws), dt[g]));
                }
            }
            lanes(val)
        }
    }
}

/// Q8G rows four at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matvec_q8g<D: Dot>(
    out: &mut [f32],
    w: &[u8],
    scales: &[u8],
    qs: &[i8],
    d: &[f32],
    gs: usize,
) {
    let x = [Input::Q8G { qs, d, group: gs }];
    // SAFETY: the caller's contract.
    unsafe { matmul_q8g::<D>(&mut [out], w, scales, &x, gs) };
}

/// [`matvec_q8g`] for several inputs, bitwise, each weight vector loaded
/// once for a tile of them.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matmul_q8g<D: Dot>(
    out: &mut [&mut [f32]],
    w: &[u8],
    scales: &[u8],
    x: &[Input<'_>],
    gs: usize,
) {
    each_tile!(out, x, T, _ => {
        let kernel = Q8g::<D, T> {
            w: w.as_ptr(),
            scales: scales.as_ptr(),
            x,
            gs,
            level: PhantomData,
        };
        // SAFETY: the caller's contract.
        unsafe { by_rows::<ROWS, T>(out, w, &kernel) };
    });
}
