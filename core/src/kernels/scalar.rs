//! The specification of every kernel: straightforward Rust, summing left to
//! right exactly as llama2.c's `run.c` does. SIMD twins are tested against it.
//! Weights arrive as little-endian bytes at any alignment and are decoded in
//! place; nothing is copied.

use crate::kernels::{F16Attention, Input};

fn f32_at(bytes: &[u8], i: usize) -> f32 {
    let b = &bytes[4 * i..4 * i + 4];
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub fn f32_from_le(out: &mut [f32], bytes: &[u8]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
    matvec_floats(out, w, x, 4, f32_at);
}

/// Rows of floats `size` bytes wide, element `i` of a row read by `at`.
fn matvec_floats(
    out: &mut [f32],
    w: &[u8],
    x: &[f32],
    size: usize,
    at: impl Fn(&[u8], usize) -> f32,
) {
    let row_bytes = x.len() * size;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut sum = 0.0f32;
        for (i, &xi) in x.iter().enumerate() {
            sum += at(row, i) * xi;
        }
        *o = sum;
    }
}

/// The RMSNorm scale `1/√(mean(x²) + eps)`. The squares are summed in f64
/// (as GGML does): nearly exact, so every twin's order gives the same f32.
pub fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    1.0 / libm::sqrtf((ss / x.len() as f64) as f32 + eps)
}

pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
    let scale = rms_scale(x, eps);
    for (j, o) in out.iter_mut().enumerate() {
        *o = f32_at(weight, j) * (scale * x[j]);
    }
}

pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

pub fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    for head in v.chunks_exact_mut(2 * cos.len()) {
        rope_pairs(head, cos, sin);
    }
}

/// Rotates the pairs of one head (or the tail of one, for SIMD twins),
/// each with one fused multiply-add as llama.cpp's compiled C does it:
/// `v0·c − v1·s` with `v1·s` rounded first, `v0·s + v1·c` with `v1·c`.
pub fn rope_pairs(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (v0, v1) = (pair[0], pair[1]);
        pair[0] = libm::fmaf(v0, c, -(v1 * s));
        pair[1] = libm::fmaf(v0, s, v1 * c);
    }
}

/// SwiGLU as llama.cpp computes it, `x / (1 + e^−x) · g`, with its
/// exponential ([`ggml_expf`]).
pub fn swiglu(h: &mut [f32], g: &[f32]) {
    for (hv, &gv) in h.iter_mut().zip(g) {
        let v = *hv;
        *hv = v / (1.0 + ggml_expf(0.0 - v)) * gv;
    }
}

/// The constants of [`ggml_expf`]: `log2 e`, ln 2 in two parts, and the
/// polynomial, as f32 bits.
pub const GGML_EXP: [u32; 8] = [
    0x3fb8_aa3b,
    0x3f31_7200,
    0x35bf_be8e,
    0x3c07_2010,
    0x3d2b_9f17,
    0x3e2a_af33,
    0x3eff_fedb,
    0x3f7f_fff6,
];

