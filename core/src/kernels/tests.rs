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
use crate::rng::random_u32;
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

/// Owned arena space for quantized inputs: `n` int8 values, `scales`
/// scales and a sum per 16 values.
struct Buffers(Vec<i8>, Vec<f32>, Vec<i16>);

impl Buffers {
    fn new(n: usize, scales: usize) -> Buffers {
        Buffers(
            std::vec![0; n],
            std::vec![0.0; scales],
            std::vec![0; n / 16],
        )
    }

    fn view(&mut self) -> InputBuffers<'_> {
        let Buffers(qs, d, bsums) = self;
        InputBuffers { qs, d, bsums }
    }
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
    matvec(Isa::SCALAR, &mut want, &wr, &Input::F32(&x));
    matvec(isa, &mut got, &wr, &Input::F32(&x));
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
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for isa in simd_levels() {
        // Up to 20 (the usual), and up to 200 for exponents past ±126,
        // where the scaling splits, and ±192, where it saturates.
        for (n, scale) in (1..=300)
            .map(|n| (n, 20.0))
            .chain([(2048, 20.0), (4099, 200.0)])
        {
            let h = random(n, n as u64, scale);
            let g = random(n, n as u64 + 3, 4.0);
            let (mut want, mut got) = (h.clone(), h.clone());
            swiglu(Isa::SCALAR, &mut want, &g);
            swiglu(isa, &mut got, &g);
            assert_eq!(bits(&got), bits(&want), "swiglu {} n={n}", isa.name());
        }
    }
}

/// ggml's `expf` at the edges of its ranges: exactly 1 at 0, the split
/// scaling past |n| = 126 still close to `e^x`, saturation past 192.
#[test]
fn ggml_expf_covers_its_ranges() {
    assert_eq!(scalar::ggml_expf(0.0), 1.0);
    for x in [-100.0f32, -90.0, -20.0, -1.0, 0.5, 10.0, 88.0] {
        let (got, want) = (scalar::ggml_expf(x), libm::expf(x));
        assert!((got - want).abs() <= 4.0 * U * want, "{x}: {got} vs {want}");
    }
    assert_eq!(scalar::ggml_expf(-140.0), 0.0);
    assert_eq!(scalar::ggml_expf(140.0), f32::INFINITY);
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
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "rope {} half={half}", isa.name());
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
        matvec(isa, &mut a, &wr, &Input::F32(&x));
        matvec(isa, &mut b, &wr, &Input::F32(&x));
        assert_eq!(a, b);
    }
}

// ---- Quantized weights ----

use crate::tensor::{f16_to_f32, f32_to_f16 as to_f16_bits};

/// Random blocks of `dtype` with sane f16 scales, `rows × cols`, placed at
/// byte `offset` of the returned buffer.
fn random_blocks(dtype: DType, rows: usize, cols: usize, seed: u64, offset: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut byte = || random_u32(&mut state) as u8;
    let bytes = dtype.bytes(rows, cols).unwrap();
    let mut b: Vec<u8> = (0..offset + bytes).map(|_| byte()).collect();
    let scale = |b: &mut [u8], at: usize, v: f32| {
        b[at..at + 2].copy_from_slice(&to_f16_bits(v).to_le_bytes())
    };
    let (_, block) = dtype.block();
    for (i, blk) in b[offset..].chunks_exact_mut(block).enumerate() {
        let v = 0.002 + 0.0001 * (i % 17) as f32;
        match dtype {
            DType::Q8_0 | DType::Q4_0 => scale(blk, 0, v),
            DType::Q4_1 => {
                scale(blk, 0, v);
                scale(blk, 2, -7.5 * v);
            }
            DType::Q4K => {
                scale(blk, 0, v);
                scale(blk, 2, v / 3.0);
            }
            DType::Q6K => scale(blk, 208, v / 4.0),
            DType::Q5_0 | DType::IQ4NL | DType::IQ4XS => scale(blk, 0, v),
            DType::Q5_1 => {
                scale(blk, 0, v);
                scale(blk, 2, -15.5 * v);
            }
            DType::Q5K => {
                scale(blk, 0, v);
                scale(blk, 2, v / 3.0);
            }
            DType::Q3K => scale(blk, 108, v),
            DType::Q2K => {
                scale(blk, 80, v);
                scale(blk, 82, v / 3.0);
            }
            DType::BF16 => {
                let x = crate::tensor::bf16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                if !x.is_finite() || x.abs() > 4.0 {
                    blk.copy_from_slice(&crate::tensor::f32_to_bf16(v).to_le_bytes());
                }
            }
            DType::F16 => {
                let x = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                if !x.is_finite() || x.abs() > 4.0 {
                    scale(blk, 0, v);
                }
            }
            DType::F32 | DType::Q8G { .. } => {}
        }
    }
    if let DType::Q8G { group } = dtype {
        let values = rows * cols;
        for (i, s) in b[offset + values..].chunks_exact_mut(4).enumerate() {
            s.copy_from_slice(
                &(0.002 + 0.0001 * (i % 17) as f32 + group as f32 * 1e-6).to_le_bytes(),
            );
        }
    }
    b
}

