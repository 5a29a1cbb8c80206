//! Numeric kernels: the home of SIMD.
//!
//! Every entry point here is a safe function that checks slice lengths and
//! then runs the twin for the caller's [`Isa`]: `scalar` (the specification,
//! summing left to right as llama2.c does), `x86` (AVX2+FMA, AVX-512) or
//! `neon` (NEON, NEON with dotprod). SIMD twins are tested against the
//! scalar one on every size with tails and unaligned weights. Each twin
//! sums in a fixed order of its own, so a given `Isa` is bitwise
//! reproducible; different ISAs agree within rounding.
//!
//! # Files
//!
//! `mod.rs` holds the [`Isa`] token, the dispatch, the safe entry points
//! and the macros that make a level's public functions; `input.rs` the
//! activation vector's forms and their quantizers; `scalar.rs` the
//! specification; `vector.rs` the f32 kernels every SIMD level computes
//! alike; `x86/` and `neon/` the SIMD twins, one file per ISA level and
//! weight family (their module docs say how the levels share code);
//! `tests.rs` every twin against the specification.
//!
//! # Unsafe
//!
//! Most of the core's `unsafe` is here: calling a `#[target_feature]`
//! kernel, which is sound only on a CPU with those features (a non-scalar
//! [`Isa`] is the proof) and with the lengths the entry point checked; the
//! kernels' raw loads and stores; and [`cast_slice_mut`], which views arena
//! bytes as numbers. `unsafe_op_in_unsafe_fn` is denied, every `unsafe`
//! block says why it is sound, and every `unsafe fn` states its contract.
//! Elsewhere in the core only two modules hold `unsafe`: `exec.rs`, whose
//! thread pool hands disjoint `&mut` parts of shared slices to worker
//! threads (and erases the lifetime of a parallel region's task, which it
//! outlives), and `hosted.rs` (with `std` only), whose counting global
//! allocator forwards to the system one.
#![deny(unsafe_op_in_unsafe_fn)]