/// llama.cpp's vector `expf` (ggml's, after Arm's optimized routines)
/// lane by lane, as its x86 build computes it: `n = round(x·log2 e)` by
/// the 1.5·2^23 shift, `b = x − n·ln 2` in two fused steps, `2^n` from the
/// exponent bits, a degree-5 polynomial in `b`; beyond |n| > 126 the
/// scaling is split in two so that it neither overflows nor underflows
/// early. All its steps are single-rounded f32 operations (fused where
/// it fuses), so every level computes it bit for bit.
pub fn ggml_expf(x: f32) -> f32 {
    let c = GGML_EXP.map(f32::from_bits);
    let fma = libm::fmaf;
    let shift = 12_582_912.0f32;
    let z = fma(x, c[0], shift);
    let n = z - shift;
    let b = fma(-n, c[2], fma(-n, c[1], x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = fma(fma(fma(c[3], b, c[4]), u, fma(c[5], b, c[6])), u, c[7] * b);
    // Not far (NaN included): the plain scaling.
    if n.abs().partial_cmp(&126.0) != Some(core::cmp::Ordering::Greater) {
        return fma(k, j, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    match n.abs() > 192.0 {
        true => s1 * s1,
        false => fma(s2, j, s2) * s1,
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (&x, &y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

/// The attention scores' dot products (the entry point divides them).
pub fn attention_dots(scores: &mut [f32], q: &[f32], keys: &[f32], stride: usize) {
    for (t, s) in scores.iter_mut().enumerate() {
        *s = dot(q, &keys[t * stride..][..q.len()]);
    }
}

pub fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
    let n = out.len();
    out.fill(0.0);
    for (t, &a) in weights.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(&values[t * stride..][..n]) {
            *o += a * v;
        }
    }
}

pub fn add(y: &mut [f32], x: &[f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += xv;
    }
}

pub fn sum(data: &[u8]) -> f32 {
    let mut s = 0.0f32;
    for b in data.chunks_exact(4) {
        s += f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    s
}

// ---- Half precision and the quantized types (GGML block layouts) ----

use crate::tensor::{bf16_to_f32, f16_to_f32, IQ4_VALUES};

fn f16_at(bytes: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]))
}

pub fn matvec_f16(out: &mut [f32], w: &[u8], x: &[f32]) {
    matvec_floats(out, w, x, 2, f16_at);
}

/// llama.cpp's input quantization for Q8_0/Q4_0 weights (its x86 code):
/// per 32 values, the scale `max|x|/127` kept as f16, and `x·127/max`
/// rounded half to even.
pub fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    quantize_blocks32(x, qs, d, None);
}

/// llama.cpp's input quantization for Q4_1 weights (Q8_1, its x86 code):
/// [`quantize_q8_0`], and per block `s`, the unrounded scale times the sum
/// of the block's values, kept as f16.
pub fn quantize_q8_1(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    quantize_blocks32(x, qs, d, Some(s));
}

/// A Q8_0/Q8_1 block's scale from its largest magnitude, kept as f16.
pub(crate) fn block_scale(amax: f32) -> f32 {
    round16(amax / 127.0)
}

/// A Q8_1 block's `s`: the unrounded scale times the sum of the block's
/// values, kept as f16.
pub(crate) fn block_sum(amax: f32, sum: i32) -> f32 {
    round16(amax / 127.0 * sum as f32)
}

fn quantize_blocks32(x: &[f32], qs: &mut [i8], d: &mut [f32], mut s: Option<&mut [f32]>) {
    let blocks = x.chunks_exact(32).zip(qs.chunks_exact_mut(32));
    for (b, ((xb, qb), db)) in blocks.zip(d.iter_mut()).enumerate() {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *db = block_scale(amax);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = libm::rintf(v * id) as i8;
        }
        if let Some(s) = s.as_deref_mut() {
            let sum: i32 = qb.iter().map(|&q| i32::from(q)).sum();
            s[b] = block_sum(amax, sum);
        }
    }
}

/// `runq`'s input quantization: per group the largest magnitude over 127
/// is the scale, and each value divided by it is rounded half away from
/// zero (C's `round`). An all-zero group divides 0 by 0: C's conversion of
/// that NaN to int8 gives 0 on the machines `runq` runs on, as Rust's does.
pub fn quantize_groups(x: &[f32], qs: &mut [i8], d: &mut [f32], group: usize) {
    for ((xg, qg), s) in x
        .chunks_exact(group)
        .zip(qs.chunks_exact_mut(group))
        .zip(d.iter_mut())
    {
        let wmax = xg
            .iter()
            .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        *s = wmax / 127.0;
        for (q, &v) in qg.iter_mut().zip(xg) {
            *q = libm::roundf(v / *s) as i8;
        }
    }
}

/// llama2.c v2 rows: per group the exact integer dot product, then
/// `runq`'s `val += isum · s_w · s_x`, group after group.
pub fn matvec_q8g(out: &mut [f32], w: &[u8], scales: &[u8], qs: &[i8], d: &[f32], group: usize) {
    let cols = qs.len();
    let groups = cols / group;
    for (r, o) in out.iter_mut().enumerate() {
        let (row, s) = (
            &w[r * cols..(r + 1) * cols],
            &scales[4 * r * groups..4 * (r + 1) * groups],
        );
        let mut val = 0.0f32;
        for (g, (wq, xq)) in row
            .chunks_exact(group)
            .zip(qs.chunks_exact(group))
            .enumerate()
        {
            let isum = dot_i8(wq.iter().map(|&q| i32::from(q as i8)), xq);
            val += isum as f32 * f32_at(s, g) * d[g];
        }
        *o = val;
    }
}

// The matrix-matrix kernels' specification: matvec, input after input.

pub fn matmul_f32(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_f32(o, w, x.f32s());
    }
}

pub fn matmul_f16(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_f16(o, w, x.f32s());
    }
}

pub fn matmul_q8_0(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q8_0(o, w, x.qs(), x.scales());
    }
}

pub fn matmul_q4_0(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q4_0(o, w, x.qs(), x.scales());
    }
}

pub fn matmul_q4_1(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q4_1(o, w, x.qs(), x.scales(), x.block_sums());
    }
}

pub fn matmul_q4k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q4k(o, w, x.qs(), x.scales(), x.bsums());
    }
}

