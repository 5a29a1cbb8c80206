//! The AVX-512 f32 matrix–matrix kernel: up to six inputs at once, with
//! each weight vector loaded once for them all, and loads that never split
//! a cache line where rows and inputs start alike off one.

use core::arch::x86_64::*;

use super::mask;
use crate::kernels::{store_rows, Input};

/// [`super::rows`] for `T` inputs at once: each weight vector is loaded
/// once and multiplied into every input's accumulator, and each (row,
/// input) sum runs in the order `rows` gives it alone, so the results are
/// bitwise the same.
///
/// With `h` ≠ 0, rows and inputs all start `h` floats (0 < h < 16) past a
/// cache line and `n` is a multiple of 16: the loads then start at that
/// line, so none splits two. Each accumulator holds the lanes rotated by
/// `h`, the same sums in the same order (the partial first and last loads
/// leave the other lanes untouched), which [`sums`] adds up as it would
/// unrotated.
///
/// # Safety
///
/// The [contract](crate::kernels::x86#safety); `w` starts `R` rows of `n`
/// floats, `stride` apart, and each `x[t]` holds `n` floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rows_t<const R: usize, const T: usize>(
    w: *const f32,
    ahead: usize,
    stride: usize,
    n: usize,
    x: [*const f32; T],
    h: usize,
) -> [[f32; T]; R] {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    // SAFETY: the steps read values `i..i + 16` with `i + 16 ≤ n`, then
    // the masked values `i..n`; rotated, from `h` floats before each row
    // and input, the first step reads lanes `h..16` (values `0..16 − h`),
    // the next whole vectors below `n − h`, the last lanes `0..h` (values
    // `n − h..n`). No other lane is touched.
    unsafe {
        if h == 0 {
            let mut i = 0;
            while i + 16 <= n {
                step(&mut acc, (w, ahead, stride), x, i, !0, false);
                i += 16;
            }
            if i < n {
                step(&mut acc, (w, ahead, stride), x, i, mask(n - i), false);
            }
        } else {
            let (w, x) = (w.wrapping_sub(h), x.map(|x| x.wrapping_sub(h)));
            step(&mut acc, (w, ahead, stride), x, 0, !mask(h), true);
            let mut i = 16;
            while i < n {
                step(&mut acc, (w, ahead, stride), x, i, !0, true);
                i += 16;
            }
            step(&mut acc, (w, ahead, stride), x, n, mask(h), true);
        }
    }
    sums(acc)
}

/// One vector of [`rows_t`] at `i`: the rows' lanes `m` (zero elsewhere)
/// loaded, and the line `ahead` past them prefetched (none for `ahead`
/// 0); then each input's, multiplied into its accumulators. With
/// `keep`, lanes outside `m` are left as they were; else they add the
/// zero product, as `rows` does.
///
/// # Safety
///
/// The [contract](crate::kernels::x86#safety); lanes `m` of the vector at
/// `i` exist in each of the `R` rows and the inputs.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn step<const R: usize, const T: usize>(
    acc: &mut [[__m512; T]; R],
    (w, ahead, stride): (*const f32, usize, usize),
    x: [*const f32; T],
    i: usize,
    m: __mmask16,
    keep: bool,
) {
    // SAFETY: masked loads touch only lanes `m`, which the caller
    // guarantees exist (the vector may start before a row or input, hence
    // the wrapping address arithmetic); a prefetch never faults.
    unsafe {
        let wv: [__m512; R] = core::array::from_fn(|k| {
            let at = w.wrapping_add(k * stride + i);
            if ahead != 0 {
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(ahead).cast());
            }
            _mm512_maskz_loadu_ps(m, at)
        });
        for (t, x) in x.iter().enumerate() {
            let xv = _mm512_maskz_loadu_ps(m, x.wrapping_add(i));
            for (a, &wv) in acc.iter_mut().zip(&wv) {
                a[t] = match keep {
                    true => _mm512_mask3_fmadd_ps(wv, xv, a[t], m),
                    false => _mm512_fmadd_ps(wv, xv, a[t]),
                };
            }
        }
    }
}

/// `_mm512_reduce_add_ps` of each vector, bitwise, sixteen at a time:
/// its tree (lane `l` plus lane `l + w/2` at each width `w`: 16, 8, 4,
/// 2), each step done for two vectors' lanes per instruction, about a
/// third of the shuffles and adds of sixteen separate reductions. That
/// tree gives the same sum for lanes rotated by any amount (each step
/// pairs the same lanes), which [`rows_t`] relies on.
#[target_feature(enable = "avx512f")]
#[inline]
fn sums<const R: usize, const T: usize>(acc: [[__m512; T]; R]) -> [[f32; T]; R] {
    const { assert!(R * T <= 32) };
    let mut v = [_mm512_setzero_ps(); 32];
    for (v, a) in v.iter_mut().zip(acc.iter().flatten()) {
        *v = *a;
    }
    let lo = sums16(core::array::from_fn(|i| v[i]));
    let hi = match R * T > 16 {
        true => sums16(core::array::from_fn(|i| v[16 + i])),
        false => [0.0; 16],
    };
    core::array::from_fn(|r| {
        core::array::from_fn(|t| match r * T + t {
            i @ 0..16 => lo[i],
            i => hi[i - 16],
        })
    })
}

