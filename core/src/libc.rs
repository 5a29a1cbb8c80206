//! `expf`, `sinf` and `cosf` as the GNU C library computes them, bit for
//! bit: llama.cpp calls them in attention's online softmax and in RoPE, and
//! its logits can only be reproduced exactly with the same values (the
//! `libm` crate's, FreeBSD's algorithms, differ in the last bit for a few
//! percent of arguments).
//!
//! The algorithms are glibc's since 2.28 (Szabolcs Nagy's, from Arm's
//! optimized-routines): arithmetic in f64 on a reduced argument, a short
//! polynomial, one rounding to f32 at the end. glibc's x86-64 build picks
//! its FMA variant on every CPU this engine runs on, whose compiler fuses
//! each `a·b + c` below; the fused multiply-adds here are those. The
//! constants are glibc 2.36's tables. Checked against glibc on every finite
//! f32 (the tests repeat it on a sample).

/// `2^(i/32)` as f64 bits, less `i << 47`, for `i` in `0..32`: adding
/// `k << 47` back gives `2^(k/32)` for any integer `k` in range.
pub(crate) const EXP2_TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// 32 / ln 2.
pub(crate) const INV_LN2_32: f64 = f64::from_bits(0x4047_1547_652b_82fe);
/// 1.5 · 2^52: adding it rounds an f64 of magnitude below 2^51 to an integer.
pub(crate) const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
/// The polynomial for `2^(r/32) ≈ 1 + C2·r + C1·r² + C0·r³`, `|r| ≤ 1/2`.
pub(crate) const EXP_POLY: [f64; 3] = [
    f64::from_bits(0x3ebc_6af8_4b91_2394),
    f64::from_bits(0x3f2e_bfce_50fa_c4f3),
    f64::from_bits(0x3f96_2e42_ff0c_52d6),
];

/// Above this `expf` is infinite (`ln 2^128` rounded down).
pub(crate) const EXP_OVERFLOW: f32 = f32::from_bits(0x42b1_7217);
/// Below this `expf` is 0 (`ln 2^-150` rounded up).
pub(crate) const EXP_UNDERFLOW: f32 = f32::from_bits(0xc2cf_f1b4);