pub fn matmul_q6k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q6k(o, w, x.qs(), x.scales(), x.bsums());
    }
}

pub fn matmul_q5_0(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q5_0(o, w, x.qs(), x.scales());
    }
}

pub fn matmul_q5_1(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q5_1(o, w, x.qs(), x.scales(), x.block_sums());
    }
}

pub fn matmul_iq4nl(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_iq4nl(o, w, x.qs(), x.scales());
    }
}

pub fn matmul_q5k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q5k(o, w, x.qs(), x.scales(), x.bsums());
    }
}

pub fn matmul_q3k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q3k(o, w, x.qs(), x.scales(), x.bsums());
    }
}

pub fn matmul_q2k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q2k(o, w, x.qs(), x.scales(), x.bsums());
    }
}

pub fn matmul_iq4xs(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_iq4xs(o, w, x.qs(), x.scales(), x.bsums());
    }
}

pub fn matmul_bf16(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_bf16(o, w, x.f32s());
    }
}

pub fn matmul_q8g(out: &mut [&mut [f32]], w: &[u8], scales: &[u8], x: &[Input<'_>], group: usize) {
    for (o, x) in out.iter_mut().zip(x) {
        matvec_q8g(o, w, scales, x.qs(), x.scales(), group);
    }
}

/// llama.cpp's input quantization for K-quant weights: per 256 values,
/// scale from the signed value of largest magnitude (so it maps to −127),
/// values rounded half to even and capped at 127, and the sum of each 16.
pub fn quantize_q8_k(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    let blocks = x.chunks_exact(256).zip(qs.chunks_exact_mut(256));
    for (((xb, qb), db), sb) in blocks.zip(d.iter_mut()).zip(bsums.chunks_exact_mut(16)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                (amax, max) = (v.abs(), v);
            }
        }
        if amax == 0.0 {
            *db = 0.0;
            qb.fill(0);
            sb.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = (libm::rintf(iscale * v) as i32).min(127) as i8;
        }
        for (s, q16) in sb.iter_mut().zip(qb.chunks_exact(16)) {
            *s = q16.iter().map(|&q| i16::from(q)).sum();
        }
        *db = 1.0 / iscale;
    }
}

fn dot_i8(a: impl Iterator<Item = i32>, b: &[i8]) -> i32 {
    a.zip(b).map(|(x, &y)| x * i32::from(y)).sum()
}

/// Lane sums of a 32-value block: lane `l` is the integer dot product of
/// values `4l..4l+4` (what `vpdpbusd`, `pmaddubsw`+`pmaddwd` and NEON `sdot`
/// all produce).
fn lanes(w: impl Iterator<Item = i32>, x: &[i8]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (i, (wv, &xv)) in w.zip(x).enumerate() {
        lanes[i / 4] += wv * i32::from(xv);
    }
    lanes
}

/// GGML's horizontal sum of eight lanes: high half plus low half, then pairs.
pub fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Rows of 32-value blocks (Q8_0, Q4_0, Q4_1): per block, eight lane sums
/// scaled by `d_w·d_x` with a fused multiply-add into eight running sums,
/// then [`hsum8`]. This is llama.cpp's order for these types on x86, so the
/// results agree with it bit for bit. `values` decodes a block's weights.
/// A Q4_1 block's minimum `m` (after its scale) adds `m·s_x` (the input
/// block's `s`): llama.cpp sums those apart, with fused multiply-adds, and
/// adds the total to the lanes' at the end.
fn matvec_blocks32(
    out: &mut [f32],
    w: &[u8],
    (qs, d, s): (&[i8], &[f32], Option<&[f32]>),
    block_bytes: usize,
    values: impl Fn(&[u8]) -> [i32; 32],
) {
    let row_bytes = w.len() / out.len().max(1);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let (mut acc, mut mins) = ([0.0f32; 8], 0.0f32);
        let blocks = row.chunks_exact(block_bytes).zip(qs.chunks_exact(32));
        for (i, ((b, xq), &xd)) in blocks.zip(d).enumerate() {
            let scale = f16_at(b, 0) * xd;
            for (a, lane) in acc.iter_mut().zip(lanes(values(b).into_iter(), xq)) {
                *a = libm::fmaf(scale, lane as f32, *a);
            }
            if let Some(s) = s {
                mins = libm::fmaf(f16_at(b, 1), s[i], mins);
            }
        }
        *o = match s {
            Some(_) => hsum8(acc) + mins,
            None => hsum8(acc),
        };
    }
}

/// Q8_0: an f16 scale and 32 signed bytes.
pub fn matvec_q8_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
    matvec_blocks32(out, w, (qs, d, None), 34, |b| {
        core::array::from_fn(|i| i32::from(b[2 + i] as i8))
    });
}

