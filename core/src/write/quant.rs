//! Weight quantizers: f32 rows to the GGML block types, written byte for
//! byte as llama.cpp's reference quantizers write them (`llama-quantize`
//! without an importance matrix), so a file this engine quantizes is the
//! file llama.cpp would have made.
//!
//! Byte identity decides how the code below is written: every search,
//! comparison and float operation follows the reference's order (f32
//! throughout, no fused multiply-adds, products and sums associated left to
//! right as written), and the three roundings the reference mixes are kept
//! apart: `roundf` (halves away from zero) for Q8_0, truncation of `q + 8.5`
//! for Q4_0, and `nearest_int` (halves to even) for the K-quants.
//!
//! llama2.c's v2 groups ([`DType::Q8G`]) follow its `export.py` the same
//! way. Every type reads back with [`kernels::row`](crate::kernels::row).

use crate::tensor::{f16_to_f32, f32_to_f16, DType};

/// Below this largest magnitude a group counts as all zero (llama.cpp's
/// `GROUP_MAX_EPS`): its scale would be meaningless.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Quantizes the row `x` into `out` as `dtype` blocks.
///
/// A [`DType::Q8G`] row is laid out as a one-row matrix: its i8 values,
/// then its f32 scales. A llama2.c v2 file keeps a whole matrix's values
/// before its scales, so its writer splits each row between the two.
///
/// Panics unless `x` is a whole number of blocks and `out` holds exactly
/// their bytes: callers size both from [`DType::bytes`].
pub fn quantize_row(dtype: DType, x: &[f32], out: &mut [u8]) {
    let (values, bytes) = dtype.block();
    assert!(
        values != 0 && x.len().is_multiple_of(values),
        "quantize_row: {} values are not whole {} blocks",
        x.len(),
        dtype.name()
    );
    assert_eq!(
        Some(out.len()),
        dtype.bytes(1, x.len()),
        "quantize_row: output length"
    );
    let block: fn(&[f32], &mut [u8]) = match dtype {
        DType::F32 => |x, out| out.copy_from_slice(&x[0].to_le_bytes()),
        DType::F16 => |x, out| out.copy_from_slice(&f32_to_f16(x[0]).to_le_bytes()),
        DType::Q8_0 => q8_0,
        DType::Q4_0 => q4_0,
        DType::Q4_1 => q4_1,
        DType::Q4K => q4_k,
        DType::Q6K => q6_k,
        DType::Q5_0
        | DType::Q5_1
        | DType::Q5K
        | DType::Q3K
        | DType::Q2K
        | DType::IQ4NL
        | DType::IQ4XS
        | DType::BF16 => todo!("quantizers of the issue-20 types"),
        DType::Q8G { .. } => {
            let (qs, scales) = out.split_at_mut(x.len());
            let groups = x.chunks_exact(values).zip(qs.chunks_exact_mut(values));
            for ((x, qs), s) in groups.zip(scales.chunks_exact_mut(4)) {
                s.copy_from_slice(&q8_group(x, qs).to_le_bytes());
            }
            return;
        }
    };
    for (x, out) in x.chunks_exact(values).zip(out.chunks_exact_mut(bytes)) {
        block(x, out);
    }
}

/// One group of llama2.c's v2 format, as its `export.py` (`quantize_q80`)
/// makes it: scale = largest magnitude / 127 in f32, values divided (not
/// multiplied by an inverse) by it and rounded halves to even, as
/// `torch.round` does; an all-zero group gets scale 0 and zeros. Returns
/// the scale.
fn q8_group(x: &[f32], qs: &mut [u8]) -> f32 {
    let scale = absmax(x) / 127.0;
    for (q, &v) in qs.iter_mut().zip(x) {
        let l = if scale == 0.0 {
            0
        } else {
            nearest_int(v / scale)
        };
        *q = l as i8 as u8;
    }
    scale
}

/// llama.cpp's `nearest_int`: adding 1.5·2²³ pushes the fraction out of the
/// mantissa, so the FPU's rounding (halves to even, unlike `roundf`) leaves
/// the integer in the low 23 bits. Past |x| = 2²² the result is whatever
/// those bits say, as in the reference, whose range assert is compiled out.
fn nearest_int(x: f32) -> i32 {
    ((x + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The largest magnitude.
fn absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() })
}

