//! x86_64 twins of the scalar kernels: AVX2+FMA (8 lanes) and AVX-512F
//! (16 lanes, masked tails).
//!
//! Decode is bound by how fast one core streams weights from DRAM, and one
//! core reads faster from several streams at once than from one: matvec
//! reads `ROWS` rows in parallel (measured here: 8 streams ≈ 1.3× one).
//!
//! # Safety (every function here)
//!
//! The caller guarantees that the CPU has the module's features (an `Isa`
//! value of that level is the proof) and that slice lengths are what the
//! scalar twin's entry point in `kernels` checked: `w.len() == rows · cols ·
//! 4` for a matrix, equal lengths for vectors, `v.len()` a multiple of
//! `2 · cos.len()` for RoPE. Weight bytes may have any alignment: only
//! unaligned loads touch them.

/// The integer and half-precision kernels of both x86 levels: 256-bit code
/// whose only difference is the module's `lanes_u` (the eight sums of four
/// unsigned × signed byte products): `pmaddubsw`+`pmaddwd` on AVX2,
/// `vpdpbusd` with AVX-512 VNNI, and the Q8_0 biasing that goes with it.
/// Each computes exact integer sums per block and then the scalar twin's
/// float formula, so they equal it bit for bit. `$tile_rows` is the rows of
/// the matrix–matrix tile: the 256-bit `blocks32_tile_rows` itself, or a
/// wider equal; `$tile_r` rows at a time (eight where 32 registers hold
/// them, which shares each input block's setup among more rows).
macro_rules! block_kernels {
    ($features:literal, $tile_rows:ident, $tile_r:literal) => {
        /// A Q8_0 block's lanes from its stored (signed) bytes.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q8_0_lanes(w: __m256i, x: __m256i, corr: __m256i) -> __m256i {
            q8_0_biased_lanes(q8_0_biased(w), x, corr)
        }

        /// GGML's horizontal sum of eight floats: halves, then pairs.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn hsum8(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn hmax8(v: __m256) -> f32 {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn hsum_i32(v: __m256i) -> i32 {
            hsum4_i32(_mm_add_epi32(
                _mm256_castsi256_si128(v),
                _mm256_extracti128_si256::<1>(v),
            ))
        }

        /// The sums of each of four vectors' lanes, in one vector.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn hsum4x_i32(v: [__m256i; 4]) -> __m128i {
            let s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
        }

        /// Up to four inputs' values of block `b`, one per lane (zeros past `T`).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn per_input<const T: usize>(d: [&[f32]; T], b: usize) -> __m128 {
            let mut lanes = [0.0f32; 4];
            for (l, d) in lanes.iter_mut().zip(d) {
                *l = d[b];
            }
            _mm_loadu_ps(lanes.as_ptr())
        }

        /// [`hsum4x_i32`] of up to four vectors.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn hsum_each<const T: usize>(v: [__m256i; T]) -> __m128i {
            let z = _mm256_setzero_si256();
            hsum4x_i32(core::array::from_fn(|t| if t < T { v[t] } else { z }))
        }

        /// Each row's first `T` lanes: the sums [`per_input`] laid out.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn first_lanes<const R: usize, const T: usize>(v: [__m128; R]) -> [[f32; T]; R] {
            v.map(|v| {
                let mut lanes = [0.0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), v);
                core::array::from_fn(|t| lanes[t])
            })
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn hsum4_i32(s: __m128i) -> i32 {
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b1011_0001>(s)))
        }

        /// The eight sums of four `a` (unsigned) × `b` (signed) byte products.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn lanes_u(a: __m256i, b: __m256i) -> __m256i {
            lanes_u_acc(_mm256_setzero_si256(), a, b)
        }

        /// The little-endian f16 at `p` (any alignment) as f32.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn f16_at(p: *const u8) -> f32 {
            let bits = i32::from(p.cast::<u16>().read_unaligned());
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
        }

        /// `x` rounded to the nearest f16 (ties to even), as f32.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn round16(x: __m256) -> __m256 {
            _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
        }

        /// `out[t][r] = row r · input t` for every row of `w`: `R` rows per
        /// pass (`many`: each input block loaded once for them all, their
        /// dependency chains interleaved), then one at a time (`one`), each
        /// told to prefetch two passes ahead, or (`ahead` 0) not at all.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn by_rows<const R: usize, const T: usize>(
            out: &mut [&mut [f32]],
            w: &[u8],
            prefetch: bool,
            many: impl Fn([*const u8; R], usize) -> [[f32; T]; R],
            one: impl Fn([*const u8; 1], usize) -> [[f32; T]; 1],
        ) {
            let rows = out[0].len();
            let row_bytes = w.len() / rows.max(1);
            let row = |r: usize| w.as_ptr().add(r * row_bytes);
            let ahead = |passes: usize| usize::from(prefetch) * passes * row_bytes;
            let whole = rows / R * R;
            for r in (0..whole).step_by(R) {
                crate::kernels::store_rows(out, r, &many(core::array::from_fn(|k| row(r + k)), ahead(2 * R)));
            }
            for r in whole..rows {
                crate::kernels::store_rows(out, r, &one([row(r)], ahead(2)));
            }
        }

        /// Asks for the cache line `ahead` bytes past `p`: the same spot some
        /// rows further. Each matrix is read once per token from DRAM, and
        /// these kernels do enough arithmetic per byte to fill the
        /// out-of-order window before enough loads are in flight. (A line
        /// past the matrix is never touched: prefetching does not fault.)
        /// `ahead` 0 asks for nothing: a matmul's later tiles read rows the
        /// first one brought into L2, and prefetching them into L1 again
        /// only crowds out the inputs.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn prefetch(p: *const u8, ahead: usize) {
            if ahead != 0 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
            }
        }

        /// Thirty-two i32 lanes (four vectors) as bytes in order, saturating.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn pack_i8(q: [__m256i; 4]) -> __m256i {
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            // The packs interleave 128-bit halves: put the four-byte groups back.
            _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn abs8(v: __m256) -> __m256 {
            _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
        }

        /// The scalar twin's `quantize_q8_0`, equal to it for finite input:
        /// `cvtps2dq` rounds half to even in the default rounding mode.
        #[target_feature(enable = $features)]
        pub unsafe fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
            for (b, db) in d.iter_mut().enumerate() {
                let p = x.as_ptr().add(32 * b);
                let v: [__m256; 4] = core::array::from_fn(|k| _mm256_loadu_ps(p.add(8 * k)));
                let amax = hmax8(
                    v.iter()
                        .fold(_mm256_setzero_ps(), |m, &x| _mm256_max_ps(m, abs8(x))),
                );
                *db = crate::tensor::f16_to_f32(crate::tensor::f32_to_f16(amax / 127.0));
                let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
                let q = v.map(|x| _mm256_cvtps_epi32(_mm256_mul_ps(x, id)));
                _mm256_storeu_si256(qs.as_mut_ptr().add(32 * b).cast(), pack_i8(q));
            }
        }

        /// The scalar twin's `quantize_q8_k`, equal to it for finite input.
        #[target_feature(enable = $features)]
        pub unsafe fn quantize_q8_k(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
            for (b, db) in d.iter_mut().enumerate() {
                let xb = &x[256 * b..256 * b + 256];
                let (q, sums) = (
                    &mut qs[256 * b..256 * b + 256],
                    &mut bsums[16 * b..16 * b + 16],
                );
                let p = xb.as_ptr();
                let mut m = _mm256_setzero_ps();
                for k in 0..32 {
                    m = _mm256_max_ps(m, abs8(_mm256_loadu_ps(p.add(8 * k))));
                }
                let amax = hmax8(m);
                let Some(&max) = xb.iter().find(|v| v.abs() == amax).filter(|_| amax != 0.0) else {
                    *db = 0.0;
                    q.fill(0);
                    sums.fill(0);
                    continue;
                };
                let iscale = -127.0 / max;
                let (sv, cap) = (_mm256_set1_ps(iscale), _mm256_set1_epi32(127));
                for g in 0..8 {
                    let v: [__m256i; 4] = core::array::from_fn(|k| {
                        let x = _mm256_loadu_ps(p.add(32 * g + 8 * k));
                        _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(sv, x)), cap)
                    });
                    _mm256_storeu_si256(q.as_mut_ptr().add(32 * g).cast(), pack_i8(v));
                    sums[2 * g] = hsum_i32(_mm256_add_epi32(v[0], v[1])) as i16;
                    sums[2 * g + 1] = hsum_i32(_mm256_add_epi32(v[2], v[3])) as i16;
                }
                *db = 1.0 / iscale;
            }
        }

        /// The scalar twin's `matvec_blocks32` for `R` rows. `lanes` gives
        /// a block's eight exact lane sums from its bytes, the input block
        /// and `corr`: the input's lane sums times `−bias`, computed once
        /// for all rows, for weights stored as unsigned `value + bias`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn blocks32_rows<const R: usize>(
            rows: [*const u8; R],
            ahead: usize,
            qs: &[i8],
            d: &[f32],
            block_bytes: usize,
            bias: i8,
            lanes: impl Fn(*const u8, __m256i, __m256i) -> __m256i,
        ) -> [f32; R] {
            let mut acc = [_mm256_setzero_ps(); R];
            for (b, &xd) in d.iter().enumerate() {
                let xq = _mm256_loadu_si256(qs.as_ptr().add(32 * b).cast());
                let corr = match bias {
                    0 => _mm256_setzero_si256(),
                    _ => _mm256_sub_epi32(
                        _mm256_setzero_si256(),
                        lanes_u(_mm256_set1_epi8(bias), xq),
                    ),
                };
                for (a, row) in acc.iter_mut().zip(rows) {
                    let block = row.add(block_bytes * b);
                    prefetch(block, ahead);
                    let scale = _mm256_set1_ps(f16_at(block) * xd);
                    *a = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes(block, xq, corr)), *a);
                }
            }
            let mut out = [0.0; R];
            for (o, a) in out.iter_mut().zip(acc) {
                *o = hsum8(a);
            }
            out
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q8_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
            let lanes = |block: *const u8, x, corr| {
                q8_0_lanes(_mm256_loadu_si256(block.add(2).cast()), x, corr)
            };
            by_rows::<4, 1>(
                &mut [out],
                w,
                true,
                |r, a| blocks32_rows(r, a, qs, d, 34, Q8_0_BIAS, lanes).map(|v| [v]),
                |r, a| blocks32_rows(r, a, qs, d, 34, Q8_0_BIAS, lanes).map(|v| [v]),
            );
        }

        /// [`blocks32_rows`] for `T` inputs at once: each weight block is
        /// loaded (`weights`: its 32 values as bytes, stored `+ bias`) once
        /// and its exact lane sums formed with every input (`lanes`, as
        /// in `blocks32_rows`); each (row, input) accumulates in the order
        /// `blocks32_rows` uses alone, so the results are bitwise the same.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn blocks32_tile_rows<const R: usize, const T: usize>(
            rows: [*const u8; R],
            ahead: usize,
            qs: [*const i8; T],
            d: [&[f32]; T],
            (block_bytes, bias): (usize, i8),
            weights: impl Fn(*const u8) -> __m256i,
            lanes: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
        ) -> [[f32; T]; R] {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            for b in 0..d[0].len() {
                let xq = qs.map(|q| _mm256_loadu_si256(q.add(32 * b).cast()));
                let corr = xq.map(|x| match bias {
                    0 => _mm256_setzero_si256(),
                    _ => {
                        _mm256_sub_epi32(_mm256_setzero_si256(), lanes_u(_mm256_set1_epi8(bias), x))
                    }
                });
                let xd = d.map(|d| _mm256_set1_ps(d[b]));
                for (a, row) in acc.iter_mut().zip(rows) {
                    let block = row.add(block_bytes * b);
                    prefetch(block, ahead);
                    let wv = weights(block);
                    let wd = _mm256_set1_ps(f16_at(block));
                    for t in 0..T {
                        // The same rounded product as the scalar `wd * xd`.
                        let scale = _mm256_mul_ps(wd, xd[t]);
                        let sums = _mm256_cvtepi32_ps(lanes(wv, xq[t], corr[t]));
                        a[t] = _mm256_fmadd_ps(scale, sums, a[t]);
                    }
                }
            }
            acc.map(|a| a.map(|a| hsum8(a)))
        }

        /// `$tile_rows` (the module's choice of tile) over every row,
        /// `$tile_r` at a time, for each group of inputs. The tiles
        /// prefetch as matvec does: a beam step or a prompt's first chunk
        /// streams the matrix from DRAM like a matvec (without it a 4-beam
        /// step took 2.9× a greedy one, with it 1.8×).
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn blocks32_matmul(
            out: &mut [&mut [f32]],
            w: &[u8],
            x: &[Input<'_>],
            format: (usize, i8),
            weights: impl Fn(*const u8) -> __m256i + Copy,
            lanes: impl Fn(__m256i, __m256i, __m256i) -> __m256i + Copy,
        ) {
            each_tile!(out, x, T, first => {
                let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
                by_rows::<$tile_r, T>(
                    out,
                    w,
                    first,
                    |r, a| $tile_rows(r, a, qs, d, format, weights, lanes),
                    |r, a| $tile_rows(r, a, qs, d, format, weights, lanes),
                );
            });
        }

        /// [`matvec_q8_0`] for several inputs, bitwise, each weight block
        /// loaded once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q8_0(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            let weights = |block: *const u8| q8_0_biased(_mm256_loadu_si256(block.add(2).cast()));
            let lanes = |w, x, corr| q8_0_biased_lanes(w, x, corr);
            blocks32_matmul(out, w, x, (34, Q8_0_BIAS), weights, lanes);
        }

        /// [`matvec_q4_0`] for several inputs, bitwise, each block's
        /// nibbles unpacked once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q4_0(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            let low = _mm256_set1_epi8(0xf);
            let weights = |block: *const u8| {
                let nib = _mm_loadu_si128(block.add(2).cast());
                let both = _mm256_set_m128i(_mm_srli_epi16::<4>(nib), nib);
                _mm256_and_si256(both, low)
            };
            let lanes = |w, x, corr| lanes_u_acc(corr, w, x);
            blocks32_matmul(out, w, x, (18, 8), weights, lanes);
        }

        /// Nibbles are stored as value + 8: low ones are values 0..16,
        /// high ones 16..32.
        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q4_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32]) {
            let low = _mm256_set1_epi8(0xf);
            let lanes = |block: *const u8, x, corr| {
                let nib = _mm_loadu_si128(block.add(2).cast());
                let both = _mm256_set_m128i(_mm_srli_epi16::<4>(nib), nib);
                lanes_u_acc(corr, _mm256_and_si256(both, low), x)
            };
            by_rows::<4, 1>(
                &mut [out],
                w,
                true,
                |r, a| blocks32_rows(r, a, qs, d, 18, 8, lanes).map(|v| [v]),
                |r, a| blocks32_rows(r, a, qs, d, 18, 8, lanes).map(|v| [v]),
            );
        }

        /// The scalar twin's `matvec_q8g` for `R` rows (`scales[k]` holds
        /// row `k`'s) and `T` inputs, the group size a multiple of 32:
        /// exact integer sums per group, then `runq`'s float step, group
        /// after group.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q8g_rows<const R: usize, const T: usize>(
            rows: [*const u8; R],
            scales: [*const u8; R],
            ahead: usize,
            x: [Input<'_>; T],
            group: usize,
        ) -> [[f32; T]; R] {
            let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
            // One f32 lane per input: the float steps of up to four inputs
            // at once, each lane the scalar twin's operations.
            let mut val = [_mm_setzero_ps(); R];
            for g in 0..d[0].len() {
                let mut acc = [[_mm256_setzero_si256(); T]; R];
                for at in (group * g..group * (g + 1)).step_by(32) {
                    let xq = qs.map(|q| _mm256_loadu_si256(q.add(at).cast()));
                    let corr = xq.map(|x| match Q8_0_BIAS {
                        0 => _mm256_setzero_si256(),
                        bias => {
                            _mm256_sub_epi32(_mm256_setzero_si256(), lanes_u(_mm256_set1_epi8(bias), x))
                        }
                    });
                    for (a, row) in acc.iter_mut().zip(rows) {
                        prefetch(row.add(at), ahead);
                        let w = q8_0_biased(_mm256_loadu_si256(row.add(at).cast()));
                        for t in 0..T {
                            a[t] = _mm256_add_epi32(a[t], q8_0_biased_lanes(w, xq[t], corr[t]));
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

        /// [`q8g_rows`] over every row, `R` at a time; `scales` holds
        /// `groups` per row.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q8g_by_rows<const R: usize, const T: usize>(
            out: &mut [&mut [f32]],
            w: &[u8],
            scales: &[u8],
            x: [Input<'_>; T],
            group: usize,
            prefetch: bool,
        ) {
            let (cols, row_scales) = (x[0].qs().len(), 4 * x[0].scales().len());
            // Row `r`'s scales, from where by_rows says its values start.
            let s = |p: *const u8| {
                scales
                    .as_ptr()
                    .add(p.offset_from(w.as_ptr()) as usize / cols * row_scales)
            };
            by_rows::<R, T>(
                out,
                w,
                prefetch,
                |r, a| q8g_rows(r, r.map(s), a, x, group),
                |r, a| q8g_rows(r, r.map(s), a, x, group),
            );
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q8g(
            out: &mut [f32],
            w: &[u8],
            scales: &[u8],
            qs: &[i8],
            d: &[f32],
            group: usize,
        ) {
            let x = [Input::Q8G { qs, d, group }];
            q8g_by_rows::<4, 1>(&mut [out], w, scales, x, group, true);
        }

        /// [`matvec_q8g`] for several inputs, bitwise, each weight vector
        /// loaded once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q8g(
            out: &mut [&mut [f32]],
            w: &[u8],
            scales: &[u8],
            x: &[Input<'_>],
            group: usize,
        ) {
            each_tile!(out, x, T, first => {
                q8g_by_rows::<{ $tile_r / 2 }, T>(out, w, scales, x, group, first);
            });
        }

        /// The eight lane sums of four `a` (unsigned, below 64) × `b`
        /// (signed) byte products, each times its lane's 16-bit scale
        /// (`s`, the same in both halves of a lane). Exact: a pair of
        /// products is at most 2·63·128 in magnitude, below 2^15.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn scaled_lanes(a: __m256i, b: __m256i, s: __m256i) -> __m256i {
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), s)
        }

        /// The 16-bit lanes of `v` all set to its 16-bit lane `i` (< 8),
        /// in both halves.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn spread16(v: __m256i, i: usize) -> __m256i {
            let pair = (((2 * i + 1) << 8) | (2 * i)) as i16;
            _mm256_shuffle_epi8(v, _mm256_set1_epi16(pair))
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q4k_rows<const R: usize, const T: usize>(
            rows: [*const u8; R],
            ahead: usize,
            x: [Input<'_>; T],
        ) -> [[f32; T]; R] {
            let low = _mm256_set1_epi8(0xf);
            let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
            let bsums = x.map(|x| x.bsums().as_ptr());
            // One f32 lane per input, as in `q8g_rows`.
            let mut sum = [_mm_setzero_ps(); R];
            for b in 0..d[0].len() {
                let x = qs.map(|q| q.add(256 * b));
                let xd = per_input(d, b);
                // Σx of each 32-value sub-block, the mins' partners.
                let pairs = bsums.map(|s| {
                    let bs = _mm256_loadu_si256(s.add(16 * b).cast());
                    _mm_hadd_epi16(
                        _mm256_castsi256_si128(bs),
                        _mm256_extracti128_si256::<1>(bs),
                    )
                });
                for (s, row) in sum.iter_mut().zip(rows) {
                    let block = row.add(144 * b);
                    // Every line the block touches; its last is the next block's first.
                    for line in [0, 64, 128] {
                        prefetch(block.add(line), ahead);
                    }
                    let w =
                        crate::kernels::scalar::q4k_scale_words(&*block.add(4).cast::<[u8; 12]>());
                    let words = _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32);
                    // 16-bit lanes: the eight scales, then the eight mins.
                    let both = _mm256_cvtepu8_epi16(words);
                    let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(both));
                    let mins = _mm256_extracti128_si256::<1>(both);
                    let mut sumi = [_mm256_setzero_si256(); T];
                    for j in 0..4 {
                        let q = _mm256_loadu_si256(block.add(16 + 32 * j).cast());
                        let lo = _mm256_and_si256(q, low);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                        let (sl, sh) = (spread16(scales, 2 * j), spread16(scales, 2 * j + 1));
                        for (sumi, x) in sumi.iter_mut().zip(x) {
                            let xl = _mm256_loadu_si256(x.add(64 * j).cast());
                            let xh = _mm256_loadu_si256(x.add(64 * j + 32).cast());
                            *sumi = _mm256_add_epi32(*sumi, scaled_lanes(lo, xl, sl));
                            *sumi = _mm256_add_epi32(*sumi, scaled_lanes(hi, xh, sh));
                        }
                    }
                    let (dw, dmin) = (f16_at(block), f16_at(block.add(2)));
                    let msums = pairs.map(|p| _mm_madd_epi16(mins, p));
                    let step = if T == 1 {
                        let (isum, msum) = (hsum_i32(sumi[0]), hsum4_i32(msums[0]));
                        _mm_set_ss((dw * d[0][b]) * isum as f32 - (dmin * d[0][b]) * msum as f32)
                    } else {
                        let isum = _mm_cvtepi32_ps(hsum_each(sumi));
                        let wide = msums.map(|m| _mm256_zextsi128_si256(m));
                        let msum = _mm_cvtepi32_ps(hsum_each(wide));
                        _mm_sub_ps(
                            _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dw), xd), isum),
                            _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dmin), xd), msum),
                        )
                    };
                    *s = _mm_add_ps(*s, step);
                }
            }
            first_lanes(sum)
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q4k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
            let x = [Input::Q8K { qs, d, bsums }];
            by_rows::<4, 1>(&mut [out], w, true, |r, a| q4k_rows(r, a, x), |r, a| q4k_rows(r, a, x));
        }

        /// [`matvec_q4k`] for several inputs, bitwise, each block unpacked
        /// once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q4k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            each_tile!(out, x, T, first => {
                by_rows::<4, T>(out, w, first, |r, a| q4k_rows(r, a, x), |r, a| q4k_rows(r, a, x));
            });
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q6k_rows<const R: usize, const T: usize>(
            rows: [*const u8; R],
            ahead: usize,
            x: [Input<'_>; T],
        ) -> [[f32; T]; R] {
            let (low, two) = (_mm256_set1_epi8(0xf), _mm256_set1_epi8(3));
            let high = |s: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(s, two));
            let (qs, d) = (x.map(|x| x.qs().as_ptr()), x.map(Input::scales));
            let bsums = x.map(|x| x.bsums().as_ptr());
            // One f32 lane per input, as in `q8g_rows`.
            let mut sum = [_mm_setzero_ps(); R];
            for b in 0..d[0].len() {
                let x = qs.map(|q| q.add(256 * b));
                let xd = per_input(d, b);
                let bs = bsums.map(|s| _mm256_loadu_si256(s.add(16 * b).cast()));
                for (s, row) in sum.iter_mut().zip(rows) {
                    let block = row.add(210 * b);
                    for line in [0, 64, 128, 192] {
                        prefetch(block.add(line), ahead);
                    }
                    let scales = _mm_loadu_si128(block.add(192).cast());
                    // The stored values are q + 32: start from −32·Σ scale·Σx.
                    let wide = _mm256_cvtepi8_epi16(scales);
                    let mut sumi = bs.map(|bs| {
                        let offset = _mm256_madd_epi16(wide, bs);
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset))
                    });
                    for n in 0..2 {
                        let ql0 = _mm256_loadu_si256(block.add(64 * n).cast());
                        let ql1 = _mm256_loadu_si256(block.add(64 * n + 32).cast());
                        let qh = _mm256_loadu_si256(block.add(128 + 32 * n).cast());
                        // Four groups of 32 values: a nibble and two high bits each.
                        let groups = [
                            _mm256_or_si256(_mm256_and_si256(ql0, low), high(qh)),
                            _mm256_or_si256(
                                _mm256_and_si256(ql1, low),
                                high(_mm256_srli_epi16::<2>(qh)),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                                high(_mm256_srli_epi16::<4>(qh)),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                                high(_mm256_srli_epi16::<6>(qh)),
                            ),
                        ];
                        for (g, q) in groups.into_iter().enumerate() {
                            // Lanes 0..4 are one 16-value sub-block, 4..8 the
                            // next: their two scales, eight times each.
                            let j = (8 * n + 2 * g) as i64;
                            let pick = _mm_set_epi64x(
                                (j + 1) * 0x0101_0101_0101_0101,
                                j * 0x0101_0101_0101_0101,
                            );
                            let sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                            for (sumi, x) in sumi.iter_mut().zip(x) {
                                let xq = _mm256_loadu_si256(x.add(128 * n + 32 * g).cast());
                                *sumi = _mm256_add_epi32(*sumi, scaled_lanes(q, xq, sv));
                            }
                        }
                    }
                    let dw = f16_at(block.add(208));
                    let step = if T == 1 {
                        _mm_set_ss((dw * d[0][b]) * hsum_i32(sumi[0]) as f32)
                    } else {
                        let isum = _mm_cvtepi32_ps(hsum_each(sumi));
                        _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dw), xd), isum)
                    };
                    *s = _mm_add_ps(*s, step);
                }
            }
            first_lanes(sum)
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_q6k(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) {
            let x = [Input::Q8K { qs, d, bsums }];
            by_rows::<4, 1>(&mut [out], w, true, |r, a| q6k_rows(r, a, x), |r, a| q6k_rows(r, a, x));
        }

        /// [`matvec_q6k`] for several inputs, bitwise, each block unpacked
        /// once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_q6k(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            each_tile!(out, x, T, first => {
                by_rows::<4, T>(out, w, first, |r, a| q6k_rows(r, a, x), |r, a| q6k_rows(r, a, x));
            });
        }

        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn f16_rows<const R: usize, const T: usize>(
            rows: [*const u8; R],
            ahead: usize,
            x: [&[f32]; T],
        ) -> [[f32; T]; R] {
            let n = x[0].len();
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut i = 0;
            while i + 8 <= n {
                let xv = x.map(|x| _mm256_loadu_ps(x.as_ptr().add(i)));
                for (a, row) in acc.iter_mut().zip(rows) {
                    prefetch(row.add(2 * i), ahead);
                    let wv = _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i).cast()));
                    for t in 0..T {
                        a[t] = _mm256_fmadd_ps(wv, xv[t], a[t]);
                    }
                }
                i += 8;
            }
            let mut out = [[0.0; T]; R];
            for ((o, a), row) in out.iter_mut().zip(acc).zip(rows) {
                for ((o, a), x) in o.iter_mut().zip(a).zip(x) {
                    *o = hsum8(a);
                    for (j, &xj) in x.iter().enumerate().skip(i) {
                        *o += f16_at(row.add(2 * j)) * xj;
                    }
                }
            }
            out
        }

        #[target_feature(enable = $features)]
        pub unsafe fn matvec_f16(out: &mut [f32], w: &[u8], x: &[f32]) {
            let x = [x];
            by_rows::<4, 1>(&mut [out], w, true, |r, a| f16_rows(r, a, x), |r, a| f16_rows(r, a, x));
        }

        /// [`matvec_f16`] for several inputs, bitwise, each weight vector
        /// converted once for a tile of them.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul_f16(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
            each_tile!(out, x, T, first => {
                let x = x.map(Input::f32s);
                by_rows::<{ $tile_r / 2 }, T>(
                    out,
                    w,
                    first,
                    |r, a| f16_rows(r, a, x),
                    |r, a| f16_rows(r, a, x),
                );
            });
        }

        #[target_feature(enable = $features)]
        pub unsafe fn f32_to_f16(out: &mut [u16], x: &[f32]) {
            let n = x.len();
            let mut i = 0;
            while i + 8 <= n {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(
                    x.as_ptr().add(i),
                ));
                _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), h);
                i += 8;
            }
            crate::kernels::scalar::f32_to_f16(&mut out[i..], &x[i..]);
        }

        /// The eight f64 lanes (`Acc8`, this level's registers for them) of
        /// the scalar twin's [`dot_f16`](crate::kernels::scalar) of `q` with
        /// `R` keys at once. The keys' chains of dependent additions
        /// interleave, and `q` is rounded once for all. A short last step
        /// reads zero-padded copies: its `+0.0` products change no lane.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn dot_f16<const R: usize>(q: &[f32], keys: [*const u16; R]) -> [Acc8; R] {
            let n = q.len();
            let mut acc = [acc8_zero(); R];
            let mut step = |i: usize, q: *const f32, k: [*const u16; R]| {
                let qv = round16(_mm256_loadu_ps(q.add(i)));
                for (a, k) in acc.iter_mut().zip(k) {
                    let p = _mm256_mul_ps(qv, _mm256_cvtph_ps(_mm_loadu_si128(k.add(i).cast())));
                    *a = acc8_add(*a, p);
                }
            };
            let mut i = 0;
            while i + 8 <= n {
                step(i, q.as_ptr(), keys);
                i += 8;
            }
            if i < n {
                let mut qt = [0.0f32; 8];
                qt[..n - i].copy_from_slice(&q[i..]);
                let mut kt = [[0u16; 8]; R];
                for (t, k) in kt.iter_mut().zip(keys) {
                    core::ptr::copy_nonoverlapping(k.add(i), t.as_mut_ptr(), n - i);
                }
                step(0, qt.as_ptr(), core::array::from_fn(|r| kt[r].as_ptr()));
            }
            acc
        }

        /// Four keys' scores from their [`dot_f16`] lanes, the twin's
        /// `join8` done for all four in registers: each key's lanes `l`
        /// and `l + 4` (`acc8_half`), then the pairs two apart, then the
        /// last two (`hadd`), each rounded to f32 once.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn join4(acc: [Acc8; 4]) -> __m128 {
            let h = acc.map(|a| acc8_half(a));
            let pairs = |x: __m256d, y: __m256d| {
                _mm256_add_pd(
                    _mm256_permute2f128_pd::<0x20>(x, y),
                    _mm256_permute2f128_pd::<0x31>(x, y),
                )
            };
            // Keys 0, 2, 1, 3.
            let s = _mm256_hadd_pd(pairs(h[0], h[1]), pairs(h[2], h[3]));
            _mm256_cvtpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(s))
        }

        /// `8·C` output values from `out` on, each accumulated in a
        /// register across all positions (the scalar twin's per-value loop,
        /// eight values per vector), then normalised by `inv`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn mix_f16x8<const C: usize>(
            out: *mut f32,
            values: *const u16,
            stride: usize,
            rescale: &[f32],
            weight: &[f32],
            inv: f32,
        ) {
            let mut acc = [_mm256_setzero_ps(); C];
            for (t, (&ms, &vs)) in rescale.iter().zip(weight).enumerate() {
                if ms != 1.0 {
                    for a in &mut acc {
                        *a = round16(_mm256_mul_ps(*a, _mm256_set1_ps(ms)));
                    }
                }
                let v = values.add(t * stride);
                for c in (0..C).step_by(4) {
                    prefetch(v.add(8 * c).cast(), 2 * AHEAD * stride);
                }
                for (c, a) in acc.iter_mut().enumerate() {
                    let vv = _mm256_cvtph_ps(_mm_loadu_si128(v.add(8 * c).cast()));
                    *a = round16(_mm256_fmadd_ps(vv, _mm256_set1_ps(vs), *a));
                }
            }
            for (c, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(8 * c), _mm256_mul_ps(*a, _mm256_set1_ps(inv)));
            }
        }

        /// `libm::expf` (FreeBSD's `e_expf.c`) of eight values at once, bit for
        /// bit, for `x ≤ 0` and NaN only — all the online softmax feeds it.
        /// The same branches as lane selects: the reduction `k = ⌊x/ln 2⌉`
        /// (truncating `x/ln 2 − ½`, or `k = −1` near −ln 2, or none), the
        /// rational approximation with separate rounded multiplies and adds
        /// as Rust writes them (no fused ones), and `scalbnf`'s two
        /// products: by 2^−102, exact, then by 2^(k+102), rounded once.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn expf_nonpos(x: __m256) -> __m256 {
            let set = _mm256_set1_ps;
            let above = |v: __m256i, bits: i32| _mm256_cmpgt_epi32(v, _mm256_set1_epi32(bits));
            let hx = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fff_ffff));
            let reduced = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(_mm256_add_ps(
                _mm256_mul_ps(set(LOG2E), x),
                set(-0.5),
            )));
            let k = _mm256_blendv_ps(
                _mm256_blendv_ps(
                    _mm256_setzero_ps(),
                    set(-1.0),
                    _mm256_castsi256_ps(above(hx, 0x3eb1_7218)),
                ),
                reduced,
                _mm256_castsi256_ps(above(hx, 0x3f85_1592)),
            );
            let hi = _mm256_sub_ps(x, _mm256_mul_ps(k, set(6.931_457_5e-1)));
            let lo = _mm256_mul_ps(k, set(1.428_606_8e-6));
            let r = _mm256_sub_ps(hi, lo);
            let rr = _mm256_mul_ps(r, r);
            let c = _mm256_sub_ps(
                r,
                _mm256_mul_ps(
                    rr,
                    _mm256_add_ps(set(1.666_662_5e-1), _mm256_mul_ps(rr, set(-2.766_733_3e-3))),
                ),
            );
            let q = _mm256_div_ps(_mm256_mul_ps(r, c), _mm256_sub_ps(set(2.0), c));
            let y = _mm256_add_ps(set(1.0), _mm256_add_ps(_mm256_sub_ps(q, lo), hi));
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(k),
                _mm256_set1_epi32(127 + 102),
            )));
            let e = _mm256_mul_ps(_mm256_mul_ps(y, set(f32::from_bits(0x0c80_0000))), scale);
            let tiny = _mm256_castsi256_ps(above(hx, 0x3900_0000));
            let e = _mm256_blendv_ps(_mm256_add_ps(set(1.0), x), e, tiny);
            let zero = _mm256_castsi256_ps(above(hx, 0x42cf_f1b4));
            let e = _mm256_blendv_ps(e, _mm256_setzero_ps(), zero);
            let nan = _mm256_castsi256_ps(above(hx, 0x7f80_0000));
            _mm256_blendv_ps(e, x, nan)
        }

        /// The scalar twin's `online_softmax`, its exponentials eight at a
        /// time: the running maximum first decides, position by position,
        /// which factor each one's exponential is (the rescale when the
        /// maximum grows, else the weight); then the exponentials, which no
        /// longer depend on each other; then the sum, in order.
        #[target_feature(enable = $features)]
        pub unsafe fn online_softmax(scores: &mut [f32], weights: &mut [f32]) -> f32 {
            let mut max = f32::NEG_INFINITY;
            for (s, w) in scores.iter_mut().zip(weights.iter_mut()) {
                let grows = *s > max;
                (*s, *w, max) = match grows {
                    true => (0.0, max - *s, *s),
                    false => (1.0, *s - max, max),
                };
            }
            let n = scores.len().min(weights.len());
            let mut i = 0;
            while i + 8 <= n {
                let (s, w) = (scores.as_mut_ptr().add(i), weights.as_mut_ptr().add(i));
                let e = expf_nonpos(_mm256_loadu_ps(w));
                let kept = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_loadu_ps(s), _mm256_set1_ps(1.0));
                _mm256_storeu_ps(s, _mm256_blendv_ps(e, _mm256_set1_ps(1.0), kept));
                _mm256_storeu_ps(w, _mm256_blendv_ps(_mm256_set1_ps(1.0), e, kept));
                i += 8;
            }
            for (s, w) in scores[i..n].iter_mut().zip(&mut weights[i..n]) {
                let e = libm::expf(*w);
                (*s, *w) = match *s == 1.0 {
                    true => (1.0, e),
                    false => (e, 1.0),
                };
            }
            let mut sum = 0.0f32;
            for (&ms, &vs) in scores[..n].iter().zip(&weights[..n]) {
                sum = sum * ms + vs;
            }
            if sum == 0.0 {
                0.0
            } else {
                1.0 / sum
            }
        }

        /// The scalar twin in its three passes: the scores (independent dot
        /// products, which the core overlaps), the softmax factors, then the
        /// values, eight vectors of outputs at a time held in registers:
        /// each one's update is a chain of latency (multiply-add, round trip
        /// through f16) that only other chains can fill.
        #[target_feature(enable = $features)]
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
            let n = out.len();
            let key = |t: usize| {
                let k = keys.as_ptr().add(t * stride);
                for line in (0..n).step_by(32) {
                    prefetch(k.add(line).cast(), 2 * AHEAD * stride);
                }
                k
            };
            let fours = positions / 4;
            for (f, s) in rescale.chunks_exact_mut(4).enumerate() {
                let dots = join4(dot_f16(q, core::array::from_fn(|j| key(4 * f + j))));
                _mm_storeu_ps(s.as_mut_ptr(), _mm_mul_ps(dots, _mm_set1_ps(scale)));
            }
            for (t, s) in rescale.iter_mut().enumerate().skip(4 * fours) {
                let [acc] = dot_f16(q, [key(t)]);
                *s = _mm_cvtss_f32(join4([acc; 4])) * scale;
            }
            let inv = online_softmax(rescale, weight);
            let (o, v) = (out.as_mut_ptr(), values.as_ptr());
            let mut i = 0;
            while i + 64 <= n {
                mix_f16x8::<8>(o.add(i), v.add(i), stride, rescale, weight, inv);
                i += 64;
            }
            while i + 8 <= n {
                mix_f16x8::<1>(o.add(i), v.add(i), stride, rescale, weight, inv);
                i += 8;
            }
            for (j, o) in out.iter_mut().enumerate().skip(i) {
                *o = crate::kernels::scalar::mix_f16(values, stride, j, rescale, weight) * inv;
            }
        }
    };
}

