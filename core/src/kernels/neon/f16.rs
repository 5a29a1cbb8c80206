//! The NEON half-precision KV cache, which both levels share: filling it,
//! and attention over it as llama.cpp computes it (the scalar twin's
//! `attention_f16`), bit for bit but for NaN payloads.

use core::arch::aarch64::*;

use super::{load, narrow, round16, widen};
use crate::kernels::vector::{mix_f16, Factors, MixF16};
use crate::kernels::{scalar, F16Attention};

/// `fcvtn` keeps a NaN's sign and top payload bits; `tensor::f32_to_f16`
/// keeps only the sign and the quiet bit, so NaN lanes lose the rest.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn f32_to_f16(out: &mut [u16], x: &[f32]) {
    let payload = vdup_n_u16(0x01ff);
    let convert = |v: float32x4_t| {
        let nan = vmovn_u32(vmvnq_u32(vceqq_f32(v, v)));
        vbic_u16(narrow(v), vand_u16(nan, payload))
    };
    let (o, xp, n) = (out.as_mut_ptr(), x.as_ptr(), x.len());
    let mut i = 0;
    // SAFETY: `out` and `x` are equally long (contract 2); full vectors
    // are values `i..i + 4` with `i + 4 ≤ n`, the tail the `n − i` left.
    unsafe {
        while i + 4 <= n {
            vst1_u16(o.add(i), convert(vld1q_f32(xp.add(i))));
            i += 4;
        }
        if i < n {
            let mut buf = [0u16; 4];
            vst1_u16(buf.as_mut_ptr(), convert(load(xp.add(i), n - i)));
            out[i..].copy_from_slice(&buf[..n - i]);
        }
    }
}

/// Loads `valid` (≤ 4) f16 values from `p` as f32, zero-filling the rest,
/// without reading past them.
///
/// # Safety
///
/// `p` points at `valid` readable values.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_f16(p: *const u16, valid: usize) -> float32x4_t {
    // SAFETY: the caller's: `valid` values at `p`.
    unsafe {
        if valid == 4 {
            return widen(vld1_u16(p));
        }
        let mut buf = [0u16; 4];
        core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), valid);
        widen(vld1_u16(buf.as_ptr()))
    }
}

/// The scalar twin's `dot_f16`: exact f32 products of the f16-rounded `q`
/// and `k`, summed in eight f64 lanes (index mod 8) held as four registers
/// of two, joined as the twin's `join8`. Zero padding past the end adds
/// `+0.0`, which changes no lane (none can be `-0.0`: each starts `+0.0`).
///
/// # Safety
///
/// `k` points at `q.len()` values.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dot_f16(q: &[f32], k: *const u16) -> f64 {
    let (n, qp) = (q.len(), q.as_ptr());
    let mut acc = [vdupq_n_f64(0.0); 4];
    let mut i = 0;
    // SAFETY: each load reads the values of `q` and `k` from `at` on that
    // are below `n`.
    unsafe {
        while i < n {
            for half in 0..2 {
                let at = i + 4 * half;
                let valid = n.saturating_sub(at).min(4);
                let p = match valid {
                    0 => vdupq_n_f32(0.0),
                    _ => vmulq_f32(round16(load(qp.add(at), valid)), load_f16(k.add(at), valid)),
                };
                acc[2 * half] = vaddq_f64(acc[2 * half], vcvt_f64_f32(vget_low_f32(p)));
                acc[2 * half + 1] = vaddq_f64(acc[2 * half + 1], vcvt_high_f64_f32(p));
            }
            i += 8;
        }
    }
    let mut lanes = [0.0f64; 8];
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: `lanes` has room for the two values written at `2j`.
        unsafe { vst1q_f64(lanes.as_mut_ptr().add(2 * j), *a) };
    }
    scalar::join8(lanes)
}

/// The NEON f16 attention's vectors: four values, converted with `fcvtl`.
struct F16x4;

impl MixF16 for F16x4 {
    const LANES: usize = 4;

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn mix<const C: usize>(out: *mut f32, values: *const u16, f: &Factors<'_>) {
        let (stride, rescale, weight, inv) = (f.stride, f.rescale, f.weight, f.inv);
        let mut acc = [vdupq_n_f32(0.0); C];
        // SAFETY: the loads read values `4c..4c + 4` (c < C) of a position,
        // the stores as many outputs: all inside them, as the caller guarantees.
        unsafe {
            for (t, (&ms, &vs)) in rescale.iter().zip(weight).enumerate() {
                if ms != 1.0 {
                    for a in &mut acc {
                        *a = round16(vmulq_n_f32(*a, ms));
                    }
                }
                let v = values.add(t * stride);
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = round16(vfmaq_n_f32(*a, widen(vld1_u16(v.add(4 * c))), vs));
                }
            }
            for (c, a) in acc.iter().enumerate() {
                vst1q_f32(out.add(4 * c), vmulq_n_f32(*a, inv));
            }
        }
    }
}

/// The scalar twin in its three passes: the scores (independent dot
/// products, which the core overlaps), the softmax factors, then the
/// values ([`mix_f16`]), four vectors of outputs at a time. A NaN may
/// keep payload bits the scalar rounding clears: fixing that up on every
/// update would cost more than a NaN cache is worth.
///
/// # Safety
///
/// The [contract](super#safety).
#[target_feature(enable = "neon")]
pub unsafe fn attention_f16(out: &mut [f32], a: F16Attention<'_>, scratch: &mut [f32]) {
    let (positions, stride) = (a.positions, a.stride);
    let (rescale, weight) = scratch[..2 * positions].split_at_mut(positions);
    for (t, s) in rescale.iter_mut().enumerate() {
        // SAFETY: `t < positions`, whose keys the cache holds (contract 2).
        *s = unsafe { dot_f16(a.q, a.keys.as_ptr().add(t * stride)) } as f32 * a.scale;
    }
    let inv = scalar::online_softmax(rescale, weight);
    // SAFETY: the caller's contract.
    unsafe { mix_f16::<F16x4, 4>(out, a.values, stride, (rescale, weight), inv) };
}
