//! The int8 block kernels of both levels: Q8_0, Q4_0 and Q4_1 (blocks of
//! 32 values with an f16 scale), llama2.c's Q8G (groups of a multiple of 32
//! values with an f32 scale), and the quantizers of the input they take.
//! Each computes exact integer sums per block and then the scalar twin's
//! float formula, so they equal it bit for bit.

use core::arch::x86_64::*;

use core::marker::PhantomData;

use super::{
    by_rows, f16_at, first_lanes, hmax8, hsum8, hsum_each, hsum_i32, per_input, prefetch, Level,
    Rows,
};
use crate::kernels::input::Q8kBlocks;
use crate::kernels::{scalar, Input};

/// Thirty-two i32 lanes (four vectors) as bytes in order, saturating.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pack_i8(q: [__m256i; 4]) -> __m256i {
    let bytes = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    // The packs interleave 128-bit halves: put the four-byte groups back.
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn abs8(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// The scalar twin's `quantize_q8_0`, equal to it for finite input:
/// `cvtps2dq` rounds half to even in the default rounding mode.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { quantize_blocks32(x, qs, d, &mut []) }
}

/// The scalar twin's `quantize_q8_1`, equal to it for finite input.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn quantize_q8_1(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { quantize_blocks32(x, qs, d, s) }
}

/// Blocks of 32 values quantized as Q8_0, with their scaled sums in `s`
/// unless it is empty (Q8_1).
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
unsafe fn quantize_blocks32(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (b, db) in d.iter_mut().enumerate() {
        // SAFETY: the level's features (contract 1); `x` and `qs` hold 32
        // values per scale in `d` (contract 2), so block `b` is inside both.
        unsafe {
            let p = x.as_ptr().add(32 * b);
            let (mut v, mut m) = ([_mm256_setzero_ps(); 4], _mm256_setzero_ps());
            for (k, v) in v.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(p.add(8 * k));
                m = _mm256_max_ps(m, abs8(*v));
            }
            let amax = hmax8(m);
            *db = scalar::block_scale(amax);
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let mut q = [_mm256_setzero_si256(); 4];
            for (q, &v) in q.iter_mut().zip(&v) {
                *q = _mm256_cvtps_epi32(_mm256_mul_ps(v, id));
            }
            _mm256_storeu_si256(qs.as_mut_ptr().add(32 * b).cast(), pack_i8(q));
            if let Some(s) = s.get_mut(b) {
                let sum = hsum_i32(_mm256_add_epi32(
                    _mm256_add_epi32(q[0], q[1]),
                    _mm256_add_epi32(q[2], q[3]),
                ));
                *s = scalar::block_sum(amax, sum);
            }
        }
    }
}

/// The x86 vectors for [`quantize_q8_k_by`](crate::kernels::input::quantize_q8_k_by).
pub(super) struct Q8k;

impl Q8kBlocks for Q8k {
    #[inline(always)]
    unsafe fn amax(xb: &[f32]) -> f32 {
        // SAFETY: the level's features (contract 1); the loads stay in `xb`
        // (256 values).
        unsafe {
            let mut m = _mm256_setzero_ps();
            for k in 0..32 {
                m = _mm256_max_ps(m, abs8(_mm256_loadu_ps(xb.as_ptr().add(8 * k))));
            }
            hmax8(m)
        }
    }

    #[inline(always)]
    unsafe fn quantize(xb: &[f32], iscale: f32, q: &mut [i8], sums: &mut [i16]) {
        // SAFETY: the level's features (contract 1); group `g` of 32 values
        // lies inside `xb` (256 values) and `q` (as many).
        unsafe {
            let (sv, cap) = (_mm256_set1_ps(iscale), _mm256_set1_epi32(127));
            for g in 0..8 {
                let mut v = [_mm256_setzero_si256(); 4];
                for (k, v) in v.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(xb.as_ptr().add(32 * g + 8 * k));
                    *v = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(sv, x)), cap);
                }
                _mm256_storeu_si256(q.as_mut_ptr().add(32 * g).cast(), pack_i8(v));
                sums[2 * g] = hsum_i32(_mm256_add_epi32(v[0], v[1])) as i16;
                sums[2 * g + 1] = hsum_i32(_mm256_add_epi32(v[2], v[3])) as i16;
            }
        }
    }
}