/// `Σ|w·x|` of one row, from dequantized weights and (dequantized) input:
/// what rounding in any summation order is bounded by.
fn abs_products(w: &WeightRef<'_>, r: usize, x: &[f32]) -> f32 {
    let mut row = std::vec![0.0f32; w.cols()];
    scalar::dequantize_row(w.dtype(), w.rows_at(r, 1).data(), &mut row);
    row.iter().zip(x).map(|(a, b)| (a * b).abs()).sum()
}

/// The input as the kernels see it, back in f32 (for the bound).
fn input_values(x: &Input<'_>) -> Vec<f32> {
    match *x {
        Input::F32(x) => x.to_vec(),
        Input::Q8_0 { qs, d } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| d[i / 32] * f32::from(q))
            .collect(),
        Input::Q8_1 { qs, d, .. } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| d[i / 32] * f32::from(q))
            .collect(),
        Input::Q8K { qs, d, .. } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| d[i / 256] * f32::from(q))
            .collect(),
        Input::Q8G { qs, d, group } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| d[i / group] * f32::from(q))
            .collect(),
    }
}

/// Both input quantizations, on random blocks and on blocks made to hit
/// the edges: all zeros, one nonzero value, exact ties after scaling, the
/// largest magnitude negative and positive (first one wins), tiny values.
#[test]
fn input_quantization_matches_scalar_exactly() {
    let n = 256 * 6;
    let mut x = random(n, 7, 5.0);
    x[..256].fill(0.0);
    x[256..512].fill(0.0);
    x[300] = -3.0;
    for (i, v) in x[512..768].iter_mut().enumerate() {
        *v = (i as f32 - 128.0) * 0.5;
    }
    x[770] = -9.0;
    x[900] = 9.0;
    for v in &mut x[1024..1280] {
        *v *= 1e-30;
    }
    for isa in simd_levels() {
        for form in [InputForm::Q8_0, InputForm::Q8_1, InputForm::Q8K] {
            let mut bufs = [(); 2].map(|_| Buffers::new(n, n / 16));
            for (i, b) in bufs.iter_mut().enumerate() {
                quantize(
                    if i == 0 { Isa::SCALAR } else { isa },
                    form,
                    &x,
                    &mut b.view(),
                );
            }
            let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bufs[0].0, bufs[1].0, "{} {form:?} values", isa.name());
            assert_eq!(
                bits(&bufs[0].1),
                bits(&bufs[1].1),
                "{} {form:?} scales",
                isa.name()
            );
            assert_eq!(bufs[0].2, bufs[1].2, "{} {form:?} sums", isa.name());
        }
    }
}