/// Runs `$body` for each group of up to [`TILE`] inputs in turn, with
/// `$out` rebound to the group's outputs, `$x` to its inputs as an array
/// `[Input; $t]`, `$t` to a constant: the group's size (so a short last
/// group gets a kernel of its own size, not one computing copies), and
/// `$first` to whether this is the first group: the one that reads the
/// rows from memory, which later groups find in the core's cache.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! each_tile {
    ($out:ident, $x:ident, $t:ident, $first:pat => $body:block) => {
        const _: () = assert!($crate::kernels::TILE == 4);
        for (i, ($out, xs)) in $out
            .chunks_mut($crate::kernels::TILE)
            .zip($x.chunks($crate::kernels::TILE))
            .enumerate()
        {
            let $first = i == 0;
            match xs.len() {
                1 => {
                    const $t: usize = 1;
                    let $x: [$crate::kernels::Input<'_>; $t] = core::array::from_fn(|t| xs[t]);
                    $body
                }
                2 => {
                    const $t: usize = 2;
                    let $x: [$crate::kernels::Input<'_>; $t] = core::array::from_fn(|t| xs[t]);
                    $body
                }
                3 => {
                    const $t: usize = 3;
                    let $x: [$crate::kernels::Input<'_>; $t] = core::array::from_fn(|t| xs[t]);
                    $body
                }
                _ => {
                    const $t: usize = 4;
                    let $x: [$crate::kernels::Input<'_>; $t] = core::array::from_fn(|t| xs[t]);
                    $body
                }
            }
        }
    };
}

/// A level's public kernels that share their code with another level's:
/// for each `fn name(args) = body;`, a `#[target_feature(enable =
/// $features)]` function that calls `body`, a generic kernel marked
/// `#[inline(always)]`. The body, and with it the level's own operations
/// (its type parameter's methods, which carry the level's features), is
/// compiled into the wrapper whole, with the level's instructions.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! level_wrappers {
    ($features:literal; $(
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;
    )*) => {$(
        #[doc = concat!("The shared `", stringify!($name), "` at this level.")]
        ///
        /// # Safety
        ///
        /// The contract of this ISA's module: the CPU has this level's
        /// features, and the lengths are those that the entry point in
        /// `kernels` checked.
        $(#[$attr])*
        #[target_feature(enable = $features)]
        pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: this function is compiled with the level's features,
            // as the body needs of the code it is inlined into; the caller
            // guarantees the rest of its contract.
            unsafe { $body($($arg),*) }
        }
    )*};
}

/// The public functions of the int8 block kernels (Q8_0, Q4_0, Q4_1,
/// llama2.c's Q8G) at level `$level` of `$isa` (`x86` or `neon`), whose
/// module `blocks` holds their bodies: `$rows` is the rows per pass of the
/// 32-value block tiles, and `$q8g` the generic arguments, after the level,
/// of Q8G's. A Q4_1 matvec is its tile with one input.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! int8_wrappers {
    ($features:literal, $isa:ident, $level:ident, $rows:expr, [$($q8g:tt)*]) => {
        level_wrappers! { $features;
            fn matvec_q8_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32])
                = $crate::kernels::$isa::blocks::matvec_blocks32::<$level, $crate::kernels::$isa::blocks::Q8_0>;
            fn matvec_q4_0(out: &mut [f32], w: &[u8], qs: &[i8], d: &[f32])
                = $crate::kernels::$isa::blocks::matvec_blocks32::<$level, $crate::kernels::$isa::blocks::Nibbles<false>>;
            fn matmul_q8_0(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = $crate::kernels::$isa::blocks::matmul_blocks32::<$level, $crate::kernels::$isa::blocks::Q8_0, { $rows }>;
            fn matmul_q4_0(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = $crate::kernels::$isa::blocks::matmul_blocks32::<$level, $crate::kernels::$isa::blocks::Nibbles<false>, { $rows }>;
            fn matmul_q4_1(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>])
                = $crate::kernels::$isa::blocks::matmul_blocks32::<$level, $crate::kernels::$isa::blocks::Nibbles<true>, { $rows }>;
            fn matvec_q8g(out: &mut [f32], w: &[u8], scales: &[u8], qs: &[i8], d: &[f32], group: usize)
                = $crate::kernels::$isa::blocks::matvec_q8g::<$level>;
            fn matmul_q8g(
                out: &mut [&mut [f32]],
                w: &[u8],
                scales: &[u8],
                x: &[$crate::kernels::Input<'_>],
                group: usize,
            ) = $crate::kernels::$isa::blocks::matmul_q8g::<$level $($q8g)*>;
        }
    };
}

/// Scaffolding while the new weight types get their SIMD twins: a level's
/// `matmul_*` that is the scalar specification.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! spec_kernels {
    ($($name:ident),* $(,)?) => {$(
        /// The scalar specification, until this level has its own.
        ///
        /// # Safety
        ///
        /// None beyond the lengths the entry point checked.
        pub unsafe fn $name(out: &mut [&mut [f32]], w: &[u8], x: &[$crate::kernels::Input<'_>]) {
            $crate::kernels::scalar::$name(out, w, x)
        }
    )*};
}

/// Stores a tile's results: `v[k][t]` is row `r + k`'s for input `t`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn store_rows<const T: usize>(out: &mut [&mut [f32]], r: usize, v: &[[f32; T]]) {
    for (k, v) in v.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(v) {
            o[r + k] = v;
        }
    }
}

