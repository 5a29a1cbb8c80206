//! The NEON f32 kernels, which both levels share: f32 and f16 weights,
//! attention over an f32 KV cache, and the elementwise kernels.

use core::arch::aarch64::*;

use super::{f16_at, load, widen};
use crate::kernels::expf::*;
use crate::kernels::{scalar, store_rows, Input};

#[target_feature(enable = "neon")]
#[inline]
fn exp(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EXP_LO)), vdupq_n_f32(EXP_HI));
    let n = vrndnq_f32(vmulq_n_f32(x, LOG2E));
    let r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
    let r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
    let mut p = vdupq_n_f32(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = vfmaq_f32(vdupq_n_f32(*c), p, r);
    }
    let p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), p, vmulq_f32(r, r));
    let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(p, vreinterpretq_f32_s32(e))
}

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

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn attention_scores(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scale: f32,
) {
    // SAFETY: `keys` holds `scores.len()` keys of `q.len()` floats,
    // `stride` apart (contract 2).
    unsafe { dots::<f32, 4, 1>(&mut [&mut *scores], keys.as_ptr(), stride, [q]) };
    for s in scores {
        *s /= scale;
    }
}

/// Accumulates up to `V` vectors of the output in registers while walking
/// the positions in order; a partial last vector goes through `load`.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
    const V: usize = 4;
    let (n, vp) = (out.len(), values.as_ptr());
    for i in (0..n).step_by(4 * V) {
        let active = (n - i).div_ceil(4).min(V);
        let mut valid = [4; V];
        valid[active - 1] = (n - i - 4 * (active - 1)).min(4);
        let mut acc = [vdupq_n_f32(0.0); V];
        for (t, &a) in weights.iter().enumerate() {
            for j in 0..active {
                // SAFETY: the values `i + 4j..` that are valid (below `n`)
                // exist for every position (contract 2).
                let v = unsafe { load(vp.add(t * stride + i + 4 * j), valid[j]) };
                acc[j] = vfmaq_n_f32(acc[j], v, a);
            }
        }
        for j in 0..active {
            let mut lanes = [0.0f32; 4];
            // SAFETY: `lanes` has room for the four floats written.
            unsafe { vst1q_f32(lanes.as_mut_ptr(), acc[j]) };
            out[i + 4 * j..i + 4 * j + valid[j]].copy_from_slice(&lanes[..valid[j]]);
        }
    }
}

/// Applies `f` to 4 lanes at a time; the tail goes through a padded copy so
/// every element sees the same vector code. `f` gets the offset and the
/// number of valid lanes.
#[target_feature(enable = "neon")]
#[inline]
fn map(x: &mut [f32], pad: f32, mut f: impl FnMut(float32x4_t, usize, usize) -> float32x4_t) {
    let (p, n) = (x.as_mut_ptr(), x.len());
    let mut i = 0;
    // SAFETY: full vectors are values `i..i + 4` with `i + 4 ≤ n`; the
    // tail copies the `n − i` values left, to and from a buffer of four.
    unsafe {
        while i + 4 <= n {
            vst1q_f32(p.add(i), f(vld1q_f32(p.add(i)), i, 4));
            i += 4;
        }
        if i < n {
            let valid = n - i;
            let mut buf = [pad; 4];
            core::ptr::copy_nonoverlapping(p.add(i), buf.as_mut_ptr(), valid);
            vst1q_f32(buf.as_mut_ptr(), f(vld1q_f32(buf.as_ptr()), i, valid));
            core::ptr::copy_nonoverlapping(buf.as_ptr(), p.add(i), valid);
        }
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
    let scale = scalar::rms_scale(x, eps);
    out.copy_from_slice(x);
    let w = weight.as_ptr().cast::<f32>();
    map(out, 0.0, |v, i, valid| {
        // SAFETY: the weight holds as many floats as `out` (contract 2).
        let wv = unsafe { load(w.add(i), valid) };
        vmulq_f32(wv, vmulq_n_f32(v, scale))
    });
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn softmax(x: &mut [f32]) {
    let mut mv = vdupq_n_f32(f32::NEG_INFINITY);
    map(x, f32::NEG_INFINITY, |v, _, _| {
        mv = vmaxq_f32(mv, v);
        v
    });
    let max = vdupq_n_f32(vmaxvq_f32(mv));
    // SAFETY: the array holds four lanes.
    let lane = unsafe { vld1q_u32([0u32, 1, 2, 3].as_ptr()) };
    let mut sv = vdupq_n_f32(0.0);
    map(x, 0.0, |v, _, valid| {
        let e = exp(vsubq_f32(v, max));
        let keep = vcltq_u32(lane, vdupq_n_u32(valid as u32));
        sv = vaddq_f32(sv, vbslq_f32(keep, e, vdupq_n_f32(0.0)));
        e
    });
    let s = vdupq_n_f32(vaddvq_f32(sv));
    map(x, 0.0, |v, _, _| vdivq_f32(v, s));
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn swiglu(h: &mut [f32], g: &[f32]) {
    let (one, gp) = (vdupq_n_f32(1.0), g.as_ptr());
    map(h, 0.0, |v, i, valid| {
        let sig = vdivq_f32(one, vaddq_f32(one, exp(vnegq_f32(v))));
        // SAFETY: `g` is as long as `h` (contract 2).
        vmulq_f32(vmulq_f32(v, sig), unsafe { load(gp.add(i), valid) })
    });
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in v.chunks_exact_mut(2 * half) {
        let mut i = 0;
        while i + 4 <= half {
            // SAFETY: `i + 4 ≤ half`, the length of `cos` and `sin` (contract
            // 2), and the head holds `2 · half` values.
            unsafe {
                let p = head.as_mut_ptr().add(2 * i);
                let pairs = vld2q_f32(p);
                let (c, s) = (
                    vld1q_f32(cos.as_ptr().add(i)),
                    vld1q_f32(sin.as_ptr().add(i)),
                );
                let r0 = vfmsq_f32(vmulq_f32(pairs.0, c), pairs.1, s);
                let r1 = vfmaq_f32(vmulq_f32(pairs.1, c), pairs.0, s);
                vst2q_f32(p, float32x4x2_t(r0, r1));
            }
            i += 4;
        }
        scalar::rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
    }
}

/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn add(y: &mut [f32], x: &[f32]) {
    let xp = x.as_ptr();
    // SAFETY: `x` is as long as `y` (contract 2).
    map(y, 0.0, |v, i, valid| {
        vaddq_f32(v, unsafe { load(xp.add(i), valid) })
    });
}

/// Four concurrent streams, as matvec reads four rows at once.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn sum(data: &[u8]) -> f32 {
    const STREAMS: usize = 4;
    let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
    let part = n / STREAMS / 4 * 4;
    let mut acc = [vdupq_n_f32(0.0); STREAMS];
    // SAFETY: stream `k` reads floats `k·part..(k + 1)·part`, the tail
    // those from `STREAMS·part` to `n`: all inside `data`.
    unsafe {
        for i in (0..part).step_by(4) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = vaddq_f32(*a, vld1q_f32(p.add(k * part + i)));
            }
        }
        let mut s = acc.iter().map(|&a| vaddvq_f32(a)).sum::<f32>();
        for j in STREAMS * part..n {
            s += p.add(j).read_unaligned();
        }
        s
    }
}