/// The 32 values of 16 bytes of nibbles: the low nibbles are values 0..16,
/// the high ones 16..32 (Q4_0, Q4_1).
fn nibbles(b: &[u8]) -> [i32; 32] {
    core::array::from_fn(|i| i32::from(if i < 16 { b[i] & 0xf } else { b[i - 16] >> 4 }))
}

/// Q4_0: an f16 scale and 16 bytes of nibbles, stored as value + 8.
pub fn matvec_q4_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
    matvec_blocks32(out, w, (qs, d, None), 18, |b| {
        nibbles(&b[2..]).map(|q| q - 8)
    });
}

/// Q4_1: an f16 scale, an f16 minimum and 16 bytes of nibbles.
pub fn matvec_q4_1(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], s: &[f32]) {
    matvec_blocks32(out, w, (qs, d, Some(s)), 20, |b| nibbles(&b[4..]));
}

/// The 32 values of Q5_0's and Q5_1's fifth bits (a little-endian word,
/// bit `j` for value `j`) over their nibbles.
fn five_bits(b: &[u8]) -> [i32; 32] {
    let high = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let low = nibbles(&b[4..]);
    core::array::from_fn(|i| low[i] | (((high >> i) & 1) << 4) as i32)
}

/// Q5_0: an f16 scale, the fifth bits and the nibbles, stored as value + 16.
pub fn matvec_q5_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
    matvec_blocks32(out, w, (qs, d, None), 22, |b| {
        five_bits(&b[2..]).map(|q| q - 16)
    });
}

/// Q5_1: an f16 scale, an f16 minimum, the fifth bits and the nibbles.
pub fn matvec_q5_1(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], s: &[f32]) {
    matvec_blocks32(out, w, (qs, d, Some(s)), 24, |b| five_bits(&b[4..]));
}

/// IQ4_NL: an f16 scale and 16 bytes of nibbles indexing [`IQ4_VALUES`].
pub fn matvec_iq4nl(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
    matvec_blocks32(out, w, (qs, d, None), 18, |b| {
        nibbles(&b[2..]).map(|q| i32::from(IQ4_VALUES[q as usize]))
    });
}

/// A Q4_K block's eight 6-bit sub-block scales and eight 6-bit mins, from
/// the 12 bytes that pack them, as four little-endian words of four bytes:
/// scales 0..4, scales 4..8, mins 0..4, mins 4..8. Bytes 0..4 hold scales
/// 0..4 in their low six bits and the top two bits of scales 4..8; bytes
/// 4..8 the same for the mins; bytes 8..12 the low four bits of scales
/// 4..8 (low nibble) and mins 4..8 (high nibble). Word operations unpack
/// four at a time, as the SIMD twins want them.
pub fn q4k_scale_words(s: &[u8]) -> [u32; 4] {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    [
        a & LOW6,
        (c & LOW4) | (((a >> 6) & LOW2) << 4),
        b & LOW6,
        ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4),
    ]
}

/// [`q4k_scale_words`] as bytes: the eight scales and the eight mins.
pub fn q4k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let w = q4k_scale_words(s);
    let bytes = |lo: u32, hi: u32| (u64::from(lo) | u64::from(hi) << 32).to_le_bytes();
    (bytes(w[0], w[1]), bytes(w[2], w[3]))
}

/// The 256 quantized values (0..16) of a Q4_K block, in order.
fn q4k_values(block: &[u8]) -> [u8; 256] {
    let mut v = [0u8; 256];
    for (c, qs) in block[16..144].chunks_exact(32).enumerate() {
        for (l, &b) in qs.iter().enumerate() {
            v[64 * c + l] = b & 0xf;
            v[64 * c + 32 + l] = b >> 4;
        }
    }
    v
}

pub fn matvec_q4k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
    let row_bytes = w.len() / out.len().max(1);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut sum = 0.0f32;
        let blocks = row.chunks_exact(144).zip(qs.chunks_exact(256));
        for (((block, xq), &xd), bs) in blocks.zip(d).zip(bsums.chunks_exact(16)) {
            let (sc, m) = q4k_scales(&block[4..16]);
            let v = q4k_values(block);
            let mut isum = 0i32;
            let mut msum = 0i32;
            for j in 0..8 {
                let vals = v[32 * j..32 * j + 32].iter().map(|&q| i32::from(q));
                isum += i32::from(sc[j]) * dot_i8(vals, &xq[32 * j..32 * j + 32]);
                msum += i32::from(m[j]) * (i32::from(bs[2 * j]) + i32::from(bs[2 * j + 1]));
            }
            sum += (f16_at(block, 0) * xd) * isum as f32 - (f16_at(block, 1) * xd) * msum as f32;
        }
        *o = sum;
    }
}