/// `e^x`, glibc's value.
pub fn expf(x: f32) -> f32 {
    let abs = x.to_bits() & 0x7fff_ffff;
    if abs >= 0x42b0_0000 {
        // |x| ≥ 88, or not a number.
        if x == f32::NEG_INFINITY {
            return 0.0;
        }
        if abs >= 0x7f80_0000 {
            return x + x;
        }
        if x > EXP_OVERFLOW {
            return f32::INFINITY;
        }
        if x < EXP_UNDERFLOW {
            return 0.0;
        }
    }
    let xd = f64::from(x);
    // k = round(x·32/ln 2); r = x·32/ln 2 − k, both from one product.
    let kd = libm::fma(INV_LN2_32, xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = libm::fma(INV_LN2_32, xd, -kd);
    let s = f64::from_bits(EXP2_TABLE[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = libm::fma(EXP_POLY[0], r, EXP_POLY[1]);
    let y = libm::fma(EXP_POLY[2], r, 1.0);
    let y = libm::fma(z, r * r, y);
    (y * s) as f32
}

/// The polynomials of `sinf` and `cosf` on `[−π/4, π/4]`: `c0..c4` for the
/// cosine (negated in the second set, for the quadrants where it is),
/// `s1..s3` for the sine.
struct SinCos {
    c: [f64; 5],
    s: [f64; 3],
}

const C1: f64 = f64::from_bits(0xbfdf_ffff_fd0c_621c);
const C2: f64 = f64::from_bits(0x3fa5_5553_e106_8f19);
const C3: f64 = f64::from_bits(0xbf56_c087_e89a_359d);
const C4: f64 = f64::from_bits(0x3ef9_9343_027b_f8c3);
const S: [f64; 3] = [
    f64::from_bits(0xbfc5_5554_5995_a603),
    f64::from_bits(0x3f81_1076_0523_0bc4),
    f64::from_bits(0xbf29_94eb_3774_cf24),
];

const POLY: [SinCos; 2] = [
    SinCos {
        c: [1.0, C1, C2, C3, C4],
        s: S,
    },
    SinCos {
        c: [-1.0, -C1, -C2, -C3, -C4],
        s: S,
    },
];

/// The sign of the reduced argument in each quadrant.
const QUADRANT_SIGN: [f64; 4] = [1.0, -1.0, -1.0, 1.0];
/// 2/π · 2^24.
const INV_PIO2_24: f64 = f64::from_bits(0x4164_5f30_6dc9_c883);
/// π/2.
const PIO2: f64 = f64::from_bits(0x3ff9_21fb_5444_2d18);
/// π/2 · 2^-62.
const PIO2_62: f64 = f64::from_bits(0x3c19_21fb_5444_2d18);
/// The bits of 4/π, 24 windows a byte apart.
const INV_PIO4: [u32; 24] = [
    0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529, 0x441529fc,
    0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0, 0x34ddc0db,
    0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041,
];

/// The sine (`odd` false) or cosine (`odd` true) polynomial at `x`.
fn poly(x: f64, x2: f64, p: &SinCos, odd: bool) -> f32 {
    let fma = libm::fma;
    if !odd {
        let x3 = x * x2;
        let s1 = fma(x2, p.s[2], p.s[1]);
        let x7 = x3 * x2;
        let s = fma(x3, p.s[0], x);
        fma(x7, s1, s) as f32
    } else {
        let x4 = x2 * x2;
        let c2 = fma(x2, p.c[4], p.c[3]);
        let c1 = fma(x2, p.c[1], p.c[0]);
        let x6 = x4 * x2;
        let c = fma(x4, p.c[2], c1);
        fma(x6, c2, c) as f32
    }
}

/// The top 12 bits of `|x|`'s encoding: sign-free exponent and 4 bits.
fn top12(x: f32) -> u32 {
    (x.to_bits() >> 20) & 0x7ff
}

/// `sinf` (`cos` false) or `cosf` of `y`.
fn sincos(y: f32, cos: bool) -> f32 {
    let x = f64::from(y);
    if top12(y) < top12(f32::from_bits(0x3f49_0fdb)) {
        // |y| < π/4: no reduction.
        if top12(y) < top12(f32::from_bits(0x3980_0000)) {
            return if cos { 1.0 } else { y };
        }
        return poly(x, x * x, &POLY[0], cos);
    }
    // The remainder, its quadrant `n`, and the quadrant that sets the
    // signs, which for a large |y| also counts y's sign.
    let (r, n, signs) = if top12(y) < top12(120.0) {
        let scaled = x * INV_PIO2_24;
        let n = ((scaled as i32).wrapping_add(0x80_0000)) >> 24;
        (libm::fma(-f64::from(n), PIO2, x), n, n)
    } else if top12(y) < top12(f32::INFINITY) {
        let (r, n) = reduce_large(y.to_bits());
        (r, n, n.wrapping_add((y.to_bits() >> 31) as i32))
    } else {
        return f32::NAN;
    };
    let p = &POLY[usize::from(signs & 2 != 0)];
    let reduced = r * QUADRANT_SIGN[(signs & 3) as usize];
    poly(reduced, r * r, p, (n & 1 != 0) != cos)
}

/// `y` (its f32 bits, |y| ≥ 120) reduced modulo π/2 with 4/π's bits:
/// the remainder and the quadrant (before `y`'s sign is counted).
fn reduce_large(bits: u32) -> (f64, i32) {
    let at = ((bits >> 26) & 15) as usize;
    let shift = (bits >> 23) & 7;
    let xi = ((bits & 0xff_ffff) | 0x80_0000) << shift;
    let r0 = u64::from(xi.wrapping_mul(INV_PIO4[at]));
    let r1 = u64::from(xi) * u64::from(INV_PIO4[at + 4]);
    let r2 = u64::from(xi) * u64::from(INV_PIO4[at + 8]);
    let mut r = ((r2 >> 32) | (r0 << 32)).wrapping_add(r1);
    let n = r.wrapping_add(1 << 61) >> 62;
    r = r.wrapping_sub(n << 62);
    ((r as i64) as f64 * PIO2_62, n as i32)
}

/// `sin y`, glibc's value.
pub fn sinf(y: f32) -> f32 {
    sincos(y, false)
}

/// `cos y`, glibc's value.
pub fn cosf(y: f32) -> f32 {
    sincos(y, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 251st f32 (and the special values) against the C library's own,
    /// which std's `f32` methods call on Linux with glibc.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn equal_to_glibc() {
        let bits = (0..=u32::MAX)
            .step_by(251)
            .chain([0, 0x8000_0000, 0x7f80_0000, 0xff80_0000]);
        for b in bits {
            let x = f32::from_bits(b);
            if x.is_nan() {
                continue;
            }
            assert_eq!(expf(x).to_bits(), x.exp().to_bits(), "expf({x:e})");
            if x.is_finite() {
                assert_eq!(sinf(x).to_bits(), x.sin().to_bits(), "sinf({x:e})");
                assert_eq!(cosf(x).to_bits(), x.cos().to_bits(), "cosf({x:e})");
            }
        }
    }
}