/// The value of largest magnitude, sign kept; the first one on ties.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn put_f16(out: &mut [u8], x: f32) {
    out.copy_from_slice(&f32_to_f16(x).to_le_bytes());
}

/// Q8_0: the scale maps the largest magnitude to ±127 and the values are
/// rounded with `roundf`, halves away from zero.
fn q8_0(x: &[f32], out: &mut [u8]) {
    let d = absmax(x) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut out[..2], d);
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = libm::roundf(v * id) as i8 as u8;
    }
}

/// Q4_0: the scale is the signed largest value over −8, so that value
/// lands exactly on level 0 (−8) and the opposite extreme on +8, clipped to
/// 7. Levels come from truncating `v/d + 8.5`, which rounds halves up.
fn q4_0(x: &[f32], out: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut out[..2], d);
    let level = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    for (j, o) in out[2..].iter_mut().enumerate() {
        *o = level(x[j]) | level(x[j + 16]) << 4;
    }
}

/// Q4_1: the 16 levels span the block's range, from its minimum (stored
/// beside the scale); the levels come from the unrounded minimum and
/// scale, truncating `(v − min)/d + 0.5`, which rounds halves up.
fn q4_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = x.iter().fold((f32::MAX, -f32::MAX), |(lo, hi), &v| {
        (if v < lo { v } else { lo }, if v > hi { v } else { hi })
    });
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut out[..2], d);
    put_f16(&mut out[2..4], min);
    let level = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
    for (j, o) in out[4..].iter_mut().enumerate() {
        *o = level(x[j]) | level(x[j + 16]) << 4;
    }
}

/// Q4_K: each 32-value sub-block gets an affine fit `scale·q − min`
/// ([`make_qkx2_quants`], weighting values by magnitude); the eight scales
/// and eight mins are then quantized to 6 bits against the block's largest
/// of each, and the values re-quantized against those rounded scales.
fn q4_k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; 256];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = libm::sqrtf(sum_x2 / 32.0);
        let weights: [f32; 32] = core::array::from_fn(|l| av_x + xs[l].abs());
        (scales[j], mins[j]) = make_qkx2_quants(15, xs, &weights, ls, -1.0, 0.1, 20);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv = |max: f32| if max > 0.0 { 63.0 / max } else { 0.0 };
    let (inv_scale, inv_min) = (inv(max_scale), inv(max_min));
    // Wrapping to u8 and then clipping to 63 is the reference's order: a
    // negative scale (possible from the fit) ends up as 63, not 0.
    let six_bits = |v: f32| (nearest_int(v) as u8).min(63);
    let sc: [u8; 8] = core::array::from_fn(|j| six_bits(inv_scale * scales[j]));
    let m: [u8; 8] = core::array::from_fn(|j| six_bits(inv_min * mins[j]));
    let (d16, dmin16) = (f32_to_f16(max_scale / 63.0), f32_to_f16(max_min / 63.0));
    out[0..2].copy_from_slice(&d16.to_le_bytes());
    out[2..4].copy_from_slice(&dmin16.to_le_bytes());
    pack_q4k_scales(&sc, &m, &mut out[4..16]);

    let (d, dmin) = (f16_to_f32(d16), f16_to_f32(dmin16));
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let dj = d * f32::from(sc[j]);
        // A zero scale keeps the fit's levels: they are multiplied by 0
        // anyway, but the reference writes them.
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(m[j]);
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = nearest_int((v + dm) / dj).clamp(0, 15) as u8;
        }
    }
    for (qs, chunk) in out[16..].chunks_exact_mut(32).zip(levels.chunks_exact(64)) {
        for (l, q) in qs.iter_mut().enumerate() {
            *q = chunk[l] | chunk[l + 32] << 4;
        }
    }
}

/// The 12 bytes of six-bit scales and mins, laid out as
/// [`q4k_scale_words`](crate::kernels::scalar::q4k_scale_words) reads them:
/// bytes 0..4 scales 0..4, bytes 4..8 mins 0..4, each with the top two bits
/// of entry `j + 4` in bits 6..8; bytes 8..12 the low four bits of scale
/// (low nibble) and min (high nibble) 4..8.
fn pack_q4k_scales(sc: &[u8; 8], m: &[u8; 8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = sc[j] | (sc[j + 4] >> 4) << 6;
        out[j + 4] = m[j] | (m[j + 4] >> 4) << 6;
        out[j + 8] = (sc[j + 4] & 0xf) | (m[j + 4] & 0xf) << 4;
    }
}