fn check_quantized(isa: Isa, dtype: DType, rows: usize, cols: usize, seed: u64) {
    let offset = 1 + seed as usize % 3;
    let buf = random_blocks(dtype, rows, cols, seed, offset);
    let w = WeightRef::new("w", dtype, rows, cols, &buf[offset..]).unwrap();
    let x = random(cols, seed + 1, 3.0);
    let n = cols.next_multiple_of(256);
    let mut buffers = Buffers::new(n, n);
    let mut ib = buffers.view();
    let input = prepare(Isa::SCALAR, dtype, &x, &mut ib);
    let (mut want, mut got) = (std::vec![0.0; rows], std::vec![0.0; rows]);
    matvec(Isa::SCALAR, &mut want, &w, &input);
    matvec(isa, &mut got, &w, &input);
    let what = || std::format!("{} {} {rows}x{cols}", isa.name(), dtype.name());
    match dtype {
        // Rounded float sums, each level in an order of its own.
        DType::F32 | DType::F16 => {
            let xv = input_values(&input);
            for r in 0..rows {
                let bound = 2.0 * cols as f32 * U * abs_products(&w, r, &xv) + 1e-30;
                let err = (got[r] - want[r]).abs();
                assert!(err <= bound, "{} row {r}: {err} > {bound}", what());
            }
        }
        // Exact integer sums and the spec's float order (BF16: llama.cpp's
        // order on every level): the same bits.
        _ => {
            let (g, w): (Vec<u32>, Vec<u32>) = (
                got.iter().map(|v| v.to_bits()).collect(),
                want.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(g, w, "{}", what());
        }
    }
}

#[test]
fn quantized_matvec_matches_scalar() {
    for isa in simd_levels() {
        for k in 1..=24 {
            for rows in [1, 3, 8, 13, 37] {
                check_quantized(isa, DType::Q8_0, rows, 32 * k, (k * rows) as u64);
                check_quantized(isa, DType::Q4_0, rows, 32 * k, (k * rows + 1) as u64);
                check_quantized(isa, DType::Q4_1, rows, 32 * k, (k * rows + 4) as u64);
                check_quantized(isa, DType::Q5_0, rows, 32 * k, (k * rows + 5) as u64);
                check_quantized(isa, DType::Q5_1, rows, 32 * k, (k * rows + 6) as u64);
                check_quantized(isa, DType::IQ4NL, rows, 32 * k, (k * rows + 7) as u64);
            }
        }
        for cols in (1..=300).chain([768, 2048]) {
            check_quantized(isa, DType::F16, 1 + cols % 11, cols, cols as u64);
            check_quantized(isa, DType::BF16, 1 + cols % 11, cols, cols as u64);
        }
        for k in 1..=8 {
            for rows in [1, 2, 8, 13] {
                check_quantized(isa, DType::Q4K, rows, 256 * k, (k * rows + 2) as u64);
                check_quantized(isa, DType::Q6K, rows, 256 * k, (k * rows + 3) as u64);
                check_quantized(isa, DType::Q5K, rows, 256 * k, (k * rows + 8) as u64);
                check_quantized(isa, DType::Q3K, rows, 256 * k, (k * rows + 9) as u64);
                check_quantized(isa, DType::Q2K, rows, 256 * k, (k * rows + 10) as u64);
                check_quantized(isa, DType::IQ4XS, rows, 256 * k, (k * rows + 11) as u64);
            }
        }
        // llama2.c v2: the integer kernels for whole blocks, the general
        // code for other group sizes.
        for group in [4, 32, 64, 96, 160] {
            for k in [1, 2, 5] {
                for rows in [1, 3, 5, 13] {
                    let dtype = DType::Q8G { group };
                    check_quantized(isa, dtype, rows, group as usize * k * 3, (k * rows) as u64);
                }
            }
        }
        let q8g = DType::Q8G { group: 64 };
        for dtype in DType::GGML.into_iter().skip(1).chain([q8g]) {
            check_quantized(isa, dtype, 2048, 768, 99);
            check_quantized(isa, dtype, 768, 2048, 98);
        }
    }
}

/// Scores whose lane sums round: lane 0 holds 2^30, lane 2 −2^30 and
/// lane 4 t = 3·2^-25, all other lanes 0. `join32` adds lane 4 into lane 0
/// first, where t is under half an ulp, and the score is 0; any other
/// order — t next to −2^30, whose ulp is half as big, or after the two
/// cancel — keeps some of t, which the scale 2^20 makes a visible change
/// of the softmax.
#[test]
fn attention_f16_keeps_the_score_summation_order() {
    let head = 64;
    let (mut q, mut key) = (std::vec![0.0f32; head], std::vec![0.0f32; head]);
    (q[0], q[2], q[4]) = (32768.0, -32768.0, 3.0 / 8192.0);
    (key[0], key[2], key[4]) = (32768.0, 32768.0, 1.0 / 4096.0);
    // Position 0 scores 0 in any order; 1–5 are the crafted key: four
    // summed together, the last alone.
    let positions = 6;
    let len = positions * head;
    let (mut keys, mut values) = (std::vec![0u16; len], std::vec![0u16; len]);
    for k in keys[head..].chunks_exact_mut(head) {
        f32_to_f16(Isa::SCALAR, k, &key);
    }
    f32_to_f16(Isa::SCALAR, &mut values, &random(len, 5, 1.0));
    let run = |isa, scale| {
        let (mut out, mut scratch) = (std::vec![0.0f32; head], [0.0f32; 12]);
        attention_f16(
            isa,
            &mut out,
            &q,
            &keys,
            &values,
            head,
            positions,
            scale,
            &mut scratch,
        );
        out
    };
    let want = run(Isa::SCALAR, 1048576.0);
    assert_eq!(
        want,
        run(Isa::SCALAR, 0.0),
        "the scalar score must round to 0"
    );
    for isa in simd_levels() {
        let got = run(isa, 1048576.0);
        assert_eq!(got, want, "{}", isa.name());
    }
}

/// llama.cpp's flash-attention loop as it reads: one pass, the output
/// rescaled in place whenever the maximum grows (each score summed as its
/// AVX2 `ggml_vec_dot_f16` does, 32 values a step into four accumulators
/// of eight lanes, the rest in f64).
fn one_pass_attention(out: &mut [f32], q: &[f32], kv: (&[u16], &[u16]), at: (usize, usize, f32)) {
    let ((keys, values), (stride, positions, scale)) = (kv, at);
    let round16 = |x: f32| f16_to_f32(to_f16_bits(x));
    let n = q.len();
    let whole = n / 32 * 32;
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    out.fill(0.0);
    for t in 0..positions {
        let mut acc = [[0.0f32; 8]; 4];
        for i in 0..whole {
            let lane = &mut acc[(i % 32) / 8][i % 8];
            *lane = libm::fmaf(round16(q[i]), f16_to_f32(keys[t * stride + i]), *lane);
        }
        let mut dot = f64::from(scalar::join32(acc));
        for i in whole..n {
            dot += f64::from(round16(q[i]) * f16_to_f32(keys[t * stride + i]));
        }
        let s = dot as f32 * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > max {
            ms = crate::libc::expf(max - s);
            max = s;
            out.iter_mut().for_each(|o| *o = round16(*o * ms));
        } else {
            vs = crate::libc::expf(s - max);
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = round16(libm::fmaf(f16_to_f32(values[t * stride + i]), vs, *o));
        }
        sum = libm::fmaf(sum, ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|o| *o *= inv);
}

#[test]
fn f16_conversion_and_attention_match_scalar_exactly() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for isa in simd_levels() {
        for n in (1..=300).chain([768, 4099]) {
            let x = random(n, n as u64, 70000.0);
            let (mut want, mut got) = (std::vec![0u16; n], std::vec![0u16; n]);
            f32_to_f16(Isa::SCALAR, &mut want, &x);
            f32_to_f16(isa, &mut got, &x);
            assert_eq!(got, want, "{} f32_to_f16 {n}", isa.name());
        }
    }
    // The scalar twin too: its three passes must be the one-pass loop.
    for head in (1..=160).chain([256]) {
        for isa in Isa::available() {
            // Long enough for the maximum to grow and hold many times.
            let (positions, stride) = (1 + (head * 7) % 97, head + head % 7);
            let len = (positions - 1) * stride + head;
            let (mut keys, mut values) = (std::vec![0u16; len], std::vec![0u16; len]);
            f32_to_f16(Isa::SCALAR, &mut keys, &random(len, head as u64, 2.0));
            f32_to_f16(Isa::SCALAR, &mut values, &random(len, head as u64 + 5, 2.0));
            let q = random(head, head as u64 + 9, 3.0);
            let scale = 1.0 / libm::sqrtf(head as f32);
            let (mut want, mut got) = (std::vec![0.0f32; head], std::vec![1.0f32; head]);
            let mut scratch = std::vec![0.0f32; 2 * positions];
            one_pass_attention(&mut want, &q, (&keys, &values), (stride, positions, scale));
            attention_f16(
                isa,
                &mut got,
                &q,
                &keys,
                &values,
                stride,
                positions,
                scale,
                &mut scratch,
            );
            assert_eq!(
                bits(&got),
                bits(&want),
                "{} attention_f16 head {head}",
                isa.name()
            );
        }
    }
}

/// The x86 online softmax against the scalar twin, bit for bit: its
/// exponentials (glibc's `expf` in f64 lanes) over a sweep of every
/// exponent and many mantissas of the floats of both signs, the ends of
/// `expf`'s range and their neighbours, infinities and NaN; and its running
/// maximum over random scores of several scales, growing and holding.
#[cfg(target_arch = "x86_64")]
#[test]
fn x86_online_softmax_is_the_scalar_twin_bitwise() {
    let ends = [0x42b1_7217u32, 0xc2cf_f1b4, 0x42b0_0000, 0xc2b0_0000];
    let mut xs: Vec<f32> = (0u32..=u32::MAX)
        .step_by(1021)
        .chain(ends.iter().flat_map(|&b| b - 3..=b + 3))
        .chain([
            0xff80_0000,
            0x7f80_0000,
            0xffc0_0000,
            0x7fc0_0001,
            0x8000_0000,
            0,
        ])
        .map(f32::from_bits)
        .collect();
    for (seed, scale) in [0.5, 4.0, 60.0, 1e30].into_iter().enumerate() {
        xs.extend(random(3001, seed as u64 + 7, scale));
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let run = |isa: Isa, scores: &[f32]| {
        let (mut s, mut w) = (scores.to_vec(), std::vec![0.0f32; scores.len()]);
        let inv = match isa.0 {
            // SAFETY: the level was detected, so the CPU has its features.
            Level::Avx2 => unsafe { x86::avx2::online_softmax(&mut s, &mut w) },
            // SAFETY: as above.
            Level::Avx512 => unsafe { x86::avx512::online_softmax(&mut s, &mut w) },
            _ => scalar::online_softmax(&mut s, &mut w),
        };
        (bits(&s), bits(&w), inv.to_bits())
    };
    for isa in simd_levels() {
        // After a leading 0 every weight is expf(x − 0) = expf(x).
        for chunk in xs.chunks(4093) {
            let scores: Vec<f32> = [0.0].iter().chain(chunk).copied().collect();
            assert_eq!(
                run(isa, &scores),
                run(Isa::SCALAR, &scores),
                "{}",
                isa.name()
            );
        }
        for n in 0..70 {
            let scores = random(n, n as u64, 3.0 + n as f32);
            let (got, want) = (run(isa, &scores), run(Isa::SCALAR, &scores));
            assert_eq!(got, want, "{} {n}", isa.name());
        }
    }
}

/// The word-at-a-time unpacking against the Q4_K layout byte by byte.
#[test]
fn q4k_scale_words_unpack_the_byte_layout() {
    let mut state = 5u64;
    for _ in 0..10_000 {
        let s: [u8; 12] = core::array::from_fn(|_| random_u32(&mut state) as u8);
        let (sc, m) = scalar::q4k_scales(&s);
        for j in 0..8 {
            let (want_sc, want_m) = if j < 4 {
                (s[j] & 63, s[j + 4] & 63)
            } else {
                (
                    (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4),
                    (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
                )
            };
            assert_eq!((sc[j], m[j]), (want_sc, want_m), "{s:?} sub-block {j}");
        }
    }
}

/// `matmul` is `matvec` for each input, bit for bit, for every weight type
/// and ISA: odd row counts (tails of the row tiles), 1 to 9 inputs (every
/// size of a last group of inputs), ragged and block-sized rows, unaligned
/// weights.
#[test]
fn matmul_is_matvec_for_each_input_bitwise() {
    let shapes: [(usize, usize); 8] = [
        (1, 1),
        (3, 15),
        (5, 16),
        (7, 17),
        (13, 172),
        (9, 64),
        (2, 160),
        (6, 48),
    ];
    for isa in Isa::available() {
        let groups = [64, 48].map(|group| DType::Q8G { group });
        for dtype in DType::GGML.into_iter().chain(groups) {
            for (i, &(rows, cols)) in shapes.iter().enumerate() {
                let (values, _) = dtype.block();
                let cols = cols.next_multiple_of(values);
                let seed = (i * 7 + rows) as u64;
                // Weights at odd byte offsets; for F32 also (odd shapes)
                // whole floats past a cache line, which batch_form's input
                // copies match.
                let (buf, offset) = match dtype {
                    DType::F32 if i % 2 == 1 => {
                        let values = random(rows * cols, seed, 1.0);
                        let mut b = std::vec![0xA5u8; 128 + 4 * values.len()];
                        let at = (64 - b.as_ptr() as usize % 64) % 64 + 4 * (1 + i % 3);
                        for (b, v) in b[at..].chunks_exact_mut(4).zip(values) {
                            b.copy_from_slice(&v.to_le_bytes());
                        }
                        (b, at)
                    }
                    DType::F32 => (
                        bytes_at(&random(rows * cols, seed, 1.0), 1 + i % 3),
                        1 + i % 3,
                    ),
                    _ => (random_blocks(dtype, rows, cols, seed, 1 + i % 3), 1 + i % 3),
                };
                let bytes = dtype.bytes(rows, cols).unwrap();
                let w =
                    WeightRef::new("w", dtype, rows, cols, &buf[offset..offset + bytes]).unwrap();
                for tokens in 1..=9 {
                    let n = cols.next_multiple_of(256) + 256;
                    let mut buffers = Buffers::new(tokens * n, tokens * n);
                    let mut ib = buffers.view();
                    let xs: Vec<Vec<f32>> = (0..tokens)
                        .map(|t| random(cols, seed + 11 * t as u64, 2.0))
                        .collect();
                    let form = batch_form(isa, &w);
                    for (t, x) in xs.iter().enumerate() {
                        quantize(isa, form, x, &mut ib.slot(t, n));
                    }
                    let inputs: Vec<Input> = xs
                        .iter()
                        .enumerate()
                        .map(|(t, x)| ib.slot_input(t, n, form, x))
                        .collect();
                    let mut want = std::vec![std::vec![0.0f32; rows]; tokens];
                    for (o, x) in want.iter_mut().zip(&inputs) {
                        matvec(isa, o, &w, x);
                    }
                    let mut got = std::vec![std::vec![0.0f32; rows]; tokens];
                    let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|o| &mut o[..]).collect();
                    matmul(isa, &mut outs, &w, &inputs);
                    let bits = |v: &[Vec<f32>]| -> Vec<u32> {
                        v.iter().flatten().map(|f| f.to_bits()).collect()
                    };
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{} {} {rows}x{cols}, {tokens} inputs",
                        isa.name(),
                        dtype.name()
                    );
                }
            }
        }
    }
}