/// Calls the twin of `$f` for `$isa`'s level.
macro_rules! dispatch {
    ($isa:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $isa.0 {
            $crate::kernels::Level::Scalar => $crate::kernels::scalar::$f($($arg),*),
            // SAFETY: a non-scalar `Isa` exists only once its CPU features
            // were detected or enabled at compile time, and every caller of
            // this macro has checked the lengths the twin relies on.
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Level::Avx2 => unsafe { $crate::kernels::x86::avx2::$f($($arg),*) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Level::Avx512 => unsafe { $crate::kernels::x86::avx512::$f($($arg),*) },
            // SAFETY: as above.
            #[cfg(target_arch = "aarch64")]
            $crate::kernels::Level::Neon => unsafe { $crate::kernels::neon::$f($($arg),*) },
            // SAFETY: as above; the dotprod level proves `sdot` exists.
            #[cfg(target_arch = "aarch64")]
            $crate::kernels::Level::NeonDot => unsafe { $crate::kernels::neon::dot::$f($($arg),*) },
        }
    };
}

mod input;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use input::{batch_form, prepare, quantize, Input, InputBuffers, InputForm};

use input::fits;

use crate::tensor::{DType, WeightRef};
use core::slice;

/// The SIMD twins' `exp`: Cody–Waite reduction by ln 2 (split in two for
/// accuracy) and the degree-6 polynomial of Cephes' `expf`, accurate to
/// about 2 ulp. Inputs are clamped so 2^n stays a normal number; softmax
/// and SiLU only feed it values far inside that range.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod expf {
    pub const EXP_HI: f32 = 88.0;
    pub const EXP_LO: f32 = -87.33654;
    pub const LOG2E: f32 = core::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const EXP_POLY: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// The instruction-set level the kernels use.
///
/// Only [`Isa::SCALAR`] can be named directly. Other levels come from
/// [`Isa::from_target`] (features the compiler was told the CPU has) or, with
/// the `std` feature, [`Isa::detect`] (features the running CPU reports). That
/// is what makes calling the `#[target_feature]` kernels sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Isa(Level);

// Without run-time detection, levels the compile-time features do not
// enable cannot be constructed.
#[cfg_attr(not(any(test, feature = "std")), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// NEON with the dotprod extension (`sdot`): Cortex-A76 (Pi 5), Apple M1+.
    #[cfg(target_arch = "aarch64")]
    NeonDot,
}

impl Isa {
    /// Plain Rust: the specification every other level is tested against.
    pub const SCALAR: Isa = Isa(Level::Scalar);