/// The input block's eight lane sums times `−bias` (zero for no bias):
/// what weights stored as unsigned `value + bias` add to a block's lanes.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
unsafe fn correction<L: Level>(bias: i8, x: __m256i) -> __m256i {
    // SAFETY: the level's features (contract 1).
    unsafe {
        match bias {
            0 => _mm256_setzero_si256(),
            _ => _mm256_sub_epi32(
                _mm256_setzero_si256(),
                L::lanes_u(_mm256_set1_epi8(bias), x),
            ),
        }
    }
}

/// A format of blocks of 32 values behind an f16 scale, as the levels
/// read it: the values as unsigned bytes, `value + bias`, and their
/// exact lane sums with an input block.
pub(super) trait Format {
    /// Bytes per block: the scale, then the values.
    const BYTES: usize;

    /// Whether an f16 minimum follows the scale, adding `m·s` per block
    /// with the input block's scaled sum `s` (Q4_1).
    const MIN: bool = false;

    /// What level `L` adds to a value to make it unsigned.
    fn bias<L: Level>() -> i8;

    /// The 32 values of the block at `block`, plus the bias.
    ///
    /// # Safety
    ///
    /// The [contract](super#safety); `block` starts a whole block.
    unsafe fn weights<L: Level>(block: *const u8) -> __m256i;

    /// The eight exact lane sums of a block's `weights` with input block
    /// `x`, whose [`correction`] for the bias is `corr`.
    ///
    /// # Safety
    ///
    /// The [contract](super#safety).
    unsafe fn lanes<L: Level>(w: __m256i, x: __m256i, corr: __m256i) -> __m256i;
}

/// Q8_0: 32 signed bytes.
pub(super) struct Q8_0;

impl Format for Q8_0 {
    const BYTES: usize = 34;

    #[inline(always)]
    fn bias<L: Level>() -> i8 {
        L::Q8_0_BIAS
    }

    #[inline(always)]
    unsafe fn weights<L: Level>(block: *const u8) -> __m256i {
        // SAFETY: the caller's contract; the values follow the scale.
        unsafe { L::q8_0_biased(_mm256_loadu_si256(block.add(2).cast())) }
    }

    #[inline(always)]
    unsafe fn lanes<L: Level>(w: __m256i, x: __m256i, corr: __m256i) -> __m256i {
        // SAFETY: the caller's contract.
        unsafe { L::q8_0_biased_lanes(w, x, corr) }
    }
}

/// 16 bytes of nibbles, the low ones values 0..16, the high ones 16..32,
/// at the end of a block: Q4_0 (stored as value + 8 after the scale) and,
/// with `M`, Q4_1 (unsigned, after the scale and an f16 minimum).
pub(super) struct Nibbles<const M: bool>;

impl<const M: bool> Format for Nibbles<M> {
    const BYTES: usize = if M { 20 } else { 18 };
    const MIN: bool = M;

    #[inline(always)]
    fn bias<L: Level>() -> i8 {
        if M {
            0
        } else {
            8
        }
    }

    #[inline(always)]
    unsafe fn weights<L: Level>(block: *const u8) -> __m256i {
        // SAFETY: the caller's contract; the nibbles end the block.
        unsafe {
            let nib = _mm_loadu_si128(block.add(Self::BYTES - 16).cast());
            let both = _mm256_set_m128i(_mm_srli_epi16::<4>(nib), nib);
            _mm256_and_si256(both, _mm256_set1_epi8(0xf))
        }
    }

    #[inline(always)]
    unsafe fn lanes<L: Level>(w: __m256i, x: __m256i, corr: __m256i) -> __m256i {
        // SAFETY: the caller's contract.
        unsafe { L::lanes_u_acc(corr, w, x) }
    }
}

