//! aarch64 NEON twins of the scalar kernels (4 lanes; NEON is part of every
//! aarch64 target). Matrix rows are processed four at a time with two
//! accumulators each, so one load of `x` serves four rows and eight FMA
//! chains hide the FMA latency of Cortex-A76 and Apple cores. The
//! matrix×matrix kernels run the same code for up to four inputs at once,
//! so each weight vector or block is loaded (and unpacked) once for them
//! all; where that would need more accumulators than the 32 registers
//! hold, they take fewer rows per pass.
//!
//! The int8 kernels (Q8_0, Q4_0, Q4_K, Q6_K) compute every integer dot
//! product exactly and then repeat the scalar twin's float operations lane
//! by lane, one row per lane, so they give the scalar results bit for bit.
//! They are compiled twice: here with widening multiplies, and in [`dot`]
//! with `sdot`. The f16 kernels convert with `fcvtl`/`fcvtn` through inline
//! assembly, since the `float16x4_t` intrinsics are not stable.
//!
//! # Safety (every function here)
//!
//! The caller guarantees NEON (an `Isa` of the NEON level; dotprod too for
//! [`dot`]) and the slice lengths the entry points in `kernels` check.
//! `vld1*` and `vst1*` are unaligned accesses on aarch64, so weight bytes may
//! have any alignment; pointers into them are never dereferenced as wider
//! types, only read through those, `read_unaligned` or byte arrays.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::kernels::expf::*;
use crate::kernels::scalar::rope_pairs;
use crate::kernels::Input;

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

/// Four f16 values (bits) as f32, exactly.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn widen(h: uint16x4_t) -> float32x4_t {
    let f: float32x4_t;
    asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) f, in(vreg) h, options(pure, nomem, nostack));
    f
}

/// Four f32 values as f16 bits, rounded to nearest even (the default
/// rounding mode) and overflowing to infinity, as `tensor::f32_to_f16` does
/// for every value but NaN.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn narrow(f: float32x4_t) -> uint16x4_t {
    let h: uint16x4_t;
    asm!("fcvtn {0:v}.4h, {1:v}.4s", out(vreg) h, in(vreg) f, options(pure, nomem, nostack));
    h
}

/// `x` rounded to the nearest f16, kept as f32 (the scalar `round16`).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn round16(x: float32x4_t) -> float32x4_t {
    widen(narrow(x))
}

/// The little-endian f16 at `p` (any alignment) as f32.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn f16_at(p: *const u8) -> f32 {
    let h = u16::from_le_bytes(p.cast::<[u8; 2]>().read());
    let f: f32;
    asm!("fcvt {0:s}, {1:h}", out(vreg) f, in(vreg) h, options(pure, nomem, nostack));
    f
}

/// Matrix element types that `rows` widens to f32, four at a time. Their
/// pointers may be unaligned: elements are only read with unaligned loads.
trait Element: Copy {
    /// The four elements at `p`.
    unsafe fn load4(p: *const Self) -> float32x4_t;
    /// The element at `p`.
    unsafe fn load1(p: *const Self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn load1(p: *const f32) -> f32 {
        p.read_unaligned()
    }
}

/// IEEE half precision, as its bits.
impl Element for u16 {
    #[inline(always)]
    unsafe fn load4(p: *const u16) -> float32x4_t {
        widen(vld1_u16(p))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u16) -> f32 {
        f16_at(p.cast())
    }
}

/// `R` dot products with each of `T` inputs `x` (length `n`) of rows
/// `stride` apart at `w`, each weight vector loaded (and widened) once for
/// all `T`. Every (row, input) has its own two accumulators, so its sum
/// does not depend on `R` or `T`.
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

/// `out[t][r] = row_r · x[t]` for rows `stride` apart at `w`, `R` at a
/// time, the rows left over one at a time.
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
    for r in (0..whole).step_by(R) {
        crate::kernels::store_rows(out, r, &rows::<E, R, T>(w.add(r * stride), stride, n, xp));
    }
    for r in whole..count {
        crate::kernels::store_rows(out, r, &rows::<E, 1, T>(w.add(r * stride), stride, n, xp));
    }
}

#[target_feature(enable = "neon")]
pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
    dots::<f32, 4, 1>(&mut [out], w.as_ptr().cast(), x.len(), [x]);
}