/// llama.cpp's `make_qkx2_quants`: fits `x ≈ scale·L − min` with levels
/// `L` in `0..=nmax` (written to `levels`), minimising the `weights`-
/// weighted squared error, and returns `(scale, min)` with `min ≥ 0`.
///
/// It starts from the range `[min(x, 0), max(x)]` and then tries `nstep + 1`
/// slightly different level spacings `(nmax + rmin + rdelta·is) / range`,
/// solving the weighted least-squares `scale` and `min` for each set of
/// levels and keeping the best. As in the reference, an improvement also
/// moves the offset (and the range) the later candidates are rounded from.
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((l, &v), &w) in levels.iter_mut().zip(x).zip(weights) {
        *l = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
        let diff = scale * f32::from(*l) + min - v;
        best_error += w * (diff * diff);
    }
    let mut aux = [0u8; 32];
    let aux = &mut aux[..x.len()];
    for is in 0..=nstep {
        let iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((a, &v), &w) in aux.iter_mut().zip(x).zip(weights) {
            let l = nearest_int(iscale * (v - min)).clamp(0, nmax);
            *a = l as u8;
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&a, &v), &w) in aux.iter().zip(x).zip(weights) {
                let diff = this_scale * f32::from(a) + this_min - v;
                cur_error += w * (diff * diff);
            }
            if cur_error < best_error {
                levels.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q6_K: each 16-value sub-block gets a symmetric scale from
/// [`make_qx_quants`]; the sixteen scales are quantized to i8 against the
/// one of largest magnitude (which maps to −128, hence the block scale's
/// sign), and the values re-quantized against the rounded scales.
fn q6_k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ((xs, ls), s) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .zip(&mut scales)
    {
        *s = make_qx_quants(32, xs, ls);
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = *s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d16 = f32_to_f16(1.0 / iscale);
    out[208..210].copy_from_slice(&d16.to_le_bytes());
    let d = f16_to_f32(d16);
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        let sc = nearest_int(iscale * scales[j]).min(127) as i8;
        out[192 + j] = sc as u8;
        let dj = d * f32::from(sc);
        // As in Q4_K: a zero scale keeps the first pass's levels.
        if dj == 0.0 {
            continue;
        }
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = (nearest_int(v / dj).clamp(-32, 31) + 32) as u8;
        }
    }
    // Per 128 values: 64 bytes of low nibbles (values l and l + 64 share
    // byte l, values l + 32 and l + 96 byte l + 32), then 32 bytes of high
    // bit pairs (values l, l + 32, l + 64, l + 96 in bits 0, 2, 4, 6).
    let (ql, qh) = out[..192].split_at_mut(128);
    for ((ql, qh), chunk) in ql
        .chunks_exact_mut(64)
        .zip(qh.chunks_exact_mut(32))
        .zip(levels.chunks_exact(128))
    {
        for l in 0..32 {
            let q = [chunk[l], chunk[l + 32], chunk[l + 64], chunk[l + 96]];
            ql[l] = (q[0] & 0xf) | (q[2] & 0xf) << 4;
            ql[l + 32] = (q[1] & 0xf) | (q[3] & 0xf) << 4;
            qh[l] = q[0] >> 4 | (q[1] >> 4) << 2 | (q[2] >> 4) << 4 | (q[3] >> 4) << 6;
        }
    }
}

