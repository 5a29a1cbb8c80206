//! The NEON f32 kernels, which both levels share: f32 and f16 weights, the
//! attention scores over an f32 KV cache, and the [`Vector`] that the
//! elementwise kernels are written for.

use core::arch::aarch64::*;

use super::{f16_at, load, widen, Neon};
use crate::kernels::vector::{self, vector_kernels, vector_ops, Vector};
use crate::kernels::{scalar, store_rows, Input};

/// Matrix element types that `rows` widens to f32, four at a time. Their
/// pointers may be unaligned: elements are only read with unaligned loads.
trait Element: Copy {
    /// The four elements at `p`.
    ///
    /// # Safety
    ///
    /// `p` points at four readable elements.
    unsafe fn load4(p: *const Self) -> float32x4_t;

    /// The element at `p`.
    ///
    /// # Safety
    ///
    /// `p` points at a readable element.
    unsafe fn load1(p: *const Self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        // SAFETY: the caller's.
        unsafe { vld1q_f32(p) }
    }

    #[inline(always)]
    unsafe fn load1(p: *const f32) -> f32 {
        // SAFETY: the caller's.
        unsafe { p.read_unaligned() }
    }
}

/// IEEE half precision, as its bits.
impl Element for u16 {
    #[inline(always)]
    unsafe fn load4(p: *const u16) -> float32x4_t {
        // SAFETY: the caller's.
        unsafe { widen(vld1_u16(p)) }
    }

    #[inline(always)]
    unsafe fn load1(p: *const u16) -> f32 {
        // SAFETY: the caller's.
        unsafe { f16_at(p.cast()) }
    }
}

/// `R` dot products with each of `T` inputs `x` (length `n`) of rows
/// `stride` apart at `w`, each weight vector loaded (and widened) once for
/// all `T`. Every (row, input) has its own two accumulators, so its sum
/// does not depend on `R` or `T`.
///
/// # Safety
///
/// The [contract](super#safety); `w` starts `R` rows of `n` elements,
/// `stride` apart, and each `x[t]` holds `n` floats.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn rows<E: Element, const R: usize, const T: usize>(
    w: *const E,
    stride: usize,
    n: usize,
    x: [*const f32; T],
) -> [[f32; T]; R] {
    let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; R];
    let mut i = 0;
    // SAFETY: the loads read elements `i..i + 8` with `i + 8 ≤ n`, then
    // `i..i + 4` with `i + 4 ≤ n`, then `j < n`, of a row or an input.
    unsafe {
        while i + 8 <= n {
            let xv = x.map(|x| [vld1q_f32(x.add(i)), vld1q_f32(x.add(i + 4))]);
            for (k, a) in acc.iter_mut().enumerate() {
                let p = w.add(k * stride + i);
                let (w0, w1) = (E::load4(p), E::load4(p.add(4)));
                for (a, x) in a.iter_mut().zip(&xv) {
                    a[0] = vfmaq_f32(a[0], w0, x[0]);
                    a[1] = vfmaq_f32(a[1], w1, x[1]);
                }
            }
            i += 8;
        }
        if i + 4 <= n {
            let xv = x.map(|x| vld1q_f32(x.add(i)));
            for (k, a) in acc.iter_mut().enumerate() {
                let w0 = E::load4(w.add(k * stride + i));
                for (a, &x) in a.iter_mut().zip(&xv) {
                    a[0] = vfmaq_f32(a[0], w0, x);
                }
            }
            i += 4;
        }
        let mut out = [[0.0; T]; R];
        for (k, (o, a)) in out.iter_mut().zip(acc).enumerate() {
            for ((o, a), x) in o.iter_mut().zip(a).zip(x) {
                let mut s = vaddvq_f32(vaddq_f32(a[0], a[1]));
                for j in i..n {
                    s += E::load1(w.add(k * stride + j)) * *x.add(j);
                }
                *o = s;
            }
        }
        out
    }
}

