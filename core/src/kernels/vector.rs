//! The f32 kernels that every SIMD level computes alike: the elementwise
//! ones, softmax, RoPE, the attention output over an f32 cache and the
//! bandwidth probe; and the driver of the f16 attention's last pass
//! ([`mix_f16`]). They are written once, as `#[inline(always)]` functions
//! generic over the level's [`Vector`]: its lanes, its way with a partial
//! last vector (AVX2: masked loads and stores; AVX-512: mask registers;
//! NEON: zero-padded copies) and the few operations whose instructions
//! differ, each implemented with exactly the intrinsics the level's own
//! kernel used before, so that each level's results are bitwise what they
//! were: the same operations, lane by lane, in the same order. Each level
//! lists them among its `#[target_feature]` functions (`vector_kernels!`).

use crate::kernels::expf::*;
use crate::kernels::scalar;

/// A level's vector of f32 lanes, implemented by a zero-sized level type
/// whose methods carry the level's `#[target_feature]`.
///
/// # Safety
///
/// Every method: the contract of the implementing ISA's module (the CPU
/// has the level's features), and pointers to as many readable or
/// writable floats as the lanes it loads or stores.
pub(super) trait Vector {
    /// The vector.
    type V: Copy;
    /// The lanes of a partial vector that exist.
    type Mask: Copy;
    /// Floats per vector.
    const LANES: usize;
    /// Pairs of values that [`Vector::rope`] rotates at once.
    const PAIRS: usize;

