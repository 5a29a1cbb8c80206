//! The NEON half-precision KV cache, which both levels share: filling it,
//! and attention over it as llama.cpp computes it (the scalar twin's
//! `attention_f16`), bit for bit but for NaN payloads.

use core::arch::aarch64::*;

use super::{f16_at, load, narrow, round16, widen};
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

/// The scalar twin's `dot_f16`: 32 values a step, each of its four
/// accumulators of eight lanes held as two registers of four and taking
/// one fused product; joined as the twin's `join32`; the values after the
/// last whole step added in f64.
///
/// # Safety
///
/// `k` points at `q.len()` values.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dot_f16(q: &[f32], k: *const u16) -> f32 {
    let n = q.len();
    let whole = n & !31;
    let mut acc = [[vdupq_n_f32(0.0); 2]; 4];
    // SAFETY: the loads read values below `whole ≤ n` of `q` and `k`, the
    // tail values below `n`.
    unsafe {
        for i in (0..whole).step_by(32) {
            for (j, a) in acc.iter_mut().enumerate() {
                for (h, a) in a.iter_mut().enumerate() {
                    let at = i + 8 * j + 4 * h;
                    let qv = round16(vld1q_f32(q.as_ptr().add(at)));
                    *a = vfmaq_f32(*a, widen(vld1_u16(k.add(at))), qv);
                }
            }
        }
        let mut lanes = [[0.0f32; 8]; 4];
        for (l, a) in lanes.iter_mut().zip(&acc) {
            vst1q_f32(l.as_mut_ptr(), a[0]);
            vst1q_f32(l.as_mut_ptr().add(4), a[1]);
        }
        let mut sum = f64::from(scalar::join32(lanes));
        for (j, &x) in q.iter().enumerate().skip(whole) {
            sum += f64::from(scalar::round16(x) * f16_at(k.add(j).cast()));
        }
        sum as f32
    }
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
        *s = unsafe { dot_f16(a.q, a.keys.as_ptr().add(t * stride)) } * a.scale;
    }
    let inv = scalar::online_softmax(rescale, weight);
    // SAFETY: the caller's contract.
    unsafe { mix_f16::<F16x4, 4>(out, a.values, stride, (rescale, weight), inv) };
}