#[target_feature(enable = "neon")]
pub unsafe fn matvec_f16(out: &mut [f32], w: &[u8], x: &[f32]) {
    dots::<u16, 4, 1>(&mut [out], w.as_ptr().cast(), x.len(), [x]);
}

/// [`matvec_f32`] for several inputs, bitwise: two rows by up to four
/// inputs per pass, so the sixteen accumulators, the inputs' eight vectors
/// and the two of weights fit the 32 registers.
#[target_feature(enable = "neon")]
pub unsafe fn matmul_f32(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    let w = w.as_ptr().cast::<f32>();
    each_tile!(out, x, T, _ => {
        let x = x.map(Input::f32s);
        dots::<f32, 2, T>(out, w, x[0].len(), x);
    });
}

/// [`matvec_f16`] for several inputs, bitwise, each weight vector widened
/// once for a tile of them (two rows per pass, as [`matmul_f32`]).
#[target_feature(enable = "neon")]
pub unsafe fn matmul_f16(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    let w = w.as_ptr().cast::<u16>();
    each_tile!(out, x, T, _ => {
        let x = x.map(Input::f32s);
        dots::<u16, 2, T>(out, w, x[0].len(), x);
    });
}

#[target_feature(enable = "neon")]
pub unsafe fn attention_scores(
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scale: f32,
) {
    dots::<f32, 4, 1>(&mut [&mut *scores], keys.as_ptr(), stride, [q]);
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

/// Loads `valid` (≤ 4) f16 values from `p` as f32, zero-filling the rest,
/// without reading past them.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_f16(p: *const u16, valid: usize) -> float32x4_t {
    if valid == 4 {
        return widen(vld1_u16(p));
    }
    let mut buf = [0u16; 4];
    core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), valid);
    widen(vld1_u16(buf.as_ptr()))
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
    let scale = crate::kernels::scalar::rms_scale(x, eps);
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

// ---- Half precision: the KV cache ----

/// `fcvtn` keeps a NaN's sign and top payload bits; `tensor::f32_to_f16`
/// keeps only the sign and the quiet bit, so NaN lanes lose the rest.
#[target_feature(enable = "neon")]
pub unsafe fn f32_to_f16(out: &mut [u16], x: &[f32]) {
    let payload = vdup_n_u16(0x01ff);
    let convert = |v: float32x4_t| {
        let nan = vmovn_u32(vmvnq_u32(vceqq_f32(v, v)));
        vbic_u16(narrow(v), vand_u16(nan, payload))
    };
    let (o, xp, n) = (out.as_mut_ptr(), x.as_ptr(), x.len());
    let mut i = 0;
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

/// The scalar twin's `dot_f16`: exact f32 products of the f16-rounded `q`
/// and `k`, summed in eight f64 lanes (index mod 8) held as four registers
/// of two, joined as the twin's `join8`. Zero padding past the end adds
/// `+0.0`, which changes no lane (none can be `-0.0`: each starts `+0.0`).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dot_f16(q: &[f32], k: *const u16) -> f64 {
    let (n, qp) = (q.len(), q.as_ptr());
    let mut acc = [vdupq_n_f64(0.0); 4];
    let mut i = 0;
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
    let mut lanes = [0.0f64; 8];
    for (j, a) in acc.iter().enumerate() {
        vst1q_f64(lanes.as_mut_ptr().add(2 * j), *a);
    }
    crate::kernels::scalar::join8(lanes)
}