/// How many positions ahead f16 attention prefetches the cache: positions
/// are a row of the cache apart, too far for the hardware prefetcher.
const AHEAD: usize = 16;

/// Rows per matvec pass: eight concurrent read streams.
const ROWS: usize = 8;
/// The bandwidth probe (`sum`) reads as many streams as matvec does.
const STREAMS: usize = ROWS;

pub mod avx2 {
    use super::{AHEAD, ROWS, STREAMS};
    use crate::kernels::expf::*;
    use crate::kernels::Input;
    use core::arch::x86_64::*;

    block_kernels!("avx2,fma,f16c", blocks32_tile_rows, 4);

    /// The eight f64 lanes of the f16 attention's scores: two registers.
    type Acc8 = [__m256d; 2];

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_zero() -> Acc8 {
        [_mm256_setzero_pd(); 2]
    }

    /// Lanes 0–3 plus the first four products, lanes 4–7 the last four.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_add(a: Acc8, p: __m256) -> Acc8 {
        [
            _mm256_add_pd(a[0], _mm256_cvtps_pd(_mm256_castps256_ps128(p))),
            _mm256_add_pd(a[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(p))),
        ]
    }

    /// Lane `l` plus lane `l + 4`, for `l` in 0..4.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_half(a: Acc8) -> __m256d {
        _mm256_add_pd(a[0], a[1])
    }

    /// `acc` plus the eight sums of four `a` (unsigned) × `b` (signed) byte
    /// products. `pmaddubsw` saturates pairs at 2^15: callers keep `a` at
    /// most 128 (|−128| as unsigned) and inputs are at most 127 in magnitude.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn lanes_u_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)),
        )
    }

    /// Q8_0 weights are signed: the sign trick keeps `pmaddubsw` exact.
    const Q8_0_BIAS: i8 = 0;

    /// Q8_0 values as stored `+ Q8_0_BIAS`: as they are.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased(w: __m256i) -> __m256i {
        w
    }

    /// The sign trick: |w| · (x with w's signs).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased_lanes(w: __m256i, x: __m256i, _corr: __m256i) -> __m256i {
        lanes_u(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
            _mm256_set1_ps(EXP_HI),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let p = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    /// `R` dot products with each of `T` inputs `x` (length `n`) of rows
    /// `stride` apart at `w`, each weight vector loaded once for all `T`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<const R: usize, const T: usize>(
        w: *const f32,
        stride: usize,
        n: usize,
        x: [*const f32; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut i = 0;
        while i + 8 <= n {
            let xv = x.map(|x| _mm256_loadu_ps(x.add(i)));
            for (k, a) in acc.iter_mut().enumerate() {
                let wv = _mm256_loadu_ps(w.add(k * stride + i));
                for t in 0..T {
                    a[t] = _mm256_fmadd_ps(wv, xv[t], a[t]);
                }
            }
            i += 8;
        }
        let mut out = [[0.0; T]; R];
        for (k, o) in out.iter_mut().enumerate() {
            for t in 0..T {
                let mut s = hsum8(acc[k][t]);
                for j in i..n {
                    s += w.add(k * stride + j).read_unaligned() * *x[t].add(j);
                }
                o[t] = s;
            }
        }
        out
    }

    /// `out[t][r] = row_r · x[t]` for rows `stride` apart at `w`, `R` at a
    /// time.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dots<const R: usize, const T: usize>(
        out: &mut [&mut [f32]],
        w: *const f32,
        stride: usize,
        x: [&[f32]; T],
    ) {
        let (n, xp) = (x[0].len(), x.map(|x| x.as_ptr()));
        let count = out[0].len();
        let whole = count / R * R;
        for r in (0..whole).step_by(R) {
            crate::kernels::store_rows(out, r, &rows::<R, T>(w.add(r * stride), stride, n, xp));
        }
        for r in whole..count {
            crate::kernels::store_rows(out, r, &rows::<1, T>(w.add(r * stride), stride, n, xp));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
        dots::<ROWS, 1>(&mut [out], w.as_ptr().cast::<f32>(), x.len(), [x]);
    }

    /// [`matvec_f32`] for several inputs, bitwise: two rows by up to four
    /// inputs per pass, eight accumulators as matvec has.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul_f32(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
        let w = w.as_ptr().cast::<f32>();
        each_tile!(out, x, T, _ => {
            let x = x.map(Input::f32s);
            dots::<2, T>(out, w, x[0].len(), x);
        });
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attention_scores(
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        stride: usize,
        scale: f32,
    ) {
        dots::<ROWS, 1>(&mut [&mut *scores], keys.as_ptr(), stride, [q]);
        for s in scores {
            *s /= scale;
        }
    }

    /// Accumulates up to `V` vectors of the output in registers while
    /// walking the positions in order.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
        const V: usize = 4;
        let (n, vp) = (out.len(), values.as_ptr());
        for i in (0..n).step_by(8 * V) {
            let active = (n - i).div_ceil(8).min(V);
            let mut masks = [lanes(8); V];
            masks[active - 1] = lanes((n - i - 8 * (active - 1)).min(8));
            let mut acc = [_mm256_setzero_ps(); V];
            for (t, &a) in weights.iter().enumerate() {
                let (a, v) = (_mm256_set1_ps(a), vp.add(t * stride + i));
                for j in 0..active {
                    acc[j] = _mm256_fmadd_ps(a, _mm256_maskload_ps(v.add(8 * j), masks[j]), acc[j]);
                }
            }
            for j in 0..active {
                _mm256_maskstore_ps(out.as_mut_ptr().add(i + 8 * j), masks[j], acc[j]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
        let scale = crate::kernels::scalar::rms_scale(x, eps);
        let (w, sv) = (weight.as_ptr().cast::<f32>(), _mm256_set1_ps(scale));
        let n = x.len();
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_mul_ps(sv, _mm256_loadu_ps(x.as_ptr().add(i)));
            _mm256_storeu_ps(
                out.as_mut_ptr().add(i),
                _mm256_mul_ps(_mm256_loadu_ps(w.add(i)), v),
            );
            i += 8;
        }
        for j in i..n {
            out[j] = w.add(j).read_unaligned() * (scale * x[j]);
        }
    }

    /// A mask of lanes `0..n` (n ≤ 8) for `maskload`/`maskstore`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn lanes(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// Applies `f` to 8 lanes at a time; the last, partial vector loads and
    /// stores only the lanes in its mask (masked lanes never fault).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn map(x: &mut [f32], mut f: impl FnMut(__m256, usize, __m256i) -> __m256) {
        let (p, n) = (x.as_mut_ptr(), x.len());
        let all = lanes(8);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), f(_mm256_loadu_ps(p.add(i)), i, all));
            i += 8;
        }
        if i < n {
            let m = lanes(n - i);
            _mm256_maskstore_ps(p.add(i), m, f(_mm256_maskload_ps(p.add(i), m), i, m));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(x: &mut [f32]) {
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        map(x, |v, _, m| {
            mv = _mm256_blendv_ps(mv, _mm256_max_ps(mv, v), _mm256_castsi256_ps(m));
            v
        });
        let max = _mm256_set1_ps(hmax8(mv));
        let mut sv = _mm256_setzero_ps();
        map(x, |v, _, m| {
            let e = exp(_mm256_sub_ps(v, max));
            sv = _mm256_add_ps(sv, _mm256_and_ps(e, _mm256_castsi256_ps(m)));
            e
        });
        let s = _mm256_set1_ps(hsum8(sv));
        map(x, |v, _, _| _mm256_div_ps(v, s));
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(h: &mut [f32], g: &[f32]) {
        let (one, gp) = (_mm256_set1_ps(1.0), g.as_ptr());
        map(h, |v, i, m| {
            let sig = _mm256_div_ps(
                one,
                _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), v))),
            );
            _mm256_mul_ps(_mm256_mul_ps(v, sig), _mm256_maskload_ps(gp.add(i), m))
        });
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        for head in v.chunks_exact_mut(2 * half) {
            let mut i = 0;
            while i + 4 <= half {
                let c = _mm256_permutevar8x32_ps(
                    _mm256_castps128_ps256(_mm_loadu_ps(cos.as_ptr().add(i))),
                    dup,
                );
                let s = _mm256_permutevar8x32_ps(
                    _mm256_castps128_ps256(_mm_loadu_ps(sin.as_ptr().add(i))),
                    dup,
                );
                let p = head.as_mut_ptr().add(2 * i);
                let x = _mm256_loadu_ps(p);
                let swapped = _mm256_permute_ps::<0b1011_0001>(x);
                // even lanes: v0·c − v1·s; odd lanes: v1·c + v0·s
                _mm256_storeu_ps(p, _mm256_fmaddsub_ps(x, c, _mm256_mul_ps(swapped, s)));
                i += 4;
            }
            crate::kernels::scalar::rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add(y: &mut [f32], x: &[f32]) {
        let xp = x.as_ptr();
        map(y, |v, i, m| {
            _mm256_add_ps(v, _mm256_maskload_ps(xp.add(i), m))
        });
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum(data: &[u8]) -> f32 {
        let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
        let part = n / STREAMS / 8 * 8;
        let mut acc = [_mm256_setzero_ps(); STREAMS];
        for i in (0..part).step_by(8) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(k * part + i)));
            }
        }
        let mut s = acc.iter().map(|&a| hsum8(a)).sum::<f32>();
        for j in STREAMS * part..n {
            s += p.add(j).read_unaligned();
        }
        s
    }
}

