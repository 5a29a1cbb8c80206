//! The specification of every kernel: straightforward Rust, summing left to
//! right exactly as llama2.c's `run.c` does. SIMD twins are tested against it.
//! Weights arrive as little-endian bytes at any alignment and are decoded in
//! place; nothing is copied.

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
    let row_bytes = x.len() * 4;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut sum = 0.0f32;
        for (i, &xi) in x.iter().enumerate() {
            sum += f32_at(row, i) * xi;
        }
        *o = sum;
    }
}

pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
    let mut ss = 0.0f32;
    for &v in x {
        ss += v * v;
    }
    ss /= x.len() as f32;
    ss += eps;
    let scale = 1.0 / libm::sqrtf(ss);
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

/// Rotates the pairs of one head (or the tail of one, for SIMD twins).
pub fn rope_pairs(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (v0, v1) = (pair[0], pair[1]);
        pair[0] = v0 * c - v1 * s;
        pair[1] = v0 * s + v1 * c;
    }
}

pub fn swiglu(h: &mut [f32], g: &[f32]) {
    for (hv, &gv) in h.iter_mut().zip(g) {
        let v = *hv;
        *hv = v * (1.0 / (1.0 + libm::expf(-v))) * gv;
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (&x, &y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

pub fn attention_scores(scores: &mut [f32], q: &[f32], keys: &[f32], stride: usize, scale: f32) {
    for (t, s) in scores.iter_mut().enumerate() {
        *s = dot(q, &keys[t * stride..][..q.len()]) / scale;
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