    /// The best level the compile-time target features guarantee. This is
    /// what a `no_std` build (firmware) uses: NEON on every aarch64 target.
    pub const fn from_target() -> Isa {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512vnni"
        ))]
        return Isa(Level::Avx512);
        #[cfg(all(
            target_arch = "x86_64",
            not(all(
                target_feature = "avx512f",
                target_feature = "avx512bw",
                target_feature = "avx512vl",
                target_feature = "avx512vnni"
            )),
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))]
        return Isa(Level::Avx2);
        #[cfg(all(target_arch = "aarch64", target_feature = "dotprod"))]
        return Isa(Level::NeonDot);
        #[cfg(all(
            target_arch = "aarch64",
            target_feature = "neon",
            not(target_feature = "dotprod")
        ))]
        return Isa(Level::Neon);
        #[allow(unreachable_code)]
        Isa::SCALAR
    }

    /// The best level this CPU supports, asked at run time.
    #[cfg(any(test, feature = "std"))]
    pub fn detect() -> Isa {
        Isa::available().last().unwrap_or(Isa::SCALAR)
    }

    /// Every level this CPU supports, scalar first (for tests and `bench`).
    #[cfg(any(test, feature = "std"))]
    pub fn available() -> impl Iterator<Item = Isa> {
        let mut levels = heapless::Vec::<Isa, 4>::new();
        let _ = levels.push(Isa::SCALAR);
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                let _ = levels.push(Isa(Level::Avx2));
                if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
                    let _ = levels.push(Isa(Level::Avx512));
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                let _ = levels.push(Isa(Level::Neon));
                if std::arch::is_aarch64_feature_detected!("dotprod") {
                    let _ = levels.push(Isa(Level::NeonDot));
                }
            }
        }
        levels.into_iter()
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => "avx512",
            #[cfg(target_arch = "aarch64")]
            Level::Neon => "neon",
            #[cfg(target_arch = "aarch64")]
            Level::NeonDot => "neon+dotprod",
        }
    }

    /// The level named `name` if it is `self` or below it, else `None`
    /// (the CLI's `--isa`). Sound: a level exists only once its features
    /// were found, and each level's features include every lower one's
    /// (detection checks them in that order, see `Isa::available`).
    pub fn at_most(self, name: &[u8]) -> Option<Isa> {
        const LEVELS: &[Level] = &[
            Level::Scalar,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2,
            #[cfg(target_arch = "x86_64")]
            Level::Avx512,
            #[cfg(target_arch = "aarch64")]
            Level::Neon,
            #[cfg(target_arch = "aarch64")]
            Level::NeonDot,
        ];
        LEVELS
            .iter()
            .map(|&level| Isa(level))
            .find(|isa| isa.name().as_bytes() == name)
            .filter(|&isa| isa <= self)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Element types the arena may be viewed as: every bit pattern is a valid
/// value, so reinterpreting zeroed or reused bytes is sound.
pub trait Pod: sealed::Sealed + Copy {}
impl sealed::Sealed for f32 {}
impl Pod for f32 {}
impl sealed::Sealed for u32 {}
impl Pod for u32 {}
impl sealed::Sealed for u64 {}
impl Pod for u64 {}
impl sealed::Sealed for i8 {}
impl Pod for i8 {}
impl sealed::Sealed for i16 {}
impl Pod for i16 {}
impl sealed::Sealed for u16 {}
impl Pod for u16 {}

/// Views bytes as `[T]`; `None` when the start is not aligned for `T` or
/// the length is not a whole number of elements.
pub(crate) fn cast_slice_mut<T: Pod>(bytes: &mut [u8]) -> Option<&mut [T]> {
    // SAFETY: `T: Pod` has no invalid bit patterns and no drop glue, so any
    // initialised bytes form valid `T`s; `align_to_mut` only hands out the
    // middle part that is correctly aligned, and we reject the call unless
    // that middle part is the whole slice.
    let (head, body, tail) = unsafe { bytes.align_to_mut::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

/// `out[r] = Σ_c w[r][c] · x[c]` for every row of `w`, with `x` prepared for
/// `w`'s type by [`prepare`].
pub fn matvec(isa: Isa, out: &mut [f32], w: &WeightRef<'_>, x: &Input<'_>) {
    assert_eq!(out.len(), w.rows(), "matvec: output length");
    assert!(
        fits(w, x),
        "matvec: input not prepared for {}",
        w.dtype().name()
    );
    let data = w.data();
    let (xs, qs, d) = (x.f32s(), x.qs(), x.scales());
    match w.dtype() {
        DType::F32 => dispatch!(isa, matvec_f32(out, data, xs)),
        DType::F16 => dispatch!(isa, matvec_f16(out, data, xs)),
        DType::Q8_0 => dispatch!(isa, matvec_q8_0(out, data, qs, d)),
        DType::Q4_0 => dispatch!(isa, matvec_q4_0(out, data, qs, d)),
        DType::Q4_1 => dispatch!(isa, matmul_q4_1(&mut [out], data, slice::from_ref(x))),
        // A K-quant matvec is the tile kernel with one input: the same code.
        DType::Q4K => dispatch!(isa, matmul_q4k(&mut [out], data, slice::from_ref(x))),
        DType::Q6K => dispatch!(isa, matmul_q6k(&mut [out], data, slice::from_ref(x))),
        DType::Q5_0 => dispatch!(isa, matmul_q5_0(&mut [out], data, slice::from_ref(x))),
        DType::Q5_1 => dispatch!(isa, matmul_q5_1(&mut [out], data, slice::from_ref(x))),
        DType::IQ4NL => dispatch!(isa, matmul_iq4nl(&mut [out], data, slice::from_ref(x))),
        DType::Q5K => dispatch!(isa, matmul_q5k(&mut [out], data, slice::from_ref(x))),
        DType::Q3K => dispatch!(isa, matmul_q3k(&mut [out], data, slice::from_ref(x))),
        DType::Q2K => dispatch!(isa, matmul_q2k(&mut [out], data, slice::from_ref(x))),
        DType::IQ4XS => dispatch!(isa, matmul_iq4xs(&mut [out], data, slice::from_ref(x))),
        DType::BF16 => dispatch!(isa, matmul_bf16(&mut [out], data, slice::from_ref(x))),
        DType::Q8G { group } => {
            let (scales, group) = (w.scales(), group as usize);
            // Whole 32-value blocks per group take the integer kernels;
            // other group sizes (llama2.c allows any) the general code.
            if group.is_multiple_of(32) {
                dispatch!(isa, matvec_q8g(out, data, scales, qs, d, group))
            } else {
                scalar::matvec_q8g(out, data, scales, qs, d, group)
            }
        }
    }
}

/// Inputs the matrix-matrix kernels take at once, for every type but the
/// AVX-512 f32 tile's six (its weights need no unpacking, so loads are
/// what it has to save).
pub const TILE: usize = 4;

/// `out[t] = w · x[t]` for several inputs prepared alike: bitwise
/// [`matvec`] for each, but each weight block is loaded (and unpacked)
/// once for several inputs ([`TILE`], or the f32 tile's six). The scalar
/// twin is `matvec` input after input.
pub fn matmul(isa: Isa, out: &mut [&mut [f32]], w: &WeightRef<'_>, x: &[Input<'_>]) {
    assert_eq!(out.len(), x.len(), "matmul: inputs");
    assert!(
        out.iter().all(|o| o.len() == w.rows()),
        "matmul: output length"
    );
    let name = w.dtype().name();
    assert!(
        x.iter().all(|x| fits(w, x)),
        "matmul: input not prepared for {name}"
    );
    if x.is_empty() {
        return;
    }
    let data = w.data();
    match w.dtype() {
        DType::F32 => dispatch!(isa, matmul_f32(out, data, x)),
        DType::F16 => dispatch!(isa, matmul_f16(out, data, x)),
        DType::Q8_0 => dispatch!(isa, matmul_q8_0(out, data, x)),
        DType::Q4_0 => dispatch!(isa, matmul_q4_0(out, data, x)),
        DType::Q4_1 => dispatch!(isa, matmul_q4_1(out, data, x)),
        DType::Q4K => dispatch!(isa, matmul_q4k(out, data, x)),
        DType::Q6K => dispatch!(isa, matmul_q6k(out, data, x)),
        DType::Q5_0 => dispatch!(isa, matmul_q5_0(out, data, x)),
        DType::Q5_1 => dispatch!(isa, matmul_q5_1(out, data, x)),
        DType::IQ4NL => dispatch!(isa, matmul_iq4nl(out, data, x)),
        DType::Q5K => dispatch!(isa, matmul_q5k(out, data, x)),
        DType::Q3K => dispatch!(isa, matmul_q3k(out, data, x)),
        DType::Q2K => dispatch!(isa, matmul_q2k(out, data, x)),
        DType::IQ4XS => dispatch!(isa, matmul_iq4xs(out, data, x)),
        DType::BF16 => dispatch!(isa, matmul_bf16(out, data, x)),
        DType::Q8G { group } => {
            let (scales, group) = (w.scales(), group as usize);
            if group.is_multiple_of(32) {
                dispatch!(isa, matmul_q8g(out, data, scales, x, group))
            } else {
                scalar::matmul_q8g(out, data, scales, x, group)
            }
        }
    }
}

/// Row `row` of `w` as f32 (the embedding lookup): one row per token, so
/// the table is never dequantized whole.
pub fn row(out: &mut [f32], w: &WeightRef<'_>, row: usize) {
    assert_eq!(out.len(), w.cols(), "row: output length");
    assert!(row < w.rows(), "row: index");
    let r = w.rows_at(row, 1);
    match w.dtype() {
        DType::Q8G { group } => {
            scalar::dequantize_groups(r.data(), r.scales(), group as usize, out)
        }
        dtype => scalar::dequantize_row(dtype, r.data(), out),
    }
}

/// `out = x / rms(x) · weight`, the RMSNorm of LLaMA.
pub fn rmsnorm(isa: Isa, out: &mut [f32], x: &[f32], weight: &WeightRef<'_>, eps: f32) {
    assert_eq!(out.len(), x.len(), "rmsnorm: output length");
    assert_eq!(
        weight.rows() * weight.cols(),
        x.len(),
        "rmsnorm: weight length"
    );
    assert_eq!(weight.dtype(), DType::F32, "rmsnorm: weight type");
    dispatch!(isa, rmsnorm(out, x, weight.data(), eps))
}

/// In-place softmax over `x`.
pub fn softmax(isa: Isa, x: &mut [f32]) {
    dispatch!(isa, softmax(x))
}

/// Rotates adjacent pairs `(v[2i], v[2i+1])` of every head in `v` by the
/// angles whose cosines and sines are `cos[i]`, `sin[i]` (llama2.c's RoPE).
pub fn rope(isa: Isa, v: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert_eq!(cos.len(), sin.len(), "rope: table lengths");
    assert!(!cos.is_empty(), "rope: empty tables");
    assert_eq!(v.len() % (2 * cos.len()), 0, "rope: head size");
    dispatch!(isa, rope(v, cos, sin))
}

/// `h = silu(h) · g`, the SwiGLU gate.
pub fn swiglu(isa: Isa, h: &mut [f32], g: &[f32]) {
    assert_eq!(h.len(), g.len(), "swiglu: lengths");
    dispatch!(isa, swiglu(h, g))
}

/// One query head's attention scores over the cached positions:
/// `scores[t] = (q · k_t) / scale`, key `t` being `keys[t·stride..][..q.len()]`
/// (a head's slice of the KV cache, whose positions lie `stride` apart).
pub fn attention_scores(
    isa: Isa,
    scores: &mut [f32],
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scale: f32,
) {
    assert!(
        !q.is_empty() && stride >= q.len(),
        "attention_scores: stride"
    );
    let fit = holds(keys.len(), scores.len(), stride, q.len());
    assert!(fit, "attention_scores: keys");
    dispatch!(isa, attention_dots(scores, q, keys, stride));
    for s in scores {
        *s /= scale;
    }
}

/// One head's attention output: `out = Σ_t weights[t] · v_t`, value `t`
/// being `values[t·stride..][..out.len()]`, summed in order of `t`.
pub fn attention_mix(isa: Isa, out: &mut [f32], weights: &[f32], values: &[f32], stride: usize) {
    assert!(
        !out.is_empty() && stride >= out.len(),
        "attention_mix: stride"
    );
    let fit = holds(values.len(), weights.len(), stride, out.len());
    assert!(fit, "attention_mix: values");
    dispatch!(isa, attention_mix(out, weights, values, stride))
}

/// Attention of one query head over an f16 KV cache, llama.cpp-style (see
/// the scalar twin): keys and values of position `t` at `t·stride`;
/// `scratch` holds at least `2 · positions` floats.
#[allow(clippy::too_many_arguments)]
pub fn attention_f16(
    isa: Isa,
    out: &mut [f32],
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    stride: usize,
    positions: usize,
    scale: f32,
    scratch: &mut [f32],
) {
    let n = q.len();
    assert!(
        out.len() == n && n > 0 && stride >= n,
        "attention_f16: lengths"
    );
    assert!(scratch.len() >= 2 * positions, "attention_f16: scratch");
    let fit = |cache: &[u16]| holds(cache.len(), positions, stride, n);
    assert!(fit(keys) && fit(values), "attention_f16: cache");
    let a = F16Attention {
        q,
        keys,
        values,
        stride,
        positions,
        scale,
    };
    dispatch!(isa, attention_f16(out, a, scratch))
}

/// Whether `len` values hold `count` rows of `width` values each, `stride`
/// apart: a head's slice of the KV cache.
fn holds(len: usize, count: usize, stride: usize, width: usize) -> bool {
    count
        .checked_sub(1)
        .is_none_or(|last| len >= last * stride + width)
}

/// The arguments of [`attention_f16`] that every twin takes, as that entry
/// point checked them: `q` is not empty and as long as the output,
/// `stride ≥ q.len()`, and keys and values hold `positions` rows of
/// `q.len()` values, `stride` apart.
#[derive(Clone, Copy)]
struct F16Attention<'a> {
    q: &'a [f32],
    keys: &'a [u16],
    values: &'a [u16],
    stride: usize,
    positions: usize,
    scale: f32,
}

/// `out[i] = f16(x[i])`, rounding to nearest even: filling the f16 KV cache.
pub fn f32_to_f16(isa: Isa, out: &mut [u16], x: &[f32]) {
    assert_eq!(out.len(), x.len(), "f32_to_f16: lengths");
    dispatch!(isa, f32_to_f16(out, x))
}

/// `y += x`, the residual connection.
pub fn add(isa: Isa, y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add: lengths");
    dispatch!(isa, add(y, x))
}

/// The sum of little-endian f32 values in `data` (whose length must be a
/// multiple of 4). A streaming read as fast as the ISA allows — several
/// interleaved streams, as matvec reads several rows — so it is the memory
/// bandwidth probe that decode speed is compared with.
pub fn sum(isa: Isa, data: &[u8]) -> f32 {
    assert_eq!(data.len() % 4, 0, "sum: length");
    dispatch!(isa, sum(data))
}

#[cfg(test)]
mod tests;