/// `4·C` output values from `out` on, each accumulated in a register
/// across all positions (the scalar twin's per-value loop, four values per
/// vector), then normalised by `inv`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn mix_f16x4<const C: usize>(
    out: *mut f32,
    values: *const u16,
    stride: usize,
    rescale: &[f32],
    weight: &[f32],
    inv: f32,
) {
    let mut acc = [vdupq_n_f32(0.0); C];
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

/// The scalar twin in its three passes: the scores (independent dot
/// products, which the core overlaps), the softmax factors, then the
/// values, four vectors of outputs at a time held in registers. A NaN may
/// keep payload bits the scalar rounding clears: fixing that up on every
/// update would cost more than a NaN cache is worth.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_f16(
    out: &mut [f32],
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    stride: usize,
    positions: usize,
    scale: f32,
    scratch: &mut [f32],
) {
    let (rescale, weight) = scratch[..2 * positions].split_at_mut(positions);
    for (t, s) in rescale.iter_mut().enumerate() {
        *s = dot_f16(q, keys.as_ptr().add(t * stride)) as f32 * scale;
    }
    let inv = crate::kernels::scalar::online_softmax(rescale, weight);
    let (n, o, v) = (out.len(), out.as_mut_ptr(), values.as_ptr());
    let mut i = 0;
    while i + 16 <= n {
        mix_f16x4::<4>(o.add(i), v.add(i), stride, rescale, weight, inv);
        i += 16;
    }
    while i + 4 <= n {
        mix_f16x4::<1>(o.add(i), v.add(i), stride, rescale, weight, inv);
        i += 4;
    }
    for (j, o) in out.iter_mut().enumerate().skip(i) {
        *o = crate::kernels::scalar::mix_f16(values, stride, j, rescale, weight) * inv;
    }
}

// ---- Quantizing the input ----

/// Sixteen i32 lanes (four vectors) as bytes in order, saturating.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn narrow_i8(q: [int32x4_t; 4]) -> int8x16_t {
    let lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
    let hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
    vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
}

/// The scalar twin's `quantize_q8_0`, equal to it for finite input:
/// `fcvtns` rounds half to even.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    for (b, db) in d.iter_mut().enumerate() {
        let p = x.as_ptr().add(32 * b);
        let v: [float32x4_t; 8] = core::array::from_fn(|k| vld1q_f32(p.add(4 * k)));
        let amax = vmaxvq_f32(
            v.iter()
                .fold(vdupq_n_f32(0.0), |m, &x| vmaxq_f32(m, vabsq_f32(x))),
        );
        *db = crate::tensor::f16_to_f32(crate::tensor::f32_to_f16(amax / 127.0));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let q = v.map(|x| vcvtnq_s32_f32(vmulq_n_f32(x, id)));
        let out = qs.as_mut_ptr().add(32 * b);
        vst1q_s8(out, narrow_i8([q[0], q[1], q[2], q[3]]));
        vst1q_s8(out.add(16), narrow_i8([q[4], q[5], q[6], q[7]]));
    }
}

/// The scalar twin's `quantize_q8_k`, equal to it for finite input.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_k(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    for (b, db) in d.iter_mut().enumerate() {
        let xb = &x[256 * b..256 * b + 256];
        let (q, sums) = (
            &mut qs[256 * b..256 * b + 256],
            &mut bsums[16 * b..16 * b + 16],
        );
        let p = xb.as_ptr();
        let mut m = vdupq_n_f32(0.0);
        for k in 0..64 {
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(p.add(4 * k))));
        }
        let amax = vmaxvq_f32(m);
        let Some(&max) = xb.iter().find(|v| v.abs() == amax).filter(|_| amax != 0.0) else {
            *db = 0.0;
            q.fill(0);
            sums.fill(0);
            continue;
        };
        let iscale = -127.0 / max;
        for (g, s) in sums.iter_mut().enumerate() {
            let v: [int32x4_t; 4] = core::array::from_fn(|k| {
                let x = vld1q_f32(p.add(16 * g + 4 * k));
                vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(x, iscale)), vdupq_n_s32(127))
            });
            vst1q_s8(q.as_mut_ptr().add(16 * g), narrow_i8(v));
            *s = vaddvq_s32(vaddq_s32(vaddq_s32(v[0], v[1]), vaddq_s32(v[2], v[3]))) as i16;
        }
        *db = 1.0 / iscale;
    }
}

// ---- Integer blocks ----

/// Rows per pass of the int8 kernels: one per lane.
const ROWS: usize = 4;

/// Rows per pass of the Q8_0 and Q4_0 tiles, which keep eight lane sums
/// (two registers) per row and input: two rows by four inputs hold 16 of
/// the 32 registers, leaving room for the inputs' eight and the weights.
const BLOCKS32_TILE_ROWS: usize = 2;

/// Lane `k` is the sum of `v[k]`'s lanes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn hsum4(v: [int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]))
}

/// Lane `k` of the first is the sum of `v[k]`'s lanes 0 and 1, of the
/// second the sum of its lanes 2 and 3.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn hsum2x2(v: [int32x4_t; 4]) -> (int32x4_t, int32x4_t) {
    let (p, q) = (vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
    (vuzp1q_s32(p, q), vuzp2q_s32(p, q))
}