/// The 256 quantized values (0..32) of a Q5_K block, in order: Q4_K's
/// nibbles (which sit at the same place from the block's end) and the
/// fifth bits.
fn q5k_values(block: &[u8]) -> [u8; 256] {
    let mut v = q4k_values(&block[32..]);
    for (i, q) in v.iter_mut().enumerate() {
        *q |= ((block[16 + i % 32] >> (i / 32)) & 1) << 4;
    }
    v
}

/// A K-quant row: per 256-value block, `isum` and `msum` from `block_sums`
/// (the exact integer sums of scale × value products, and of min × input
/// sums), then `(d·d_x)·isum − (dmin·d_x)·msum` added in order; `dd` gives
/// a block's `d` and `dmin` (0 for types without mins).
fn matvec_k(
    out: &mut [f32],
    w: &[u8],
    (qs, d, bsums): (&[i8], &[f32], &[i16]),
    block_bytes: usize,
    dd: impl Fn(&[u8]) -> (f32, f32),
    block_sums: impl Fn(&[u8], &[i8], &[i16]) -> (i32, i32),
) {
    let row_bytes = w.len() / out.len().max(1);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut sum = 0.0f32;
        let blocks = row.chunks_exact(block_bytes).zip(qs.chunks_exact(256));
        for (((block, xq), &xd), bs) in blocks.zip(d).zip(bsums.chunks_exact(16)) {
            let (isum, msum) = block_sums(block, xq, bs);
            let (dw, dmin) = dd(block);
            sum += (dw * xd) * isum as f32 - (dmin * xd) * msum as f32;
        }
        *o = sum;
    }
}

/// The integer sums of a block of `N` sub-blocks of `256 / N` values,
/// sub-block `j` scaled by `scale[j]`, with mins `min[j]` against the
/// input's 16-value sums.
fn sub_block_sums<const N: usize>(
    v: &[i32; 256],
    scale: [i32; N],
    min: [i32; N],
    xq: &[i8],
    bs: &[i16],
) -> (i32, i32) {
    let n = 256 / N;
    let (mut isum, mut msum) = (0i32, 0i32);
    for j in 0..N {
        let vals = v[n * j..n * (j + 1)].iter().copied();
        isum += scale[j] * dot_i8(vals, &xq[n * j..n * (j + 1)]);
        let sums = &bs[j * n / 16..(j + 1) * n / 16];
        msum += min[j] * sums.iter().map(|&s| i32::from(s)).sum::<i32>();
    }
    (isum, msum)
}

pub fn matvec_q5k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
    let dd = |b: &[u8]| (f16_at(b, 0), f16_at(b, 1));
    matvec_k(out, w, (qs, d, bsums), 176, dd, |b, xq, bs| {
        let (sc, m) = q4k_scales(&b[4..16]);
        let v = q5k_values(b).map(i32::from);
        sub_block_sums(&v, sc.map(i32::from), m.map(i32::from), xq, bs)
    });
}

/// A Q3_K block's sixteen 6-bit scales (stored + 32), from the 12 bytes
/// that pack them: the low nibbles of bytes 0..8 are scales 0..8 and
/// their high nibbles scales 8..16; bytes 8..12 hold the top two bits,
/// byte `i`'s bit pair `k` for scale `4k + i`.
pub fn q3k_scales(s: &[u8]) -> [i32; 16] {
    core::array::from_fn(|j| {
        let low = (s[j % 8] >> (4 * (j / 8))) & 0xf;
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        i32::from(low | high << 4) - 32
    })
}

/// The 256 2-bit values of a Q2_K or Q3_K block, in order, from their
/// 64 bytes.
fn two_bits(qs: &[u8]) -> [i32; 256] {
    core::array::from_fn(|i| {
        let (half, j, l) = (i / 128, i / 32 % 4, i % 32);
        i32::from((qs[32 * half + l] >> (2 * j)) & 3)
    })
}

pub fn matvec_q3k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
    let dd = |b: &[u8]| (f16_at(b, 54), 0.0);
    matvec_k(out, w, (qs, d, bsums), 110, dd, |b, xq, bs| {
        let low = two_bits(&b[32..96]);
        let v = core::array::from_fn(|i| low[i] - 4 * i32::from((b[i % 32] >> (i / 32)) & 1 == 0));
        sub_block_sums(&v, q3k_scales(&b[96..108]), [0; 16], xq, bs)
    });
}