/// The scalar twin's `matvec_blocks32` for `R` rows of blocks in format
/// `F` and `T` inputs: each weight block is loaded (and unpacked) once
/// and its exact lane sums formed with every input, and each (row, input)
/// accumulates in the order it would alone, so the results are bitwise
/// the same for any `R` and `T`.
///
/// # Safety
///
/// The [contract](super#safety); `rows` start whole rows that the inputs
/// fit.
#[inline(always)]
pub(super) unsafe fn blocks32_rows<L: Level, F: Format, const R: usize, const T: usize>(
    rows: [*const u8; R],
    ahead: usize,
    x: [Input<'_>; T],
) -> [[f32; T]; R] {
    let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
    let sums = x.map(Input::block_sums);
    // SAFETY: the level's features (contract 1); block `b` of every row
    // and input is inside them, as the caller guarantees.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut mins = [[0.0f32; T]; R];
        for b in 0..d[0].len() {
            let (mut xq, mut corr) = ([_mm256_setzero_si256(); T], [_mm256_setzero_si256(); T]);
            let mut xd = [_mm256_setzero_ps(); T];
            for (t, (q, d)) in qs.iter().zip(d).enumerate() {
                xq[t] = _mm256_loadu_si256(q.add(32 * b).cast());
                corr[t] = correction::<L>(F::bias::<L>(), xq[t]);
                xd[t] = _mm256_set1_ps(d[b]);
            }
            for ((a, m), row) in acc.iter_mut().zip(&mut mins).zip(rows) {
                let block = row.add(F::BYTES * b);
                prefetch(block, ahead);
                let wv = F::weights::<L>(block);
                let wd = _mm256_set1_ps(f16_at(block));
                for t in 0..T {
                    // The same rounded product as the scalar `wd * xd`.
                    let scale = _mm256_mul_ps(wd, xd[t]);
                    let sums = _mm256_cvtepi32_ps(F::lanes::<L>(wv, xq[t], corr[t]));
                    a[t] = _mm256_fmadd_ps(scale, sums, a[t]);
                }
                add_mins::<F, T>(m, block, &sums, b);
            }
        }
        let mut out = [[0.0; T]; R];
        for ((o, a), m) in out.iter_mut().zip(&acc).zip(&mins) {
            for ((o, &a), &m) in o.iter_mut().zip(a).zip(m) {
                *o = with_mins::<F>(hsum8(a), m);
            }
        }
        out
    }
}

/// For a format with minimums, adds block `b`'s `m·s` for each input to
/// its running sum `mins[t]`, with a fused multiply-add as the scalar twin.
///
/// # Safety
///
/// The [contract](super#safety); `block` is the row's block `b`, and every
/// input has that block.
#[inline(always)]
pub(super) unsafe fn add_mins<F: Format, const T: usize>(
    mins: &mut [f32; T],
    block: *const u8,
    sums: &[&[f32]; T],
    b: usize,
) {
    if F::MIN {
        // SAFETY: the level's features (contract 1); the minimum follows
        // the scale.
        unsafe {
            let wm = _mm_set_ss(f16_at(block.add(2)));
            for (m, s) in mins.iter_mut().zip(sums) {
                *m = _mm_cvtss_f32(_mm_fmadd_ss(wm, _mm_set_ss(s[b]), _mm_set_ss(*m)));
            }
        }
    }
}

/// A row's result from its lanes' sum: plus its minimums' sum for a format
/// that has them (only then: adding zero would turn −0 into +0).
#[inline(always)]
pub(super) fn with_mins<F: Format>(lanes: f32, mins: f32) -> f32 {
    if F::MIN {
        lanes + mins
    } else {
        lanes
    }
}

/// Rows of blocks in format `F`, as level `L` computes them
/// ([`Level::blocks32_rows`]), for `T` inputs.
struct Blocks32<'x, L, F, const T: usize>([Input<'x>; T], PhantomData<(L, F)>);

impl<L: Level, F: Format, const T: usize> Rows<T> for Blocks32<'_, L, F, T> {
    #[inline(always)]
    unsafe fn rows<const R: usize>(&self, rows: [*const u8; R], ahead: usize) -> [[f32; T]; R] {
        // SAFETY: the caller's contract is the same.
        unsafe { L::blocks32_rows::<F, R, T>(rows, ahead, self.0) }
    }
}

/// Rows of blocks in format `F`, four at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matvec_blocks32<L: Level, F: Format>(
    out: &mut [f32],
    w: &[u8],
    qs: &[i8],
    d: &[f32],
) {
    let x = Blocks32::<L, F, 1>([Input::Q8_0 { qs, d }], PhantomData);
    // SAFETY: the caller's contract.
    unsafe { by_rows::<4, 1>(&mut [out], w, true, &x) };
}