/// `scalar::hsum8` of eight lanes held as two vectors.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn hsum8(a: [float32x4_t; 2]) -> f32 {
    let r = vaddq_f32(a[0], a[1]);
    vpadds_f32(vadd_f32(vget_low_f32(r), vget_high_f32(r)))
}

/// Each vector's lanes (one row per lane) as an array.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn lanes<const T: usize>(v: [float32x4_t; T]) -> [[f32; ROWS]; T] {
    v.map(|v| {
        let mut lanes = [0.0f32; ROWS];
        vst1q_f32(lanes.as_mut_ptr(), v);
        lanes
    })
}

/// Lane `k` is the f16 at byte `at` of `rows[k]`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn f16_lanes(rows: [*const u8; ROWS], at: usize) -> float32x4_t {
    let h = rows.map(|r| u16::from_le_bytes(r.add(at).cast::<[u8; 2]>().read()));
    widen(vld1_u16(h.as_ptr()))
}

/// The unsigned bytes of `v` as signed ones (all below 128 here).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// The 32 values of the Q8_0 block at `b`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q8_0_values(b: *const u8) -> [int8x16_t; 2] {
    let q = b.add(2).cast::<i8>();
    [vld1q_s8(q), vld1q_s8(q.add(16))]
}

/// The 32 values of the Q4_0 block at `b`: nibbles stored as value + 8,
/// the low ones first.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q4_0_values(b: *const u8) -> [int8x16_t; 2] {
    let (low, eight) = (vdupq_n_u8(0xf), vdupq_n_s8(8));
    let q = vld1q_u8(b.add(2));
    let lo = vsubq_s8(s8(vandq_u8(q, low)), eight);
    [lo, vsubq_s8(s8(vshrq_n_u8::<4>(q)), eight)]
}

/// `scalar::q4k_scales` of the 12 bytes at `s`: the eight scales, then
/// the eight mins.
#[inline]
unsafe fn q4k_scales(s: *const u8) -> (uint8x8_t, uint8x8_t) {
    let w = crate::kernels::scalar::q4k_scale_words(&*s.cast::<[u8; 12]>());
    let pack = |lo: u32, hi: u32| vcreate_u8(u64::from(lo) | (u64::from(hi) << 32));
    (pack(w[0], w[1]), pack(w[2], w[3]))
}