pub fn matvec_q2k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
    let dd = |b: &[u8]| (f16_at(b, 40), f16_at(b, 41));
    matvec_k(out, w, (qs, d, bsums), 84, dd, |b, xq, bs| {
        let scale: [i32; 16] = core::array::from_fn(|j| i32::from(b[j] & 0xf));
        let min: [i32; 16] = core::array::from_fn(|j| i32::from(b[j] >> 4));
        sub_block_sums(&two_bits(&b[16..80]), scale, min, xq, bs)
    });
}

/// An IQ4_XS block's eight scales (stored + 32).
pub fn iq4xs_scales(b: &[u8]) -> [i32; 8] {
    let high = u16::from_le_bytes([b[2], b[3]]);
    core::array::from_fn(|j| {
        let low = (b[4 + j / 2] >> (4 * (j % 2))) & 0xf;
        i32::from(low) | i32::from((high >> (2 * j)) & 3) << 4
    })
    .map(|s| s - 32)
}

/// The 256 values of an IQ4_XS block, in order.
fn iq4xs_values(b: &[u8]) -> [i32; 256] {
    core::array::from_fn(|i| {
        let byte = b[8 + 16 * (i / 32) + i % 16];
        let q = if i % 32 < 16 { byte & 0xf } else { byte >> 4 };
        i32::from(IQ4_VALUES[q as usize])
    })
}

pub fn matvec_iq4xs(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
    let dd = |b: &[u8]| (f16_at(b, 0), 0.0);
    matvec_k(out, w, (qs, d, bsums), 136, dd, |b, xq, bs| {
        sub_block_sums(&iq4xs_values(b), iq4xs_scales(b), [0; 8], xq, bs)
    });
}

/// The 256 quantized values (−32..32) of a Q6_K block, in order.
fn q6k_values(block: &[u8]) -> [i8; 256] {
    let (ql, qh) = (&block[..128], &block[128..192]);
    let mut v = [0i8; 256];
    for n in 0..2 {
        let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
        for l in 0..32 {
            let at = 128 * n + l;
            v[at] = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i8 - 32;
            v[at + 32] = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            v[at + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            v[at + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    v
}

pub fn matvec_q6k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], _bsums: &[i16]) {
    let row_bytes = w.len() / out.len().max(1);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut sum = 0.0f32;
        for ((block, xq), &xd) in row.chunks_exact(210).zip(qs.chunks_exact(256)).zip(d) {
            let v = q6k_values(block);
            let mut isum = 0i32;
            for j in 0..16 {
                let vals = v[16 * j..16 * j + 16].iter().map(|&q| i32::from(q));
                isum += i32::from(block[192 + j] as i8) * dot_i8(vals, &xq[16 * j..16 * j + 16]);
            }
            sum += (f16_at(block, 104) * xd) * isum as f32;
        }
        *o = sum;
    }
}

/// One row of any type as f32 (the embedding lookup). A [`DType::Q8G`]
/// row is laid out as a one-row matrix: its values, then its scales.
///
/// [`DType::Q8G`]: crate::tensor::DType::Q8G
pub fn dequantize_row(dtype: crate::tensor::DType, row: &[u8], out: &mut [f32]) {
    use crate::tensor::DType;
    match dtype {
        DType::Q8G { group } => {
            let (values, scales) = row.split_at(out.len());
            dequantize_groups(values, scales, group as usize, out);
        }
        DType::F32 => f32_from_le(out, row),
        DType::F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16_at(row, i);
            }
        }
        DType::Q8_0 => {
            for (block, ob) in row.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(block, 0);
                for (o, &q) in ob.iter_mut().zip(&block[2..]) {
                    *o = d * f32::from(q as i8);
                }
            }
        }
        DType::Q4_0 => {
            for (block, ob) in row.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(block, 0);
                for (j, &b) in block[2..].iter().enumerate() {
                    ob[j] = d * f32::from(i16::from(b & 0xf) - 8);
                    ob[j + 16] = d * f32::from(i16::from(b >> 4) - 8);
                }
            }
        }
        DType::Q4_1 => {
            for (block, ob) in row.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
                let (d, m) = (f16_at(block, 0), f16_at(block, 1));
                for (o, q) in ob.iter_mut().zip(nibbles(&block[4..])) {
                    *o = q as f32 * d + m;
                }
            }
        }
        DType::Q4K => {
            for (block, ob) in row.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
                let (d, dmin) = (f16_at(block, 0), f16_at(block, 1));
                let (sc, m) = q4k_scales(&block[4..16]);
                for (i, (o, &q)) in ob.iter_mut().zip(q4k_values(block).iter()).enumerate() {
                    let j = i / 32;
                    *o = d * f32::from(sc[j]) * f32::from(q) - dmin * f32::from(m[j]);
                }
            }
        }
        DType::Q5_0 | DType::Q5_1 | DType::IQ4NL => {
            let bytes = dtype.block().1;
            for (block, ob) in row.chunks_exact(bytes).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(block, 0);
                let v = match dtype {
                    DType::Q5_0 => five_bits(&block[2..]).map(|q| q - 16),
                    DType::Q5_1 => five_bits(&block[4..]),
                    _ => nibbles(&block[2..]).map(|q| i32::from(IQ4_VALUES[q as usize])),
                };
                for (o, q) in ob.iter_mut().zip(v) {
                    *o = match dtype {
                        DType::Q5_1 => q as f32 * d + f16_at(block, 1),
                        _ => d * q as f32,
                    };
                }
            }
        }
        DType::Q5K => {
            for (block, ob) in row.chunks_exact(176).zip(out.chunks_exact_mut(256)) {
                let (d, dmin) = (f16_at(block, 0), f16_at(block, 1));
                let (sc, m) = q4k_scales(&block[4..16]);
                for (i, (o, &q)) in ob.iter_mut().zip(q5k_values(block).iter()).enumerate() {
                    let j = i / 32;
                    *o = d * f32::from(sc[j]) * f32::from(q) - dmin * f32::from(m[j]);
                }
            }
        }
        DType::Q3K => {
            for (block, ob) in row.chunks_exact(110).zip(out.chunks_exact_mut(256)) {
                let (d, sc, low) = (
                    f16_at(block, 54),
                    q3k_scales(&block[96..108]),
                    two_bits(&block[32..96]),
                );
                for (i, o) in ob.iter_mut().enumerate() {
                    let q = low[i] - 4 * i32::from((block[i % 32] >> (i / 32)) & 1 == 0);
                    *o = d * sc[i / 16] as f32 * q as f32;
                }
            }
        }
        DType::Q2K => {
            for (block, ob) in row.chunks_exact(84).zip(out.chunks_exact_mut(256)) {
                let (d, dmin) = (f16_at(block, 40), f16_at(block, 41));
                for (i, (o, q)) in ob.iter_mut().zip(two_bits(&block[16..80])).enumerate() {
                    let s = block[i / 16];
                    *o = d * f32::from(s & 0xf) * q as f32 - dmin * f32::from(s >> 4);
                }
            }
        }
        DType::IQ4XS => {
            for (block, ob) in row.chunks_exact(136).zip(out.chunks_exact_mut(256)) {
                let (d, sc) = (f16_at(block, 0), iq4xs_scales(block));
                for (i, (o, q)) in ob.iter_mut().zip(iq4xs_values(block)).enumerate() {
                    *o = d * sc[i / 32] as f32 * q as f32;
                }
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        DType::Q6K => {
            for (block, ob) in row.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
                let d = f16_at(block, 104);
                for (i, (o, &q)) in ob.iter_mut().zip(q6k_values(block).iter()).enumerate() {
                    *o = d * f32::from(block[192 + i / 16] as i8) * f32::from(q);
                }
            }
        }
    }
}