/// [`matvec_blocks32`] for several inputs, bitwise, each weight block
/// loaded (and unpacked) once for a tile of them, `R` rows at a time. The
/// tiles prefetch as matvec does: a beam step or a prompt's first chunk
/// streams the matrix from DRAM like a matvec (without it a 4-beam step
/// took 2.9× a greedy one, with it 1.8×).
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matmul_blocks32<L: Level, F: Format, const R: usize>(
    out: &mut [&mut [f32]],
    w: &[u8],
    x: &[Input<'_>],
) {
    each_tile!(out, x, T, first => {
        let x = Blocks32::<L, F, T>(x, PhantomData);
        // SAFETY: the caller's contract.
        unsafe { by_rows::<R, T>(out, w, first, &x) };
    });
}

/// llama2.c's Q8G rows, as the scalar twin's `matvec_q8g` computes them
/// (group sizes a multiple of 32), for `T` inputs: `w` and `scales` are
/// the matrix's values and scales.
struct Q8g<'x, L, const T: usize> {
    w: *const u8,
    scales: *const u8,
    x: [Input<'x>; T],
    group: usize,
    level: PhantomData<L>,
}

impl<L: Level, const T: usize> Rows<T> for Q8g<'_, L, T> {
    /// Exact integer sums per group, then `runq`'s float step, group
    /// after group.
    #[inline(always)]
    unsafe fn rows<const R: usize>(&self, rows: [*const u8; R], ahead: usize) -> [[f32; T]; R] {
        let (x, group) = (self.x, self.group);
        let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
        let (cols, row_scales) = (x[0].qs().len(), 4 * x[0].scales().len());
        // SAFETY: the level's features (contract 1); each row's scales
        // follow from where its values start; group `g` of every row, of
        // its scales and of every input is inside them, as the caller
        // guarantees.
        unsafe {
            let scales = rows.map(|p| {
                let r = p.offset_from(self.w) as usize / cols;
                self.scales.add(r * row_scales)
            });
            // One f32 lane per input: the float steps of up to four
            // inputs at once, each lane the scalar twin's operations.
            let mut val = [_mm_setzero_ps(); R];
            for g in 0..d[0].len() {
                let mut acc = [[_mm256_setzero_si256(); T]; R];
                for at in (group * g..group * (g + 1)).step_by(32) {
                    let mut xq = [_mm256_setzero_si256(); T];
                    let mut corr = [_mm256_setzero_si256(); T];
                    for t in 0..T {
                        xq[t] = _mm256_loadu_si256(qs[t].add(at).cast());
                        corr[t] = correction::<L>(L::Q8_0_BIAS, xq[t]);
                    }
                    for (a, row) in acc.iter_mut().zip(rows) {
                        prefetch(row.add(at), ahead);
                        let w = L::q8_0_biased(_mm256_loadu_si256(row.add(at).cast()));
                        for t in 0..T {
                            a[t] = _mm256_add_epi32(a[t], L::q8_0_biased_lanes(w, xq[t], corr[t]));
                        }
                    }
                }
                let xs = per_input(d, g);
                for ((v, a), s) in val.iter_mut().zip(acc).zip(scales) {
                    let ws = f32::from_le_bytes(s.add(4 * g).cast::<[u8; 4]>().read());
                    // One input (matvec) sums faster alone than through hadd.
                    let step = if T == 1 {
                        _mm_set_ss(hsum_i32(a[0]) as f32 * ws * d[0][g])
                    } else {
                        let sums = _mm_cvtepi32_ps(hsum_each(a));
                        _mm_mul_ps(_mm_mul_ps(sums, _mm_set1_ps(ws)), xs)
                    };
                    *v = _mm_add_ps(*v, step);
                }
            }
            first_lanes(val)
        }
    }
}

/// Q8G rows four at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matvec_q8g<L: Level>(
    out: &mut [f32],
    w: &[u8],
    scales: &[u8],
    qs: &[i8],
    d: &[f32],
    group: usize,
) {
    let kernel = Q8g::<L, 1> {
        w: w.as_ptr(),
        scales: scales.as_ptr(),
        x: [Input::Q8G { qs, d, group }],
        group,
        level: PhantomData,
    };
    // SAFETY: the caller's contract.
    unsafe { by_rows::<4, 1>(&mut [out], w, true, &kernel) };
}

/// [`matvec_q8g`] for several inputs, bitwise, each weight vector
/// loaded once for a tile of them, `R` rows at a time.
///
/// # Safety
///
/// The [contract](super#safety).
#[inline(always)]
pub(super) unsafe fn matmul_q8g<L: Level, const R: usize>(
    out: &mut [&mut [f32]],
    w: &[u8],
    scales: &[u8],
    x: &[Input<'_>],
    group: usize,
) {
    each_tile!(out, x, T, first => {
        let kernel = Q8g::<L, T> {
            w: w.as_ptr(),
            scales: scales.as_ptr(),
            x,
            group,
            level: PhantomData,
        };
        // SAFETY: the caller's contract.
        unsafe { by_rows::<R, T>(out, w, first, &kernel) };
    });
}