/// llama.cpp's `make_qx_quants` as Q6_K calls it (`rmse_type` 1, no
/// importance weights): a symmetric scale with levels in `−nmax..nmax`
/// (written to `levels` offset by `nmax`), weighting each value by its
/// square. The signed largest value maps to level −nmax; that spacing and
/// eighteen neighbours `(nmax + 0.1·is) / max`, `is` = ±1..=±9, are tried,
/// and the one maximising `(Σwxl)² / Σwl²` (the least weighted error once
/// the scale is the least-squares `Σwxl / Σwl²`) wins. Returns that scale.
fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [u8]) -> f32 {
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let (w, l) = (v * v, level(iscale, v) as f32);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut store = |iscale: f32| {
        for (o, &v) in levels.iter_mut().zip(x) {
            *o = (level(iscale, v) + nmax) as u8;
        }
    };
    let iscale = -nmax_f / max;
    store(iscale);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax_f + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::WeightRef;
    use std::vec;
    use std::vec::Vec;

    /// Every GGML type, and llama2.c's groups at export.py's default size
    /// and at stories260K's.
    fn types() -> impl Iterator<Item = DType> {
        let groups = [64, 4].map(|group| DType::Q8G { group });
        let done = [
            DType::F32,
            DType::F16,
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q4K,
            DType::Q6K,
        ];
        DType::GGML
            .into_iter()
            .filter(move |t| done.contains(t))
            .chain(groups)
    }

    /// xorshift64*, uniform in [-1, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    fn round_trip(dtype: DType, x: &[f32]) -> Vec<f32> {
        let mut bytes = vec![0u8; dtype.bytes(1, x.len()).unwrap()];
        quantize_row(dtype, x, &mut bytes);
        let mut y = vec![0.0f32; x.len()];
        let w = WeightRef::new("row", dtype, 1, x.len(), &bytes).unwrap();
        crate::kernels::row(&mut y, &w, 0);
        y
    }

    /// The worst error each type may make in a block, as a fraction of the
    /// block's largest magnitude: half a level (Q4_0 a whole one, at the
    /// clipped extreme; the K-quants add their rounded sub-block scales and
    /// a min that spans up to the whole range), plus the f16 scale's rounding.
    fn tolerance(dtype: DType) -> f32 {
        match dtype {
            DType::F32 => 0.0,
            DType::F16 => 1.0 / 2048.0,
            DType::Q8_0 => 0.5 / 127.0 + 1.0 / 1024.0,
            DType::Q4_0 => 1.0 / 8.0 + 1.0 / 1024.0,
            // Half a level of a range up to twice the largest magnitude,
            // plus the f16 minimum's and scale's rounding.
            DType::Q4_1 => 1.0 / 15.0 + 2.0 / 1024.0,
            DType::Q4K => 2.0 / 15.0,
            DType::Q6K => 1.0 / 32.0,
            DType::Q8G { .. } => 0.5 / 127.0 + 1.0e-6,
            _ => unreachable!("no quantizer yet"),
        }
    }

    /// Every value within [`tolerance`] of its block's largest magnitude
    /// (blocks of 256 for the float types), plus `slack`.
    fn check_bounds(dtype: DType, x: &[f32], slack: f32) {
        let y = round_trip(dtype, x);
        let values = dtype.block().0.max(256);
        for (b, (xb, yb)) in x.chunks(values).zip(y.chunks(values)).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let bound = tolerance(dtype) * amax + slack * amax;
            for (i, (&want, &got)) in xb.iter().zip(yb).enumerate() {
                assert!(
                    (want - got).abs() <= bound,
                    "{} block {b} [{i}]: {want} -> {got} (bound {bound})",
                    dtype.name()
                );
            }
        }
    }

    fn random_row(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut rng = Rng(seed);
        (0..n).map(|_| rng.next() * scale).collect()
    }

    #[test]
    fn nearest_int_rounds_halves_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.49, 0),
            (7.51, 8),
            (-63.7, -64),
        ];
        for (x, want) in cases {
            assert_eq!(nearest_int(x), want, "{x}");
        }
    }

    #[test]
    fn q8_0_rounds_halves_away_from_zero() {
        // d = 127/127 = 1, so the values are their own levels.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        let mut out = [0u8; 34];
        quantize_row(DType::Q8_0, &x, &mut out);
        assert_eq!(&out[..5], &[0x00, 0x3c, 127, 3, (-3i8) as u8]);
    }

    #[test]
    fn q8_groups_round_halves_to_even() {
        // scale = 127/127 = 1; then the group's scale follows its values.
        let x = [127.0f32, 2.5, -2.5, 0.5];
        let mut out = [0u8; 8];
        quantize_row(DType::Q8G { group: 4 }, &x, &mut out);
        assert_eq!(&out[..4], &[127, 2, (-2i8) as u8, 0]);
        assert_eq!(&out[4..], &1.0f32.to_le_bytes());
    }

    #[test]
    fn q4_0_puts_the_signed_extreme_on_level_zero() {
        let mut x = [0.0f32; 32];
        x[3] = 2.0;
        x[20] = -4.0;
        let mut out = [0u8; 18];
        quantize_row(DType::Q4_0, &x, &mut out);
        // d = -4 / -8 = 0.5: -4 is level 0, 2 is 8 + 4 = 12, 0 is 8.
        assert_eq!(f16_to_f32(u16::from_le_bytes([out[0], out[1]])), 0.5);
        assert_eq!(out[2 + 3], 12 | 8 << 4);
        assert_eq!(out[2 + 4], 8);
        assert_eq!(out[2 + 7], 0x88);
        // With the positive extreme the opposite end clips: -2 would be 16.
        let mut x = [0.0f32; 32];
        x[0] = 2.0;
        x[1] = -2.0;
        quantize_row(DType::Q4_0, &x, &mut out);
        assert_eq!(out[2] & 0xf, 0);
        assert_eq!(out[3] & 0xf, 15);
    }

    #[test]
    fn random_rows_round_trip_within_bounds() {
        for (seed, scale) in [(1, 1.0), (2, 0.02), (3, 300.0)] {
            let x = random_row(seed, 1024, scale);
            for dtype in types() {
                check_bounds(dtype, &x, 0.0);
            }
        }
    }

    #[test]
    fn edge_rows_round_trip_within_bounds() {
        let n = 512;
        let mut one = vec![0.0f32; n];
        one[77] = -0.75;
        let mut negative = random_row(4, n, 0.1);
        for block in negative.chunks_mut(16) {
            block[5] = -1.0;
        }
        // Values of both signs where the negative side dominates, and a
        // skewed row whose affine fit wants a large min.
        let skewed: Vec<f32> = random_row(5, n, 1.0)
            .iter()
            .map(|v| v.abs() + 10.0)
            .collect();
        let rows: [(&str, Vec<f32>); 6] = [
            ("zeros", vec![0.0; n]),
            ("one nonzero", one),
            ("constant", vec![0.3; n]),
            ("negative constant", vec![-2.0; n]),
            ("negative dominant", negative),
            ("skewed", skewed),
        ];
        for (_, x) in &rows {
            for dtype in types() {
                check_bounds(dtype, x, 0.0);
            }
        }
        // Beyond f16's range only the quantized types still work whose
        // scales are a level's size, not a value's (Q4_1's minimum is one).
        let huge = random_row(6, n, 3.0e5);
        for dtype in types().filter(|&t| t != DType::F16 && t != DType::Q4_1) {
            check_bounds(dtype, &huge, 0.0);
        }
    }

    #[test]
    fn tiny_values_lose_precision_but_never_blow_up() {
        // Scales this small are f16 subnormals (or zero): the relative
        // error bound no longer holds, but no value moves by more than
        // twice the block's largest magnitude (Q4_K's min can survive its
        // scale: values then all land near the block's minimum).
        for scale in [1.0e-5, 1.0e-9] {
            let x = random_row(7, 512, scale);
            for dtype in types() {
                check_bounds(dtype, &x, 2.0);
            }
        }
    }

    #[test]
    fn zeros_stay_zero_and_a_lone_value_survives() {
        let zeros = [0.0f32; 256];
        let mut one = [0.0f32; 256];
        one[200] = 1.0;
        for dtype in types() {
            assert!(round_trip(dtype, &zeros).iter().all(|&v| v == 0.0));
            let y = round_trip(dtype, &one);
            for (i, &v) in y.iter().enumerate() {
                // Only the f16 rounding of the scales touches the value.
                let want = if i == 200 { 1.0 } else { 0.0 };
                assert!(
                    (v - want).abs() <= 1.0 / 1024.0,
                    "{} [{i}] {v}",
                    dtype.name()
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "output length")]
    fn wrong_output_length_panics() {
        quantize_row(DType::Q8_0, &[0.0; 32], &mut [0u8; 33]);
    }

    #[test]
    #[should_panic(expected = "whole")]
    fn partial_block_panics() {
        quantize_row(DType::Q4K, &[0.0; 128], &mut [0u8; 72]);
    }
}