/// llama2.c v2 values with one f32 scale per `group` of them.
pub fn dequantize_groups(values: &[u8], scales: &[u8], group: usize, out: &mut [f32]) {
    for (g, (vg, og)) in values
        .chunks_exact(group)
        .zip(out.chunks_exact_mut(group))
        .enumerate()
    {
        let s = f32_at(scales, g);
        for (o, &q) in og.iter_mut().zip(vg) {
            *o = f32::from(q as i8) * s;
        }
    }
}

pub fn f32_to_f16(out: &mut [u16], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = crate::tensor::f32_to_f16(v);
    }
}

/// `x` rounded to the nearest f16, kept as f32.
pub fn round16(x: f32) -> f32 {
    f16_to_f32(crate::tensor::f32_to_f16(x))
}

/// The score of an f16 query and key, as llama.cpp's x86 `ggml_vec_dot_f16`
/// sums it: [`dot_halves`] of the query rounded to f16 and the key.
fn dot_f16(q: &[f32], k: &[u16]) -> f32 {
    dot_halves(q.len(), join32, |i| (round16(q[i]), f16_to_f32(k[i])))
}

/// The dot product of two 16-bit float vectors (f16 or bf16) of length
/// `n`, `pair(i)` giving element `i` of each as f32, as llama.cpp's AVX2
/// build sums them (`ggml_vec_dot_f16`, `ggml_vec_dot_bf16`): the
/// products (exact in f32) fused into four accumulators of eight f32
/// lanes, 32 values a step; the accumulators joined by `join` ([`join32`]
/// for f16, [`join32_bf16`]); the values after the last whole step added
/// in f64.
fn dot_halves(n: usize, join: fn([[f32; 8]; 4]) -> f32, pair: impl Fn(usize) -> (f32, f32)) -> f32 {
    let whole = n & !31;
    let mut acc = [[0.0f32; 8]; 4];
    for i in 0..whole {
        let (a, b) = pair(i);
        let lane = &mut acc[i % 32 / 8][i % 8];
        *lane = libm::fmaf(a, b, *lane);
    }
    let mut sum = f64::from(join(acc));
    for i in whole..n {
        let (a, b) = pair(i);
        sum += f64::from(a * b);
    }
    sum as f32
}