/// `out[t][r] = row_r · x[t]` for rows `stride` apart at `w`, `R` at a
/// time, the rows left over one at a time.
///
/// # Safety
///
/// The [contract](super#safety); `w` starts `out[0].len()` rows of
/// `x[0].len()` elements, `stride` apart.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dots<E: Element, const R: usize, const T: usize>(
    out: &mut [&mut [f32]],
    w: *const E,
    stride: usize,
    x: [&[f32]; T],
) {
    let (n, xp) = (x[0].len(), x.map(<[f32]>::as_ptr));
    let count = out[0].len();
    let whole = count / R * R;
    // SAFETY: rows `r..r + R` (or row `r`) are below `count`, which the
    // caller guarantees `w` holds.
    unsafe {
        for r in (0..whole).step_by(R) {
            store_rows(out, r, &rows::<E, R, T>(w.add(r * stride), stride, n, xp));
        }
        for r in whole..count {
            store_rows(out, r, &rows::<E, 1, T>(w.add(r * stride), stride, n, xp));
        }
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
    // SAFETY: `w` holds `out.len()` rows of `x.len()` floats (contract 2).
    unsafe { dots::<f32, 4, 1>(&mut [out], w.as_ptr().cast(), x.len(), [x]) };
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn matvec_f16(out: &mut [f32], w: &[u8], x: &[f32]) {
    // SAFETY: `w` holds `out.len()` rows of `x.len()` f16 values (contract 2).
    unsafe { dots::<u16, 4, 1>(&mut [out], w.as_ptr().cast(), x.len(), [x]) };
}

/// Matvec for several inputs, bitwise: two rows by up to four inputs per
/// pass, so the sixteen accumulators, the inputs' eight vectors and the
/// two of weights fit the 32 registers; f16 weights are widened once for
/// the inputs.
///
/// # Safety
///
/// The [contract](super#safety); `w` holds rows of elements `E`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn matmul<E: Element>(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    let w = w.as_ptr().cast::<E>();
    each_tile!(out, x, T, _ => {
        let x = x.map(Input::f32s);
        // SAFETY: `w` holds the outputs' rows of `x[0].len()` elements.
        unsafe { dots::<E, 2, T>(out, w, x[0].len(), x) };
    });
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn matmul_f32(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    // SAFETY: the caller's contract is the same.
    unsafe { matmul::<f32>(out, w, x) };
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn matmul_f16(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    // SAFETY: the caller's contract is the same.
    unsafe { matmul::<u16>(out, w, x) };
}

/// The attention scores' dot products (the entry point divides them).
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn attention_dots(scores: &mut [f32], q: &[f32], keys: &[f32], stride: usize) {
    // SAFETY: `keys` holds `scores.len()` keys of `q.len()` floats,
    // `stride` apart (contract 2).
    unsafe { dots::<f32, 4, 1>(&mut [scores], keys.as_ptr(), stride, [q]) };
}

impl Vector for Neon {
    type V = float32x4_t;
    /// How many lanes, from the first, exist.
    type Mask = usize;
    const LANES: usize = 4;
    const PAIRS: usize = 4;

    vector_ops! { "neon";
        add(a, b) = vaddq_f32(a, b); sub(a, b) = vsubq_f32(a, b);
        mul(a, b) = vmulq_f32(a, b); div(a, b) = vdivq_f32(a, b);
        min(a, b) = vminq_f32(a, b); max(a, b) = vmaxq_f32(a, b);
        fmadd(a, b, c) = vfmaq_f32(c, a, b); fnmadd(a, b, c) = vfmsq_f32(c, a, b);
        round(v) = vrndnq_f32(v);
        hsum(v) -> f32 = vaddvq_f32(v); hmax(v) -> f32 = vmaxvq_f32(v);
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn mask(n: usize) -> usize {
        n
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: the caller's: four readable floats.
        unsafe { vld1q_f32(p) }
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller's: four writable floats.
        unsafe { vst1q_f32(p, v) }
    }

    /// Through a zeroed copy, as the floats may be unaligned weights.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load_part(p: *const f32, valid: usize) -> float32x4_t {
        // SAFETY: the caller's: `valid` readable floats.
        unsafe { load(p, valid) }
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn store_part(p: *mut f32, valid: usize, v: float32x4_t) {
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` has room for four floats, and the caller's:
        // `valid` writable floats at `p`.
        unsafe {
            vst1q_f32(lanes.as_mut_ptr(), v);
            core::ptr::copy_nonoverlapping(lanes.as_ptr(), p, valid);
        }
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }

    /// `2^n` built in the exponent bits.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn scale2(p: float32x4_t, n: float32x4_t) -> float32x4_t {
        let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
        vmulq_f32(p, vreinterpretq_f32_s32(e))
    }

    /// Lanes past `valid` become −∞, which no maximum keeps.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn max_part(acc: float32x4_t, v: float32x4_t, valid: usize) -> float32x4_t {
        vmaxq_f32(
            acc,
            vbslq_f32(first(valid), v, vdupq_n_f32(f32::NEG_INFINITY)),
        )
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn add_part(acc: float32x4_t, v: float32x4_t, valid: usize) -> float32x4_t {
        vaddq_f32(acc, vbslq_f32(first(valid), v, vdupq_n_f32(0.0)))
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn exp(x: float32x4_t) -> float32x4_t {
        // SAFETY: this level's features, which the caller guarantees.
        unsafe { vector::exp::<Self>(x) }
    }

    /// Four pairs, split into their first and second values (`vld2q`),
    /// each rotated with the twin's fused multiply-adds.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn rope(p: *mut f32, cos: *const f32, sin: *const f32) {
        // SAFETY: the caller's: four cosines and sines, eight values.
        unsafe {
            let pairs = vld2q_f32(p);
            let (c, s) = (vld1q_f32(cos), vld1q_f32(sin));
            let r0 = vfmaq_f32(vnegq_f32(vmulq_f32(pairs.1, s)), pairs.0, c);
            let r1 = vfmaq_f32(vmulq_f32(pairs.1, c), pairs.0, s);
            vst2q_f32(p, float32x4x2_t(r0, r1));
        }
    }

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn ggml_exp(x: float32x4_t) -> float32x4_t {
        let c = scalar::GGML_EXP.map(|b| vdupq_n_f32(f32::from_bits(b)));
        let shift = vdupq_n_f32(12_582_912.0);
        let z = vfmaq_f32(shift, x, c[0]);
        let n = vsubq_f32(z, shift);
        let b = vfmsq_f32(vfmsq_f32(x, n, c[1]), n, c[2]);
        let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
        let k = vreinterpretq_f32_u32(vaddq_u32(e, vdupq_n_u32(1.0f32.to_bits())));
        let u = vmulq_f32(b, b);
        let inner = vfmaq_f32(vfmaq_f32(c[6], c[5], b), vfmaq_f32(c[4], c[3], b), u);
        let j = vfmaq_f32(vmulq_f32(c[7], b), inner, u);
        let near = vfmaq_f32(k, k, j);
        let far = vcagtq_f32(n, vdupq_n_f32(126.0));
        if vmaxvq_u32(far) == 0 {
            return near;
        }
        let down = vcleq_f32(n, vdupq_n_f32(0.0));
        let g = vandq_u32(down, vdupq_n_u32(0x8200_0000));
        let s1 = vreinterpretq_f32_u32(vaddq_u32(g, vdupq_n_u32(0x7f00_0000)));
        let s2 = vreinterpretq_f32_u32(vsubq_u32(e, g));
        let split = vmulq_f32(vfmaq_f32(s2, s2, j), s1);
        let beyond = vcagtq_f32(n, vdupq_n_f32(192.0));
        vbslq_f32(beyond, vmulq_f32(s1, s1), vbslq_f32(far, split, near))
    }
}

/// Lanes `0..valid` set.
#[target_feature(enable = "neon")]
#[inline]
fn first(valid: usize) -> uint32x4_t {
    // SAFETY: the array holds four lanes.
    let lane = unsafe { vld1q_u32([0u32, 1, 2, 3].as_ptr()) };
    vcltq_u32(lane, vdupq_n_u32(valid as u32))
}

vector_kernels!("neon", Neon, 4);