    /// Lanes `0..n` (n ≤ `LANES`).
    unsafe fn mask(n: usize) -> Self::Mask;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Lanes `m` from `p`, zero elsewhere; only those lanes are read.
    unsafe fn load_part(p: *const f32, m: Self::Mask) -> Self::V;
    /// Lanes `m` of `v` to `p`; only those lanes are written.
    unsafe fn store_part(p: *mut f32, m: Self::Mask, v: Self::V);
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, rounded once.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c − a·b`, rounded once.
    unsafe fn fnmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// The scalar twin's `ggml_expf`, lane by lane, bit for bit.
    unsafe fn ggml_exp(x: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Each lane rounded to the nearest integer, ties to even.
    unsafe fn round(v: Self::V) -> Self::V;
    /// `p · 2^n` for whole `n` in the range of normal exponents.
    unsafe fn scale2(p: Self::V, n: Self::V) -> Self::V;
    /// `acc` with lanes `m` replaced by their maximum with `v`'s.
    unsafe fn max_part(acc: Self::V, v: Self::V, m: Self::Mask) -> Self::V;
    /// `acc` with `v`'s lanes `m` added.
    unsafe fn add_part(acc: Self::V, v: Self::V, m: Self::Mask) -> Self::V;
    /// The sum of the lanes, in the level's order.
    unsafe fn hsum(v: Self::V) -> f32;
    /// The largest lane.
    unsafe fn hmax(v: Self::V) -> f32;
    /// Rotates the `PAIRS` pairs at `p` by the angles whose cosines and
    /// sines are at `cos` and `sin`.
    unsafe fn rope(p: *mut f32, cos: *const f32, sin: *const f32);
    /// [`exp`] with the level's features: a call that the closures of
    /// [`map`], which have none, leave to the function they are inlined
    /// into, so that they stay small enough to be inlined.
    unsafe fn exp(x: Self::V) -> Self::V;

    /// The end of [`sum`]: the streams' sums, then the `n` floats left at
    /// `rest`, one by one.
    #[inline(always)]
    unsafe fn sum_streams<const S: usize>(acc: [Self::V; S], rest: *const f32, n: usize) -> f32 {
        // SAFETY: the caller's: `n` floats at `rest`.
        unsafe {
            let mut s = acc.iter().map(|&a| Self::hsum(a)).sum::<f32>();
            for j in 0..n {
                s += rest.add(j).read_unaligned();
            }
            s
        }
    }
}

/// The [`Vector`] methods that are one expression of a level's intrinsics,
/// as a table: `name(args) = expression`, the arguments vectors and the
/// result a vector unless `-> type` says otherwise; each becomes a method
/// with the level's `$features`.
macro_rules! vector_ops {
    ($features:literal; $($name:ident($($arg:ident),+) $(-> $ret:ty)? = $body:expr;)+) => {$(
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $name($($arg: Self::V),+) -> vector_ops!(@ret $($ret)?) {
            $body
        }
    )+};
    (@ret) => { Self::V };
    (@ret $ret:ty) => { $ret };
}
pub(super) use vector_ops;

/// The public functions of these kernels for level `$level` of the ISA
/// whose module invokes this, compiled with `$features`; `sum` reads
/// `$streams` streams.
macro_rules! vector_kernels {
    ($features:literal, $level:ident, $streams:expr) => {
        level_wrappers! { $features;
            fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32)
                = $crate::kernels::vector::rmsnorm::<$level>;
            fn softmax(x: &mut [f32]) = $crate::kernels::vector::softmax::<$level>;
            fn swiglu(h: &mut [f32], g: &[f32]) = $crate::kernels::vector::swiglu::<$level>;
            fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) = $crate::kernels::vector::rope::<$level>;
            fn add(y: &mut [f32], x: &[f32]) = $crate::kernels::vector::add::<$level>;
            fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize)
                = $crate::kernels::vector::attention_mix::<$level>;
            fn sum(data: &[u8]) -> f32 = $crate::kernels::vector::sum::<$level, { $streams }>;
        }
    };
}
pub(super) use vector_kernels;

/// The SIMD `exp` ([`crate::kernels::expf`]): `2^n · p(r)` for
/// `x = n·ln 2 + r`.
///
/// # Safety
///
/// The level's features.
#[inline(always)]
pub(super) unsafe fn exp<L: Vector>(x: L::V) -> L::V {
    // SAFETY: the caller's.
    unsafe {
        let x = L::min(L::max(x, L::splat(EXP_LO)), L::splat(EXP_HI));
        let n = L::round(L::mul(x, L::splat(LOG2E)));
        let r = L::fnmadd(n, L::splat(LN2_HI), x);
        let r = L::fnmadd(n, L::splat(LN2_LO), r);
        let mut p = L::splat(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = L::fmadd(p, r, L::splat(*c));
        }
        let p = L::fmadd(p, L::mul(r, r), L::add(r, L::splat(1.0)));
        L::scale2(p, n)
    }
}

/// Applies `f` to `x` a vector at a time; the last, partial vector loads
/// and stores only its own lanes. `f` gets the vector, its offset and its
/// lanes.
///
/// # Safety
///
/// The level's features.
#[inline(always)]
unsafe fn map<L: Vector>(x: &mut [f32], mut f: impl FnMut(L::V, usize, L::Mask) -> L::V) {
    let (p, n) = (x.as_mut_ptr(), x.len());
    let mut i = 0;
    // SAFETY: the level's features (the caller's); full vectors are values
    // `i..i + LANES` with `i + LANES ≤ n`, the last one lanes `0..n − i`.
    unsafe {
        while i + L::LANES <= n {
            L::store(p.add(i), f(L::load(p.add(i)), i, L::mask(L::LANES)));
            i += L::LANES;
        }
        if i < n {
            let m = L::mask(n - i);
            L::store_part(p.add(i), m, f(L::load_part(p.add(i), m), i, m));
        }
    }
}

/// # Safety
///
/// The level's features, and the lengths `kernels::rmsnorm` checks.
#[inline(always)]
pub(super) unsafe fn rmsnorm<L: Vector>(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
    let scale = scalar::rms_scale(x, eps);
    out.copy_from_slice(x);
    let w = weight.as_ptr().cast::<f32>();
    // SAFETY: the caller's; the weight holds as many floats as `out`, and
    // `m` covers only those.
    unsafe {
        let sv = L::splat(scale);
        map::<L>(out, |v, i, m| {
            L::mul(L::load_part(w.add(i), m), L::mul(sv, v))
        });
    }
}

/// # Safety
///
/// The level's features.
#[inline(always)]
pub(super) unsafe fn softmax<L: Vector>(x: &mut [f32]) {
    // SAFETY: the caller's.
    unsafe {
        let mut mv = L::splat(f32::NEG_INFINITY);
        map::<L>(x, |v, _, m| {
            mv = L::max_part(mv, v, m);
            v
        });
        let max = L::splat(L::hmax(mv));
        let mut sv = L::splat(0.0);
        map::<L>(x, |v, _, m| {
            let e = L::exp(L::sub(v, max));
            sv = L::add_part(sv, e, m);
            e
        });
        let s = L::splat(L::hsum(sv));
        map::<L>(x, |v, _, _| L::div(v, s));
    }
}

/// # Safety
///
/// The level's features, and `g` as long as `h`.
#[inline(always)]
pub(super) unsafe fn swiglu<L: Vector>(h: &mut [f32], g: &[f32]) {
    let gp = g.as_ptr();
    // SAFETY: the caller's; `m` covers only values of `g`.
    unsafe {
        let (zero, one) = (L::splat(0.0), L::splat(1.0));
        map::<L>(h, |v, i, m| {
            let silu = L::div(v, L::add(one, L::ggml_exp(L::sub(zero, v))));
            L::mul(silu, L::load_part(gp.add(i), m))
        });
    }
}

/// # Safety
///
/// The level's features, and `x` as long as `y`.
#[inline(always)]
pub(super) unsafe fn add<L: Vector>(y: &mut [f32], x: &[f32]) {
    let xp = x.as_ptr();
    // SAFETY: the caller's; `m` covers only values of `x`.
    unsafe { map::<L>(y, |v, i, m| L::add(v, L::load_part(xp.add(i), m))) };
}

/// # Safety
///
/// The level's features, and `v.len()` a multiple of `2 · cos.len()`,
/// `sin` as long as `cos`.
#[inline(always)]
pub(super) unsafe fn rope<L: Vector>(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in v.chunks_exact_mut(2 * half) {
        let mut i = 0;
        while i + L::PAIRS <= half {
            // SAFETY: the caller's; pairs `i..i + PAIRS` exist in the head,
            // `cos` and `sin`.
            unsafe {
                let (c, s) = (cos.as_ptr().add(i), sin.as_ptr().add(i));
                L::rope(head.as_mut_ptr().add(2 * i), c, s);
            }
            i += L::PAIRS;
        }
        scalar::rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
    }
}

/// One head's attention output, `V` vectors of it accumulated in registers
/// while walking the positions in order.
///
/// # Safety
///
/// The level's features, and `values` holding `out.len()` values for each
/// of `weights.len()` positions, `stride` apart.
#[inline(always)]
pub(super) unsafe fn attention_mix<L: Vector>(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
    stride: usize,
) {
    const V: usize = 4;
    let (n, vp, o) = (out.len(), values.as_ptr(), out.as_mut_ptr());
    for i in (0..n).step_by(L::LANES * V) {
        let active = (n - i).div_ceil(L::LANES).min(V);
        // SAFETY: the caller's; the lanes loaded and stored are values
        // (and outputs) below `n` of a position.
        unsafe {
            let mut masks = [L::mask(L::LANES); V];
            masks[active - 1] = L::mask((n - i - L::LANES * (active - 1)).min(L::LANES));
            let mut acc = [L::splat(0.0); V];
            for (t, &a) in weights.iter().enumerate() {
                let (a, v) = (L::splat(a), vp.add(t * stride + i));
                for j in 0..active {
                    acc[j] = L::fmadd(a, L::load_part(v.add(L::LANES * j), masks[j]), acc[j]);
                }
            }
            for j in 0..active {
                L::store_part(o.add(i + L::LANES * j), masks[j], acc[j]);
            }
        }
    }
}

/// The sum of the little-endian floats in `data`, read as `S` streams of
/// whole vectors (as matvec reads rows), then the rest.
///
/// # Safety
///
/// The level's features.
#[inline(always)]
pub(super) unsafe fn sum<L: Vector, const S: usize>(data: &[u8]) -> f32 {
    let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
    let part = n / S / L::LANES * L::LANES;
    // SAFETY: the caller's; stream `k` reads floats `k·part..(k + 1)·part`,
    // the rest those from `S·part` to `n`: all inside `data`.
    unsafe {
        let mut acc = [L::splat(0.0); S];
        for i in (0..part).step_by(L::LANES) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = L::add(*a, L::load(p.add(k * part + i)));
            }
        }
        L::sum_streams(acc, p.add(S * part), n - S * part)
    }
}

/// A level's vectors for the last pass of the f16 attention ([`mix_f16`]).
pub(super) trait MixF16 {
    /// Values per vector.
    const LANES: usize;

    /// `C·LANES` output values from `out` on, each accumulated in a
    /// register across all positions (the scalar twin's per-value loop),
    /// then normalised.
    ///
    /// # Safety
    ///
    /// The level's features; `out` has room for the values, and `values`
    /// holds them for every position, `f.stride` apart.
    unsafe fn mix<const C: usize>(out: *mut f32, values: *const u16, f: &Factors<'_>);
}

/// What the f16 attention's last pass weighs the values with: the factors
/// of the scalar twin's `online_softmax` (each position's rescale and
/// weight, and the normalisation `inv`), and the positions' `stride`.
pub(super) struct Factors<'a> {
    pub stride: usize,
    pub rescale: &'a [f32],
    pub weight: &'a [f32],
    pub inv: f32,
}

/// The f16 attention's last pass, given the softmax [`Factors`]: `C` vectors of
/// outputs at a time held in registers (each one's update is a chain of
/// latency, multiply-add and round trip through f16, that only other
/// chains can fill), then one, then the scalar twin for the values left.
///
/// # Safety
///
/// The level's features, and the lengths `kernels::attention_f16` checks.
#[inline(always)]
pub(super) unsafe fn mix_f16<M: MixF16, const C: usize>(
    out: &mut [f32],
    values: &[u16],
    stride: usize,
    (rescale, weight): (&[f32], &[f32]),
    inv: f32,
) {
    let f = &Factors {
        stride,
        rescale,
        weight,
        inv,
    };
    let (n, o, v) = (out.len(), out.as_mut_ptr(), values.as_ptr());
    let mut i = 0;
    // SAFETY: the caller's; outputs `i..i + C·LANES` (or `i + LANES`)
    // exist, and so do those values of every position.
    unsafe {
        while i + C * M::LANES <= n {
            M::mix::<C>(o.add(i), v.add(i), f);
            i += C * M::LANES;
        }
        while i + M::LANES <= n {
            M::mix::<1>(o.add(i), v.add(i), f);
            i += M::LANES;
        }
    }
    for (j, o) in out.iter_mut().enumerate().skip(i) {
        *o = scalar::mix_f16(values, f.stride, j, f.rescale, f.weight) * f.inv;
    }
}