/// [`sums`] of sixteen vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn sums16(v: [__m512; 16]) -> [f32; 16] {
    // Each 256-bit half: one vector's lanes plus the eight above them.
    let h8: [__m512; 8] = core::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    });
    // Each 128-bit quarter: vector 4i + q's four lanes plus the four above.
    let h4: [__m512; 4] = core::array::from_fn(|i| {
        let (a, b) = (h8[2 * i], h8[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    });
    // Quarter q: vectors q and q + 4 (then q + 8, q + 12), two lanes each.
    let h2: [__m512; 2] = core::array::from_fn(|i| {
        let (a, b) = (h4[2 * i], h4[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(a, b),
            _mm512_shuffle_ps::<0xEE>(a, b),
        )
    });
    // Lane 4q + m: vector 4m + q's sum.
    let h1 = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(h2[0], h2[1]),
        _mm512_shuffle_ps::<0xDD>(h2[0], h2[1]),
    );
    let mut lanes = [0.0f32; 16];
    // SAFETY: `lanes` has room for the sixteen floats written.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), h1) };
    core::array::from_fn(|i| lanes[4 * (i % 4) + i / 4])
}

/// [`super::matvec_f32`] for `T` inputs, four rows at a time. With
/// `prefetch` (the first tile over these rows, which streams them from
/// DRAM) it asks for the rows eight ahead; later tiles find the rows in
/// L2, and prefetching them into L1 again cost F32 prefill 15–20%.
///
/// # Safety
///
/// The [contract](crate::kernels::x86#safety); `w` holds `out[0].len()`
/// rows of `x[0].len()` floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const T: usize>(
    out: &mut [&mut [f32]],
    w: *const f32,
    x: [&[f32]; T],
    prefetch: bool,
) {
    let n = x[0].len();
    let xp = x.map(|x| x.as_ptr());
    let rows = out[0].len();
    // Rows and inputs off a cache line alike: the rotated loads.
    let phase = |p: *const f32| p as usize % 64;
    let aligned_alike = xp.iter().all(|&x| phase(x) == phase(w)) && phase(w) % 4 == 0;
    let h = match n.is_multiple_of(16) && aligned_alike {
        true => phase(w) / 4,
        false => 0,
    };
    let ahead = |rows: usize| usize::from(prefetch) * rows * n;
    let mut r = 0;
    // SAFETY: rows `r..r + 4` (or row `r`) are below `rows`, which the
    // caller guarantees `w` holds.
    unsafe {
        while r + 4 <= rows {
            store_rows(out, r, &rows_t::<4, T>(w.add(r * n), ahead(8), n, n, xp, h));
            r += 4;
        }
        for r in r..rows {
            store_rows(out, r, &rows_t::<1, T>(w.add(r * n), ahead(2), n, n, xp, h));
        }
    }
}

/// `out[t] = w · x[t]` for several inputs: [`super::matvec_f32`] for each,
/// bitwise, loading each weight vector once for up to six of them
/// (four rows by six inputs: 24 accumulators, 10 loads per 24
/// multiply-adds; these weights need no unpacking, so loads are what a
/// tile has to save).
///
/// # Safety
///
/// The [contract](crate::kernels::x86#safety).
#[target_feature(enable = "avx512f")]
pub unsafe fn matmul_f32(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
    let w = w.as_ptr().cast::<f32>();
    for (i, (out, x)) in out.chunks_mut(6).zip(x.chunks(6)).enumerate() {
        // SAFETY: `w` holds the outputs' rows of the inputs' length (contract 2).
        unsafe {
            match *x {
                [a] => tile(out, w, [a.f32s()], i == 0),
                [a, b] => tile(out, w, [a, b].map(Input::f32s), i == 0),
                [a, b, c] => tile(out, w, [a, b, c].map(Input::f32s), i == 0),
                [a, b, c, d] => tile(out, w, [a, b, c, d].map(Input::f32s), i == 0),
                [a, b, c, d, e] => tile(out, w, [a, b, c, d, e].map(Input::f32s), i == 0),
                [a, b, c, d, e, f] => tile(out, w, [a, b, c, d, e, f].map(Input::f32s), i == 0),
                _ => {}
            }
        }
    }
}
