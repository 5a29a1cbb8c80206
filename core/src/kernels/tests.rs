//! Every SIMD twin against the scalar specification, on seeded random inputs
//! of every size 1..=300 (all tails of 4-, 8- and 16-lane vectors) and the
//! stories110M shapes, with weight slices at byte offsets 1–3 so no load
//! may assume alignment.
//!
//! Bounds. With u = 2⁻²⁴ (f32 unit roundoff), summing n products in any
//! order is off from the exact sum by at most n·u·Σ|wᵢxᵢ| (Higham's γₙ), so
//! two orders differ by at most 2·n·u·Σ|wᵢxᵢ|: that is the bound for
//! matvec, the attention scores and mix, and sum. Elementwise kernels are bounded per element: a few
//! u relative for RoPE (a fused vs an unfused multiply-add), and
//! for the `exp`-based ones the SIMD `exp`'s 2–3 ulp on top of libm's.

use std::vec::Vec;

use super::*;
use crate::sampler::random_u32;
use crate::tensor::{DType, WeightRef};

const U: f32 = 1.0 / 16_777_216.0;

/// Deterministic uniform values in [-scale, scale).
fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| ((random_u32(&mut state) >> 8) as f32 / 8_388_608.0 - 1.0) * scale)
        .collect()
}

/// `values` as little-endian bytes starting `offset` bytes into the buffer.
fn bytes_at(values: &[f32], offset: usize) -> Vec<u8> {
    let mut b = std::vec![0xA5u8; offset];
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

fn simd_levels() -> impl Iterator<Item = Isa> {
    Isa::available().filter(|&i| i != Isa::SCALAR)
}

#[test]
fn scalar_is_always_available_and_detect_is_the_best() {
    let all: Vec<Isa> = Isa::available().collect();
    assert_eq!(all[0], Isa::SCALAR);
    assert_eq!(Isa::detect(), *all.last().unwrap());
    assert!(Isa::from_target() <= Isa::detect());
}

fn check_matvec(isa: Isa, rows: usize, cols: usize, seed: u64) {
    let w = random(rows * cols, seed, 1.0);
    let x = random(cols, seed + 1, 1.0);
    let offset = 1 + (seed as usize % 3);
    let buf = bytes_at(&w, offset);
    let wr = WeightRef::new("w", DType::F32, rows, cols, &buf[offset..]).unwrap();
    let (mut want, mut got) = (std::vec![0.0; rows], std::vec![0.0; rows]);
    matvec(Isa::SCALAR, &mut want, &wr, &x);
    matvec(isa, &mut got, &wr, &x);
    for r in 0..rows {
        let abs: f32 = (0..cols).map(|c| (w[r * cols + c] * x[c]).abs()).sum();
        let bound = 2.0 * cols as f32 * U * abs + 1e-30;
        let err = (got[r] - want[r]).abs();
        assert!(
            err <= bound,
            "{} matvec {rows}x{cols} row {r}: {err} > {bound}",
            isa.name()
        );
    }
}

#[test]
fn matvec_matches_scalar_on_every_size() {
    for isa in simd_levels() {
        for n in 1..=300 {
            check_matvec(isa, n, n, n as u64);
        }
        for (rows, cols) in [(768, 768), (2048, 768), (768, 2048), (32000, 768)] {
            check_matvec(isa, rows, cols, 7);
        }
    }
}

#[test]
fn sum_matches_scalar() {
    for isa in simd_levels() {
        for n in (1..=300).chain([768, 2048, 4099]) {
            let a = random(n, n as u64, 2.0);
            let offset = n % 4;
            let buf = bytes_at(&a, offset);
            let abs: f32 = a.iter().map(|v| v.abs()).sum();
            let err = (sum(isa, &buf[offset..]) - sum(Isa::SCALAR, &buf[offset..])).abs();
            assert!(
                err <= 2.0 * n as f32 * U * abs + 1e-30,
                "{} sum {n}: {err}",
                isa.name()
            );
        }
    }
}

/// A strided cache of `positions` rows (`stride` apart) for head width `n`.
fn cache(positions: usize, stride: usize, seed: u64) -> Vec<f32> {
    random((positions - 1) * stride + stride, seed, 2.0)
}

#[test]
fn attention_scores_match_scalar() {
    for isa in simd_levels() {
        for n in 1..=300 {
            let (positions, stride) = (1 + n % 37, n + n % 5);
            let keys = cache(positions, stride, n as u64);
            let q = random(n, n as u64 + 1, 2.0);
            let scale = libm::sqrtf(n as f32);
            let (mut want, mut got) = (std::vec![0.0; positions], std::vec![0.0; positions]);
            attention_scores(Isa::SCALAR, &mut want, &q, &keys, stride, scale);
            attention_scores(isa, &mut got, &q, &keys, stride, scale);
            for t in 0..positions {
                let k = &keys[t * stride..][..n];
                let abs: f32 = q.iter().zip(k).map(|(a, b)| (a * b).abs()).sum::<f32>() / scale;
                let err = (got[t] - want[t]).abs();
                let bound = 2.0 * n as f32 * U * abs + 2.0 * U * want[t].abs() + 1e-30;
                assert!(
                    err <= bound,
                    "{} scores n={n} t={t}: {err} > {bound}",
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn attention_mix_matches_scalar() {
    for isa in simd_levels() {
        for n in 1..=300 {
            let (positions, stride) = (1 + n % 41, n + n % 3);
            let values = cache(positions, stride, n as u64);
            let mut weights = random(positions, n as u64 + 2, 4.0);
            softmax(Isa::SCALAR, &mut weights);
            let (mut want, mut got) = (std::vec![0.0; n], std::vec![1.0; n]);
            attention_mix(Isa::SCALAR, &mut want, &weights, &values, stride);
            attention_mix(isa, &mut got, &weights, &values, stride);
            for i in 0..n {
                // The same order of additions, fused or not: within 2·T·u.
                let abs: f32 = (0..positions)
                    .map(|t| (weights[t] * values[t * stride + i]).abs())
                    .sum();
                let err = (got[i] - want[i]).abs();
                let bound = 2.0 * positions as f32 * U * abs + 1e-30;
                assert!(
                    err <= bound,
                    "{} mix n={n} [{i}]: {err} > {bound}",
                    isa.name()
                );
            }
        }
    }
}

/// Elementwise comparison: |got − want| ≤ rel·scale[i] + abs.
fn close(what: &str, isa: Isa, got: &[f32], want: &[f32], scale: &[f32], rel: f32, abs: f32) {
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (g - w).abs();
        let bound = rel * s + abs;
        assert!(
            err <= bound,
            "{} {what} n={} [{i}]: got {g}, want {w}",
            isa.name(),
            got.len()
        );
    }
}

#[test]
fn rmsnorm_matches_scalar() {
    for isa in simd_levels() {
        for n in (1..=300).chain([768, 2048]) {
            let x = random(n, n as u64, 3.0);
            let w = random(n, n as u64 + 1, 1.5);
            let offset = 3 - n % 4;
            let buf = bytes_at(&w, offset);
            let wr = WeightRef::new("norm", DType::F32, 1, n, &buf[offset..]).unwrap();
            let (mut want, mut got) = (std::vec![0.0; n], std::vec![0.0; n]);
            rmsnorm(Isa::SCALAR, &mut want, &x, &wr, 1e-5);
            rmsnorm(isa, &mut got, &x, &wr, 1e-5);
            // The sum of squares may be off by 2n·u relative; the root halves it.
            let scale: Vec<f32> = want.iter().map(|v| v.abs()).collect();
            close(
                "rmsnorm",
                isa,
                &got,
                &want,
                &scale,
                (n as f32 + 8.0) * U,
                0.0,
            );
        }
    }
}

#[test]
fn softmax_matches_scalar() {
    for isa in simd_levels() {
        for n in (1..=300).chain([768, 2048, 32000]) {
            let x = random(n, n as u64, 12.0);
            let (mut want, mut got) = (x.clone(), x.clone());
            softmax(Isa::SCALAR, &mut want);
            softmax(isa, &mut got);
            // Each exp is within 4u of libm's; the normalising sum adds its
            // summation-order error.
            let scale: Vec<f32> = want.iter().map(|v| v.abs()).collect();
            close(
                "softmax",
                isa,
                &got,
                &want,
                &scale,
                (n as f32 + 16.0) * U,
                1e-37,
            );
            let total: f32 = got.iter().sum();
            assert!(
                (total - 1.0).abs() < 1e-3,
                "{} softmax {n} sums to {total}",
                isa.name()
            );
        }
    }
}

#[test]
fn swiglu_matches_scalar() {
    for isa in simd_levels() {
        for n in (1..=300).chain([2048]) {
            let h = random(n, n as u64, 20.0);
            let g = random(n, n as u64 + 3, 4.0);
            let (mut want, mut got) = (h.clone(), h.clone());
            swiglu(Isa::SCALAR, &mut want, &g);
            swiglu(isa, &mut got, &g);
            let scale: Vec<f32> = want.iter().map(|v| v.abs()).collect();
            close("swiglu", isa, &got, &want, &scale, 16.0 * U, 1e-37);
        }
    }
}

#[test]
fn rope_matches_scalar() {
    for isa in simd_levels() {
        for half in 1..=300 {
            let heads = 3;
            let v = random(2 * half * heads, half as u64, 5.0);
            let angles = random(half, half as u64 + 5, 3.0);
            let cos: Vec<f32> = angles.iter().map(|a| libm::cosf(*a)).collect();
            let sin: Vec<f32> = angles.iter().map(|a| libm::sinf(*a)).collect();
            let (mut want, mut got) = (v.clone(), v.clone());
            rope(Isa::SCALAR, &mut want, &cos, &sin);
            rope(isa, &mut got, &cos, &sin);
            // Per pair: |v0·c| + |v1·s| bounds what rounding can move.
            let scale: Vec<f32> = v
                .chunks(2)
                .zip(cos.iter().zip(&sin).cycle())
                .flat_map(|(p, (c, s))| {
                    let m =
                        (p[0] * c).abs() + (p[1] * s).abs() + (p[0] * s).abs() + (p[1] * c).abs();
                    [m, m]
                })
                .collect();
            close("rope", isa, &got, &want, &scale, 4.0 * U, 0.0);
        }
    }
}

#[test]
fn add_matches_scalar_exactly() {
    for isa in simd_levels() {
        for n in (1..=300).chain([768, 2048]) {
            let y = random(n, n as u64, 2.0);
            let x = random(n, n as u64 + 1, 2.0);
            let (mut want, mut got) = (y.clone(), y.clone());
            add(Isa::SCALAR, &mut want, &x);
            add(isa, &mut got, &x);
            assert_eq!(got, want, "{} add {n}: one rounding either way", isa.name());
        }
    }
}

#[test]
fn each_isa_is_bitwise_repeatable() {
    for isa in Isa::available() {
        let (rows, cols) = (37, 203);
        let w = random(rows * cols, 3, 1.0);
        let buf = bytes_at(&w, 2);
        let wr = WeightRef::new("w", DType::F32, rows, cols, &buf[2..]).unwrap();
        let x = random(cols, 4, 1.0);
        let (mut a, mut b) = (std::vec![0.0; rows], std::vec![0.0; rows]);
        matvec(isa, &mut a, &wr, &x);
        matvec(isa, &mut b, &wr, &x);
        assert_eq!(a, b);
    }
}