/// The int8 kernels, written once and compiled for both NEON levels: each
/// level supplies `dot16` (`acc` plus the 16 products `a[i]·b[i]`, in some
/// lanes) and `lanes16` (those products summed four by four: lane `l` gets
/// products `4l..4l+4`, the scalar twin's lane sums).
///
/// Each kernel computes `R` rows for `T` inputs: `matvec_*` with `T = 1`,
/// `matmul_*` with a tile of inputs ([`each_tile!`]), so that each weight
/// block is loaded and unpacked once per tile. Every (row, input) gets the
/// float operations it gets alone, in the same order, and integer sums are
/// exact in any order: tiles give matvec's results bit for bit.
macro_rules! int8_kernels {
    ($features:literal) => {
        /// `out[t][r]` for every row of `w`, `R` rows per pass: `f` gets
        /// the starts of a pass's rows and returns each input's results
        /// for them. A short last pass repeats its last row (computed in
        /// full) and keeps only its own rows.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn by_rows<const R: usize, const T: usize>(
            out: &mut [&mut [f32]],
            w: &[u8],
            f: impl Fn([*const u8; R]) -> [[f32; R]; T],
        ) {
            let count = out[0].len();
            let row_bytes = w.len() / count.max(1);
            for first in (0..count).step_by(R) {
                let valid = (count - first).min(R);
                let rows = core::array::from_fn(|k| {
                    w.as_ptr().add((first + k.min(valid - 1)) * row_bytes)
                });
                for (o, v) in out.iter_mut().zip(f(rows)) {
                    o[first..first + valid].copy_from_slice(&v[..valid]);
                }
            }
        }

        /// The scalar twin's `matvec_q8g` for `T` inputs, the group size a
        /// multiple of 16: per group the exact integer sum of each row (one
        /// per lane) and input, then `runq`'s float step for each, group
        /// after group. `scales[k]` holds row `k`'s scales.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q8g_rows<const T: usize>(
            rows: [*const u8; ROWS],
            scales: [*const u8; ROWS],
            x: [Input<'_>; T],
            gs: usize,
        ) -> [[f32; ROWS]; T] {
            let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
            let mut val = [vdupq_n_f32(0.0); T];
            for g in 0..d[0].len() {
                let sums = rows.map(|r| {
                    let mut acc = [vdupq_n_s32(0); T];
                    for at in (gs * g..gs * (g + 1)).step_by(16) {
                        let w = vld1q_s8(r.add(at).cast());
                        for (a, q) in acc.iter_mut().zip(qs) {
                            *a = dot16(*a, w, vld1q_s8(q.add(at)));
                        }
                    }
                    acc
                });
                let ws = scales.map(|s| f32::from_le_bytes(s.add(4 * g).cast::<[u8; 4]>().read()));
                let ws = vld1q_f32(ws.as_ptr());
                for (t, v) in val.iter_mut().enumerate() {
                    let isum = vcvtq_f32_s32(hsum4(sums.map(|s| s[t])));
                    *v = vaddq_f32(*v, vmulq_n_f32(vmulq_f32(isum, ws), d[t][g]));
                }
            }
            lanes(val)
        }

        /// [`q8g_rows`] over every row; `scales` holds each row's, one per
        /// group of `gs` values.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q8g_by_rows<const T: usize>(
            out: &mut [&mut [f32]],
            w: &[u8],
            scales: &[u8],
            x: [Input<'_>; T],
            gs: usize,
        ) {
            // A row's scales, from where its values start.
            let at = |r: *const u8| {
                let values = r.offset_from(w.as_ptr()) as usize;
                scales.as_ptr().add(4 * (values / gs))
            };
            by_rows::<ROWS, T>(out, w, |rows| q8g_rows(rows, rows.map(at), x, gs));
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q8g(
            out: &mut [f32],
            w: &[u8],
            scales: &[u8],
            qs: &[i8],
            d: &[f32],
            gs: usize,
        ) {
            let x = [Input::Q8G { qs, d, group: gs }];
            q8g_by_rows(&mut [out], w, scales, x, gs);
        }

        /// [`matvec_q8g`] for several inputs, bitwise, each weight vector
        /// loaded once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q8g(
            out: &mut [&mut [f32]],
            w: &[u8],
            scales: &[u8],
            x: &[Input<'_>],
            gs: usize,
        ) {
            each_tile!(out, x, T, _ => {
                q8g_by_rows(out, w, scales, x, gs);
            });
        }

        /// The scalar twin's `matvec_blocks32` for `R` rows and `T` inputs:
        /// per block, the eight lane sums of each (row, input) scaled with
        /// one fused multiply-add each into its eight running sums, then
        /// `hsum8`. `values` loads a block's 32 weights, once for all `T`
        /// inputs.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn blocks32_rows<const R: usize, const T: usize>(
            rows: [*const u8; R],
            x: [Input<'_>; T],
            block_bytes: usize,
            values: impl Fn(*const u8) -> [int8x16_t; 2],
        ) -> [[f32; R]; T] {
            let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
            let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; R];
            for b in 0..d[0].len() {
                let xq = qs.map(|q| [vld1q_s8(q.add(32 * b)), vld1q_s8(q.add(32 * b + 16))]);
                for (a, r) in acc.iter_mut().zip(rows) {
                    let block = r.add(block_bytes * b);
                    let [w0, w1] = values(block);
                    let wd = f16_at(block);
                    for ((a, x), d) in a.iter_mut().zip(&xq).zip(d) {
                        let s = wd * d[b];
                        a[0] = vfmaq_n_f32(a[0], vcvtq_f32_s32(lanes16(w0, x[0])), s);
                        a[1] = vfmaq_n_f32(a[1], vcvtq_f32_s32(lanes16(w1, x[1])), s);
                    }
                }
            }
            core::array::from_fn(|t| core::array::from_fn(|k| hsum8(acc[k][t])))
        }

        /// [`blocks32_rows`] over every row, `R` at a time.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn blocks32<const R: usize, const T: usize>(
            out: &mut [&mut [f32]],
            w: &[u8],
            x: [Input<'_>; T],
            block_bytes: usize,
            values: impl Fn(*const u8) -> [int8x16_t; 2],
        ) {
            by_rows::<R, T>(out, w, |rows| blocks32_rows(rows, x, block_bytes, &values));
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q8_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
            let x = [Input::Q8_0 { qs, d }];
            blocks32::<ROWS, 1>(&mut [out], w, x, 34, |b| q8_0_values(b));
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q4_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
            let x = [Input::Q8_0 { qs, d }];
            blocks32::<ROWS, 1>(&mut [out], w, x, 18, |b| q4_0_values(b));
        }

        /// [`matvec_q8_0`] for several inputs, bitwise, each weight block
        /// loaded once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q8_0(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            each_tile!(out, x, T, _ => {
                blocks32::<BLOCKS32_TILE_ROWS, T>(out, w, x, 34, |b| q8_0_values(b));
            });
        }

        /// [`matvec_q4_0`] for several inputs, bitwise, each block's
        /// nibbles unpacked once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q4_0(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            each_tile!(out, x, T, _ => {
                blocks32::<BLOCKS32_TILE_ROWS, T>(out, w, x, 18, |b| q4_0_values(b));
            });
        }

        /// One row's Q4_K block `b`, unpacked once, against the input
        /// blocks `x`: for each input, lanes 0 and 1 sum to
        /// `Σ_j scale_j·(q_j·x_j)` and lanes 2 and 3 to `Σ_j min_j·Σx_j`
        /// (`xsums` holds its eight `Σx_j`), so that four rows' results
        /// take one register per input.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q4k_block<const T: usize>(
            b: *const u8,
            x: [*const i8; T],
            xsums: [int16x8_t; T],
        ) -> [int32x4_t; T] {
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
                        let lo = dot16(zero, l0, vld1q_s8(x));
                        p[2 * c] = dot16(lo, l1, vld1q_s8(x.add(16)));
                        let hi = dot16(zero, h0, vld1q_s8(x.add(32)));
                        p[2 * c + 1] = dot16(hi, h1, vld1q_s8(x.add(48)));
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

        /// Per block, the exact integer sums of each row and input (the
        /// mins through the input's `bsums`), then the scalar twin's float
        /// operations with one row per lane.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q4k_rows<const T: usize>(
            rows: [*const u8; ROWS],
            x: [Input<'_>; T],
        ) -> [[f32; ROWS]; T] {
            let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
            let bsums = x.map(|x| x.bsums().as_ptr());
            let mut sum = [vdupq_n_f32(0.0); T];
            for b in 0..d[0].len() {
                let x = qs.map(|q| q.add(256 * b));
                let xsums = bsums.map(|s| {
                    let s = s.add(16 * b);
                    vpaddq_s16(vld1q_s16(s), vld1q_s16(s.add(8)))
                });
                let sums = rows.map(|r| q4k_block(r.add(144 * b), x, xsums));
                let (dw, dmin) = (f16_lanes(rows, 144 * b), f16_lanes(rows, 144 * b + 2));
                for (t, s) in sum.iter_mut().enumerate() {
                    let (isum, msum) = hsum2x2(sums.map(|s| s[t]));
                    let (dw, dmin) = (vmulq_n_f32(dw, d[t][b]), vmulq_n_f32(dmin, d[t][b]));
                    let (isum, msum) = (vcvtq_f32_s32(isum), vcvtq_f32_s32(msum));
                    *s = vaddq_f32(*s, vsubq_f32(vmulq_f32(dw, isum), vmulq_f32(dmin, msum)));
                }
            }
            lanes(sum)
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q4k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
            let x = [Input::Q8K { qs, d, bsums }];
            by_rows::<ROWS, 1>(&mut [out], w, |rows| q4k_rows(rows, x));
        }

        /// [`matvec_q4k`] for several inputs, bitwise, each block unpacked
        /// once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q4k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            each_tile!(out, x, T, _ => {
                by_rows::<ROWS, T>(out, w, |rows| q4k_rows(rows, x));
            });
        }

        /// One row's Q6_K block `b`, unpacked once, against the input
        /// blocks `x`, whose sums of each 16 values are `xsums`: for each
        /// input, lanes summing to `Σ_j scale_j·(q_j·x_j)`. The values are
        /// dotted as stored (0..64) and the offset of 32 comes off through
        /// the sums, as llama.cpp does.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q6k_block<const T: usize>(
            b: *const u8,
            x: [*const i8; T],
            xsums: [[int16x8_t; 2]; T],
        ) -> [int32x4_t; T] {
            let (low, high, zero) = (vdupq_n_u8(0xf), vdupq_n_u8(0x30), vdupq_n_s32(0));
            let scales = vld1q_s8(b.add(192).cast::<i8>());
            let s = [vmovl_s8(vget_low_s8(scales)), vmovl_high_s8(scales)];
            let mut isum = [zero; T];
            for n in 0..2 {
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
                    let p: [int32x4_t; 8] =
                        core::array::from_fn(|i| dot16(zero, s8(q[i]), vld1q_s8(x.add(16 * i))));
                    let lo = hsum4([p[0], p[1], p[2], p[3]]);
                    *isum = vmlaq_s32(*isum, lo, vmovl_s16(vget_low_s16(s[n])));
                    let hi = hsum4([p[4], p[5], p[6], p[7]]);
                    *isum = vmlaq_s32(*isum, hi, vmovl_high_s16(s[n]));
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

        /// Per block, the exact integer sum of each row and input, then the
        /// scalar twin's `sum += (d_w·d_x)·isum` with one row per lane.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q6k_rows<const T: usize>(
            rows: [*const u8; ROWS],
            x: [Input<'_>; T],
        ) -> [[f32; ROWS]; T] {
            let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
            let bsums = x.map(|x| x.bsums().as_ptr());
            let mut sum = [vdupq_n_f32(0.0); T];
            for b in 0..d[0].len() {
                let x = qs.map(|q| q.add(256 * b));
                let xsums = bsums.map(|s| {
                    let s = s.add(16 * b);
                    [vld1q_s16(s), vld1q_s16(s.add(8))]
                });
                let isums = rows.map(|r| q6k_block(r.add(210 * b), x, xsums));
                let dw = f16_lanes(rows, 210 * b + 208);
                for (t, s) in sum.iter_mut().enumerate() {
                    let isum = hsum4(isums.map(|i| i[t]));
                    let scale = vmulq_n_f32(dw, d[t][b]);
                    *s = vaddq_f32(*s, vmulq_f32(scale, vcvtq_f32_s32(isum)));
                }
            }
            lanes(sum)
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q6k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
            let x = [Input::Q8K { qs, d, bsums }];
            by_rows::<ROWS, 1>(&mut [out], w, |rows| q6k_rows(rows, x));
        }

        /// [`matvec_q6k`] for several inputs, bitwise, each block unpacked
        /// once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q6k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            each_tile!(out, x, T, _ => {
                by_rows::<ROWS, T>(out, w, |rows| q6k_rows(rows, x));
            });
        }
    };
}