/// BF16 rows against an input already rounded to bf16 (llama.cpp pairs
/// BF16 weights with BF16 activations): [`dot_halves`] row by row.
pub fn matvec_bf16(out: &mut [f32], w: &[u8], x: &[f32]) {
    let row_bytes = 2 * x.len();
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        *o = dot_halves(x.len(), join32_bf16, |i| {
            (
                x[i],
                bf16_to_f32(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])),
            )
        });
    }
}

/// Rounds `x` to bfloat16 (kept as f32): the input of BF16 weights.
pub fn round_bf16(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = bf16_to_f32(crate::tensor::f32_to_bf16(v));
    }
}

/// The four accumulators of [`dot_f16`] added up, in AVX's order: the
/// first and third, the second and fourth, those two; then lanes `l` and
/// `l + 4`, then the pairs next to each other, then the last two.
pub fn join32(acc: [[f32; 8]; 4]) -> f32 {
    let a = join_lanes(acc);
    let h: [f32; 4] = core::array::from_fn(|l| a[l] + a[l + 4]);
    (h[0] + h[1]) + (h[2] + h[3])
}

/// The four accumulators of a BF16 dot product added up as
/// `ggml_vec_dot_bf16` does on AVX2: lane by lane as [`join32`], then
/// [`hsum8`] (its last two steps pair lanes two apart, not neighbours).
pub fn join32_bf16(acc: [[f32; 8]; 4]) -> f32 {
    hsum8(join_lanes(acc))
}

/// Lane `l` of four accumulators: the first and third, the second and
/// fourth, those two.
fn join_lanes(acc: [[f32; 8]; 4]) -> [f32; 8] {
    core::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]))
}

/// llama.cpp's online softmax, as factors: walking the scores in order
/// with a running maximum, a new maximum rescales everything accumulated so
/// far by `exp(old − new)` and weighs its own value 1; any other score
/// weighs its value `exp(s − max)`, the C library's ([`crate::libc`]).
/// The sum takes each factor with one fused multiply-add, as the compiled
/// C does. Replaces each score with its rescale factor (1 when the
/// maximum held), writes each weight, and returns `1/Σ`, the normalisation.
pub fn online_softmax(scores: &mut [f32], weights: &mut [f32]) -> f32 {
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for (s, w) in scores.iter_mut().zip(weights.iter_mut()) {
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if *s > max {
            ms = crate::libc::expf(max - *s);
            max = *s;
        } else {
            vs = crate::libc::expf(*s - max);
        }
        (*s, *w) = (ms, vs);
        sum = libm::fmaf(sum, ms, vs);
    }
    if sum == 0.0 {
        0.0
    } else {
        1.0 / sum
    }
}

/// Attention over an f16 KV cache, the way llama.cpp's CPU flash attention
/// computes it on x86: the query rounded to f16; each score summed as
/// its AVX2 build sums ([`dot_f16`]), times `scale`; an [`online_softmax`];
/// and each output value accumulated in f16 over the positions (a rescale,
/// then one fused multiply-add, each rounded to f16), then normalised.
/// Skipping a rescale by exactly 1 changes nothing: the accumulator is
/// already an f16 value. `scratch` holds `2 · positions` floats.
pub fn attention_f16(out: &mut [f32], a: F16Attention<'_>, scratch: &mut [f32]) {
    let (n, stride) = (a.q.len(), a.stride);
    let (rescale, weight) = scratch[..2 * a.positions].split_at_mut(a.positions);
    for (t, s) in rescale.iter_mut().enumerate() {
        *s = dot_f16(a.q, &a.keys[t * stride..][..n]) * a.scale;
    }
    let inv = online_softmax(rescale, weight);
    for (i, o) in out.iter_mut().enumerate() {
        *o = mix_f16(a.values, stride, i, rescale, weight) * inv;
    }
}

/// Value `i` of every position, weighed and accumulated in f16.
pub fn mix_f16(values: &[u16], stride: usize, i: usize, rescale: &[f32], weight: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (t, (&ms, &vs)) in rescale.iter().zip(weight).enumerate() {
        if ms != 1.0 {
            acc = round16(acc * ms);
        }
        acc = round16(libm::fmaf(f16_to_f32(values[t * stride + i]), vs, acc));
    }
    acc
}