pub mod avx512 {
    use super::{AHEAD, ROWS, STREAMS};
    use crate::kernels::expf::*;
    use crate::kernels::Input;
    use core::arch::x86_64::*;

    block_kernels!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        paired_tile_rows,
        8
    );

    /// The eight f64 lanes of the f16 attention's scores: one register.
    type Acc8 = __m512d;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_zero() -> Acc8 {
        _mm512_setzero_pd()
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_add(a: Acc8, p: __m256) -> Acc8 {
        _mm512_add_pd(a, _mm512_cvtps_pd(p))
    }

    /// Lane `l` plus lane `l + 4`, for `l` in 0..4.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn acc8_half(a: Acc8) -> __m256d {
        _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd::<1>(a))
    }

    /// `acc` plus the eight sums of four `a` (unsigned) × `b` (signed) byte
    /// products: one `vpdpbusd`, exact for any bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn lanes_u_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, a, b)
    }

    /// Q8_0 weights as unsigned `w + 128` (flipping the sign bit), the
    /// offset taken back out through `corr`: one `vpdpbusd` per block.
    const Q8_0_BIAS: i8 = i8::MIN;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased(w: __m256i) -> __m256i {
        _mm256_xor_si256(w, _mm256_set1_epi8(i8::MIN))
    }

    /// Every block format's lanes on this level: one `vpdpbusd` of the
    /// biased weights onto `corr`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_biased_lanes(w: __m256i, x: __m256i, corr: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(corr, w, x)
    }

    /// Both halves of a 512-bit vector set to `a` and `b`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn join(a: __m256i, b: __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b)
    }

    /// The tile kernel's rows here: [`blocks32_tile_rows`] with the inputs in
    /// pairs, one per half of a 512-bit vector, which halves the
    /// instructions per input. Each half does exactly the 256-bit
    /// arithmetic (the lanes are `vpdpbusd` for every format here, so
    /// `lanes` is only needed for a single input, which goes unpaired), so
    /// the results are bitwise the same; an odd last input is paired with
    /// itself.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn paired_tile_rows<const R: usize, const T: usize>(
        rows: [*const u8; R],
        ahead: usize,
        qs: [*const i8; T],
        d: [&[f32]; T],
        (block_bytes, bias): (usize, i8),
        weights: impl Fn(*const u8) -> __m256i,
        lanes: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    ) -> [[f32; T]; R] {
        if T == 1 {
            return blocks32_tile_rows(rows, ahead, qs, d, (block_bytes, bias), weights, lanes);
        }
        let pair = |p: usize| (2 * p, (2 * p + 1).min(T - 1));
        // At most two pairs: T ≤ 4.
        let pairs = T.div_ceil(2).min(2);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for b in 0..d[0].len() {
            let mut xq = [_mm512_setzero_si512(); 2];
            let mut corr = [_mm512_setzero_si512(); 2];
            let mut xd = [_mm512_setzero_ps(); 2];
            let xds = d.map(|d| d[b]);
            for p in 0..pairs {
                let (i, j) = pair(p);
                let load = |t: usize| _mm256_loadu_si256(qs[t].add(32 * b).cast());
                xq[p] = join(load(i), load(j));
                let ones = _mm512_set1_epi8(bias);
                corr[p] = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, xq[p]),
                );
                let scale = |t: usize| _mm256_castps_si256(_mm256_set1_ps(xds[t]));
                xd[p] = _mm512_castsi512_ps(join(scale(i), scale(j)));
            }
            for (a, row) in acc.iter_mut().zip(rows) {
                let block = row.add(block_bytes * b);
                prefetch(block, ahead);
                let wv = _mm512_broadcast_i64x4(weights(block));
                let wd = _mm512_set1_ps(f16_at(block));
                for p in 0..pairs {
                    // The same rounded products as the scalar `wd * xd`.
                    let scale = _mm512_mul_ps(wd, xd[p]);
                    let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr[p], wv, xq[p]));
                    a[p] = _mm512_fmadd_ps(scale, sums, a[p]);
                }
            }
        }
        acc.map(|a| {
            core::array::from_fn(|t| {
                let v = a[t / 2];
                hsum8(match t % 2 {
                    0 => _mm512_castps512_ps256(v),
                    _ => _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
                })
            })
        })
    }

    /// Lanes `0..n` of 16 (n ≤ 16).
    #[inline]
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_LO)),
            _mm512_set1_ps(EXP_HI),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let p = _mm512_fmadd_ps(
            p,
            _mm512_mul_ps(r, r),
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(p, n)
    }

    /// `R` dot products with `x` (length `n`) of rows `stride` apart at `w`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows<const R: usize>(
        w: *const f32,
        stride: usize,
        n: usize,
        x: *const f32,
    ) -> [f32; R] {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut i = 0;
        while i + 16 <= n {
            let xv = _mm512_loadu_ps(x.add(i));
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(k * stride + i)), xv, *a);
            }
            i += 16;
        }
        if i < n {
            let m = mask(n - i);
            let xv = _mm512_maskz_loadu_ps(m, x.add(i));
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w.add(k * stride + i)), xv, *a);
            }
        }
        let mut out = [0.0; R];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
        out
    }

    /// `out[r] = row_r · x` for rows `stride` apart at `w`, `ROWS` at a time.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dots(out: &mut [f32], w: *const f32, stride: usize, x: &[f32]) {
        let (n, xp) = (x.len(), x.as_ptr());
        let blocks = out.len() / ROWS;
        for (b, o) in out.chunks_exact_mut(ROWS).enumerate() {
            o.copy_from_slice(&rows::<ROWS>(w.add(b * ROWS * stride), stride, n, xp));
        }
        for (r, o) in out.iter_mut().enumerate().skip(blocks * ROWS) {
            *o = rows::<1>(w.add(r * stride), stride, n, xp)[0];
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn matvec_f32(out: &mut [f32], w: &[u8], x: &[f32]) {
        dots(out, w.as_ptr().cast::<f32>(), x.len(), x);
    }

    /// [`rows`] for `T` inputs at once: each weight vector is loaded once
    /// and multiplied into every input's accumulator, and each (row, input)
    /// sum runs in the order `rows` gives it alone, so the results are
    /// bitwise the same. With `h` ≠ 0, [`rows_rotated`].
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
        if h != 0 {
            return rows_rotated(w, ahead, stride, n, x, h);
        }
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let mut i = 0;
        while i + 16 <= n {
            step(&mut acc, (w, ahead, stride), x, i, !0, false);
            i += 16;
        }
        if i < n {
            step(&mut acc, (w, ahead, stride), x, i, mask(n - i), false);
        }
        sums(acc)
    }

    /// One vector of [`rows_t`] at `i`: the rows' lanes `m` (zero elsewhere)
    /// loaded, and the line `ahead` past them prefetched (none for `ahead`
    /// 0); then each input's,
    /// multiplied into its accumulators. With `keep`, lanes outside `m` are
    /// left as they were; else they add the zero product, as `rows` does.
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
        let wv: [__m512; R] = core::array::from_fn(|k| {
            let at = w.add(k * stride + i);
            if ahead != 0 {
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(ahead).cast());
            }
            _mm512_maskz_loadu_ps(m, at)
        });
        for (t, x) in x.iter().enumerate() {
            let xv = _mm512_maskz_loadu_ps(m, x.add(i));
            for (a, &wv) in acc.iter_mut().zip(&wv) {
                a[t] = match keep {
                    true => _mm512_mask3_fmadd_ps(wv, xv, a[t], m),
                    false => _mm512_fmadd_ps(wv, xv, a[t]),
                };
            }
        }
    }

    /// `_mm512_reduce_add_ps` of each vector, bitwise, sixteen at a time:
    /// its tree (lane `l` plus lane `l + w/2` at each width `w`: 16, 8, 4,
    /// 2), each step done for two vectors' lanes per instruction, about a
    /// third of the shuffles and adds of sixteen separate reductions. That
    /// tree gives the same sum for lanes rotated by any amount (each step
    /// pairs the same lanes), which [`rows_rotated`] relies on.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn sums<const R: usize, const T: usize>(acc: [[__m512; T]; R]) -> [[f32; T]; R] {
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
    unsafe fn sums16(v: [__m512; 16]) -> [f32; 16] {
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
        _mm512_storeu_ps(lanes.as_mut_ptr(), h1);
        core::array::from_fn(|i| lanes[4 * (i % 4) + i / 4])
    }

    /// [`rows_t`] for rows and inputs that all start `h` floats (0 < h <
    /// 16) past a cache line, `n` a multiple of 16: the loads start at
    /// that line, so none splits two. Each accumulator then holds
    /// `rows_t`'s lanes rotated by `h`, the same sums in the same order
    /// (the partial first and last loads leave the other lanes untouched),
    /// which [`sums`] adds up as it would unrotated: bitwise `rows_t`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows_rotated<const R: usize, const T: usize>(
        w: *const f32,
        ahead: usize,
        stride: usize,
        n: usize,
        x: [*const f32; T],
        h: usize,
    ) -> [[f32; T]; R] {
        let (w, x) = (w.sub(h), x.map(|x| x.sub(h)));
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        step(&mut acc, (w, ahead, stride), x, 0, !mask(h), true);
        let mut i = 16;
        while i < n {
            step(&mut acc, (w, ahead, stride), x, i, !0, true);
            i += 16;
        }
        step(&mut acc, (w, ahead, stride), x, n, mask(h), true);
        sums(acc)
    }

    /// [`matvec_f32`] for `T` inputs, four rows at a time. With `prefetch`
    /// (the first tile over these rows, which streams them from DRAM) it
    /// asks for the rows eight ahead; later tiles find the rows in L2, and
    /// prefetching them into L1 again cost F32 prefill 15–20%.
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
        while r + 4 <= rows {
            crate::kernels::store_rows(
                out,
                r,
                &rows_t::<4, T>(w.add(r * n), ahead(8), n, n, xp, h),
            );
            r += 4;
        }
        for r in r..rows {
            crate::kernels::store_rows(
                out,
                r,
                &rows_t::<1, T>(w.add(r * n), ahead(2), n, n, xp, h),
            );
        }
    }

    /// `out[t] = w · x[t]` for several inputs: [`matvec_f32`] for each,
    /// bitwise, loading each weight vector once for up to six of them
    /// (four rows by six inputs: 24 accumulators, 10 loads per 24
    /// multiply-adds; these weights need no unpacking, so loads are what a
    /// tile has to save).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn matmul_f32(out: &mut [&mut [f32]], w: &[u8], x: &[Input<'_>]) {
        let w = w.as_ptr().cast::<f32>();
        for (i, (out, x)) in out.chunks_mut(6).zip(x.chunks(6)).enumerate() {
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

    #[target_feature(enable = "avx512f")]
    pub unsafe fn attention_scores(
        scores: &mut [f32],
        q: &[f32],
        keys: &[f32],
        stride: usize,
        scale: f32,
    ) {
        dots(scores, keys.as_ptr(), stride, q);
        for s in scores {
            *s /= scale;
        }
    }

    /// Accumulates up to `V` vectors of the output in registers while
    /// walking the positions in order.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn attention_mix(out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
        const V: usize = 4;
        let (n, vp) = (out.len(), values.as_ptr());
        for i in (0..n).step_by(16 * V) {
            let active = (n - i).div_ceil(16).min(V);
            let mut masks = [mask(16); V];
            masks[active - 1] = mask((n - i - 16 * (active - 1)).min(16));
            let mut acc = [_mm512_setzero_ps(); V];
            for (t, &a) in weights.iter().enumerate() {
                let (a, v) = (_mm512_set1_ps(a), vp.add(t * stride + i));
                for j in 0..active {
                    acc[j] =
                        _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(masks[j], v.add(16 * j)), acc[j]);
                }
            }
            for j in 0..active {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i + 16 * j), masks[j], acc[j]);
            }
        }
    }

    /// Applies `f` to 16 lanes at a time; the last, partial vector loads
    /// and stores only the lanes in its mask.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn map(x: &mut [f32], mut f: impl FnMut(__m512, usize, __mmask16) -> __m512) {
        let (p, n) = (x.as_mut_ptr(), x.len());
        let mut i = 0;
        while i < n {
            let m = mask((n - i).min(16));
            _mm512_mask_storeu_ps(p.add(i), m, f(_mm512_maskz_loadu_ps(m, p.add(i)), i, m));
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[u8], eps: f32) {
        let scale = _mm512_set1_ps(crate::kernels::scalar::rms_scale(x, eps));
        out.copy_from_slice(x);
        let w = weight.as_ptr().cast::<f32>();
        map(out, |v, i, m| {
            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w.add(i)), _mm512_mul_ps(scale, v))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax(x: &mut [f32]) {
        let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
        map(x, |v, _, m| {
            mv = _mm512_mask_max_ps(mv, m, mv, v);
            v
        });
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
        let mut sv = _mm512_setzero_ps();
        map(x, |v, _, m| {
            let e = exp(_mm512_sub_ps(v, max));
            sv = _mm512_mask_add_ps(sv, m, sv, e);
            e
        });
        let s = _mm512_set1_ps(_mm512_reduce_add_ps(sv));
        map(x, |v, _, _| _mm512_div_ps(v, s));
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn swiglu(h: &mut [f32], g: &[f32]) {
        let one = _mm512_set1_ps(1.0);
        let gp = g.as_ptr();
        map(h, |v, i, m| {
            let sig = _mm512_div_ps(
                one,
                _mm512_add_ps(one, exp(_mm512_sub_ps(_mm512_setzero_ps(), v))),
            );
            _mm512_mul_ps(_mm512_mul_ps(v, sig), _mm512_maskz_loadu_ps(m, gp.add(i)))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        for head in v.chunks_exact_mut(2 * half) {
            let mut i = 0;
            while i + 8 <= half {
                let c = _mm512_permutexvar_ps(
                    dup,
                    _mm512_castps256_ps512(_mm256_loadu_ps(cos.as_ptr().add(i))),
                );
                let s = _mm512_permutexvar_ps(
                    dup,
                    _mm512_castps256_ps512(_mm256_loadu_ps(sin.as_ptr().add(i))),
                );
                let p = head.as_mut_ptr().add(2 * i);
                let x = _mm512_loadu_ps(p);
                let swapped = _mm512_permute_ps::<0b1011_0001>(x);
                _mm512_storeu_ps(p, _mm512_fmaddsub_ps(x, c, _mm512_mul_ps(swapped, s)));
                i += 8;
            }
            crate::kernels::scalar::rope_pairs(&mut head[2 * i..], &cos[i..], &sin[i..]);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn add(y: &mut [f32], x: &[f32]) {
        let xp = x.as_ptr();
        map(y, |v, i, m| {
            _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, xp.add(i)))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum(data: &[u8]) -> f32 {
        let (p, n) = (data.as_ptr().cast::<f32>(), data.len() / 4);
        let part = n / STREAMS / 16 * 16;
        let mut acc = [_mm512_setzero_ps(); STREAMS];
        for i in (0..part).step_by(16) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_add_ps(*a, _mm512_loadu_ps(p.add(k * part + i)));
            }
        }
        let mut i = STREAMS * part;
        while i < n {
            let m = mask((n - i).min(16));
            acc[0] = _mm512_add_ps(acc[0], _mm512_maskz_loadu_ps(m, p.add(i)));
            i += 16;
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }
}
