//! aarch64 NEON twins of the scalar kernels (4 lanes; NEON is part of every
//! aarch64 target). Matrix rows are processed four at a time with two
//! accumulators each, so one load of `x` serves four rows and eight FMA
//! chains hide the FMA latency of Cortex-A76 and Apple cores.
//!
//! # Safety (every function here)
//!
//! The caller guarantees NEON (an `Isa` of the NEON level) and the slice
//! lengths the entry points in `kernels` check. `vld1q_f32`/`vst1q_f32` are
//! unaligned accesses on aarch64, so weight bytes may have any alignment.

use core::arch::aarch64::*;

use crate::kernels::expf::*;
use crate::kernels::scalar::rope_pairs;

#[target_feature(enable = "neon")]
#[inline]
unsafe fn exp(x: float32x4_t) -> float32x4_t {
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

/// `R` dot products with `x` (length `n`) of rows `stride` apart at `w`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn rows<const R: usize>(w: *const f32, stride: usize, n: usize, x: *const f32) -> [f32; R] {
    let mut acc = [[vdupq_n_f32(0.0); 2]; R];
    let mut i = 0;
    while i + 8 <= n {
        let (x0, x1) = (vld1q_f32(x.add(i)), vld1q_f32(x.add(i + 4)));
        for (k, a) in acc.iter_mut().enumerate() {
            let p = w.add(k * stride + i);
            a[0] = vfmaq_f32(a[0], vld1q_f32(p), x0);
            a[1] = vfmaq_f32(a[1], vld1q_f32(p.add(4)), x1);
        }
        i += 8;
    }
    if i + 4 <= n {
        let x0 = vld1q_f32(x.add(i));
        for (k, a) in acc.iter_mut().enumerate() {
            a[0] = vfmaq_f32(a[0], vld1q_f32(w.add(k * stride + i)), x0);
        }
        i += 4;
    }
    let mut out = [0.0; R];
    for (k, o) in out.iter_mut().enumerate() {
        let mut s = vaddvq_f32(vaddq_f32(acc[k][0], acc[k][1]));
        for j in i..n {
            s += w.add(k * stride + j).read_unaligned() * *x.add(j);
        }
        *o = s;
    }
    out
}

/// `out[r] = row_r · x` for rows `stride` apart at `w`, four at a time.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dots(out: &mut [f32], w: *const f32, stride: usize, x: &[f32]) {
    let (n, xp) = (x.len(), x.as_ptr());
    let blocks = out.len() / 4;
    for (b, o) in out.chunks_exact_mut(4).enumerate() {
        o.copy_from_slice(&rows::<4>(w.add(b * 4 * stride), stride, n, xp));
    }
    for (r, o) in out.iter_mut().enumerate().skip(blocks * 4) {
        *o = rows::<1>(w.add(r * stride), stride, n, xp)[0];
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
    dots(out, w.as_ptr().cast::<f32>(), x.len(), x);
}

#[target_feature(enable = "neon")]
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

/// Accumulates up to `V` vectors of the output in registers while walking
/// the positions in order; a partial last vector goes through `load`.
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
            let v = vp.add(t * stride + i);
            for j in 0..active {
                acc[j] = vfmaq_n_f32(acc[j], load(v.add(4 * j), valid[j]), a);
            }
        }
        for j in 0..active {
            let mut lanes = [0.0f32; 4];
            vst1q_f32(lanes.as_mut_ptr(), acc[j]);
            out[i + 4 * j..i + 4 * j + valid[j]].copy_from_slice(&lanes[..valid[j]]);
        }
    }
}

/// Loads `valid` (≤ 4) floats from `p`, zero-filling the rest, without
/// reading past them. `p` may be unaligned (weights), so the tail is copied
/// as bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load(p: *const f32, valid: usize) -> float32x4_t {
    if valid == 4 {
        return vld1q_f32(p);
    }
    let mut buf = [0.0f32; 4];
    core::ptr::copy_nonoverlapping(p.cast::<u8>(), buf.as_mut_ptr().cast::<u8>(), 4 * valid);
    vld1q_f32(buf.as_ptr())
}

/// Applies `f` to 4 lanes at a time; the tail goes through a padded copy so
/// every element sees the same vector code. `f` gets the offset and the
/// number of valid lanes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn map(
    x: &mut [f32],
    pad: f32,
    mut f: impl FnMut(float32x4_t, usize, usize) -> float32x4_t,
) {
    let (p, n) = (x.as_mut_ptr(), x.len());
    let mut i = 0;
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

#[target_feature(enable = "neon")]
pub unsafe fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
    let ss = rows::<1>(x.as_ptr(), 0, x.len(), x.as_ptr())[0];
    let scale = 1.0 / libm::sqrtf(ss / x.len() as f32 + eps);
    out.copy_from_slice(x);
    let w = weight.as_ptr().cast::<f32>();
    map(out, 0.0, |v, i, valid| {
        vmulq_f32(load(w.add(i), valid), vmulq_n_f32(v, scale))
    });
}

#[target_feature(enable = "neon")]
pub unsafe fn softmax(x: &mut [f32]) {
    let mut mv = vdupq_n_f32(f32::NEG_INFINITY);
    map(x, f32::NEG_INFINITY, |v, _, _| {
        mv = vmaxq_f32(mv, v);
        v
    });
    let max = vdupq_n_f32(vmaxvq_f32(mv));
    let lane = vld1q_u32([0u32, 1, 2, 3].as_ptr());
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

#[target_feature(enable = "neon")]
pub unsafe fn swiglu(h: &mut [f32], g: &[f32]) {
    let (one, gp) = (vdupq_n_f32(1.0), g.as_ptr());
    map(h, 0.0, |v, i, valid| {
        let sig = vdivq_f32(one, vaddq_f32(one, exp(vnegq_f32(v))));
        vmulq_f32(vmulq_f32(v, sig), load(gp.add(i), valid))
    });
}

#[target_feature(enable = "neon")]
pub unsafe fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in v.chunks_exact_mut(2 * half) {
        let mut i = 0;
        while i + 4 <= half {
            let p = head.as_mut_ptr().add(2 * i);
            let pairs = vld2q_f32(p);
            let (c, s) = (
                vld1q_f32(cos.as_ptr().add(i)),
                vld1q_f32(sin.as_ptr().add(i)),
            );
            let r0 = vfmsq_f32(vmulq_f32(pairs.0, c), pairs.1, s);
            let r1 = vfmaq_f32(vmulq_f32(pairs.1, c), pairs.0, s);
            vst2q_f32(p, float32x4x2_t(r0, r1));
            i += 4;
        }
        rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn add(y: &mut [f32], x: &[f32]) {
    let xp = x.as_ptr();
    map(y, 0.0, |v, i, valid| vaddq_f32(v, load(xp.add(i), valid)));
}

/// Four concurrent streams, as matvec reads four rows at once.
#[target_feature(enable = "neon")]
pub unsafe fn sum(data: &[u8]) -> f32 {
    const STREAMS: usize = 4;
    let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
    let part = n / STREAMS / 4 * 4;
    let mut acc = [vdupq_n_f32(0.0); STREAMS];
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