int8_kernels!("neon");

/// Widening multiplies and pairwise adds: four instructions for 16 bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    vpadalq_s16(acc, vmull_high_s8(a, b))
}

/// Widening multiplies, then pairs of pairs: five instructions.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn lanes16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let low = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    vpaddq_s32(low, vpaddlq_s16(vmull_high_s8(a, b)))
}

/// The dotprod level: the int8 kernels with `sdot`, whose four lanes are
/// exactly the scalar twin's lane sums; the NEON level's kernels otherwise.
pub mod dot {
    pub use super::{
        add, attention_f16, attention_mix, attention_scores, f32_to_f16, matmul_f16, matmul_f32,
        matvec_f16, matvec_f32, quantize_q8_0, quantize_q8_k, rmsnorm, rope, softmax, sum, swiglu,
    };

    use super::{
        f16_at, f16_lanes, hsum2x2, hsum4, hsum8, lanes, q4_0_values, q4k_scales, q8_0_values, s8,
        BLOCKS32_TILE_ROWS, ROWS,
    };
    use crate::kernels::Input;
    use core::arch::aarch64::*;
    use core::arch::asm;

    int8_kernels!("neon,dotprod");

    /// One `sdot` (its intrinsic, `vdotq_s32`, is not stable).
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot16(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }

    /// `sdot` sums exactly the scalar twin's groups of four.
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn lanes16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        dot16(vdupq_n_s32(0), a, b)
    }
}
