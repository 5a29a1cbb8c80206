//! The activation vector in the form a weight type's dot product takes
//! ([`Input`]), the arena space it is quantized into ([`InputBuffers`]),
//! and the quantizer that fills that space once per vector, before a
//! matrix's rows are split across threads.

use super::{scalar, Isa};
use crate::tensor::{DType, WeightRef};

/// The activation vector in the form a weight type's dot product takes:
/// f32 for float weights, int8 blocks for quantized ones.
#[derive(Clone, Copy, Debug)]
pub enum Input<'x> {
    F32(&'x [f32]),
    /// For Q8_0 and Q4_0 weights: blocks of 32 with an f32 scale each.
    Q8_0 {
        qs: &'x [i8],
        d: &'x [f32],
    },
    /// For Q4_1 weights (llama.cpp's Q8_1): [`Input::Q8_0`], and per
    /// block `s`, the scale times the sum of the block's values (what a
    /// weight block's minimum multiplies).
    Q8_1 {
        qs: &'x [i8],
        d: &'x [f32],
        s: &'x [f32],
    },
    /// For K-quant weights: blocks of 256 with an f32 scale and the sums of
    /// every 16 values (which fold the weights' offsets into one product).
    Q8K {
        qs: &'x [i8],
        d: &'x [f32],
        bsums: &'x [i16],
    },
    /// For llama2.c v2 weights: groups of `group` with an f32 scale each,
    /// quantized as `runq` does.
    Q8G {
        qs: &'x [i8],
        d: &'x [f32],
        group: usize,
    },
}

/// Arena space for one quantized input vector.
pub struct InputBuffers<'a> {
    pub qs: &'a mut [i8],
    pub d: &'a mut [f32],
    pub bsums: &'a mut [i16],
}

/// The form of the activation vector a weight type's dot product takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputForm {
    F32,
    /// f32 copied to start this many bytes past a 64-byte boundary, where
    /// the weights start (see [`batch_form`]).
    F32Phase(u8),
    /// f32 rounded to bfloat16 (for BF16 weights, as llama.cpp pairs them).
    Bf16,
    Q8_0,
    Q8_1,
    Q8K,
    Q8G(u32),
}

impl InputForm {
    pub fn of(dtype: DType) -> InputForm {
        match dtype {
            DType::F32 | DType::F16 => InputForm::F32,
            DType::BF16 => InputForm::Bf16,
            DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::IQ4NL => InputForm::Q8_0,
            DType::Q4_1 | DType::Q5_1 => InputForm::Q8_1,
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K | DType::IQ4XS => {
                InputForm::Q8K
            }
            DType::Q8G { group } => InputForm::Q8G(group),
        }
    }

    fn block(self) -> usize {
        match self {
            InputForm::F32 | InputForm::F32Phase(_) | InputForm::Bf16 => 1,
            InputForm::Q8_0 | InputForm::Q8_1 => 32,
            InputForm::Q8K => 256,
            InputForm::Q8G(group) => group as usize,
        }
    }
}

/// The form a batch of inputs to `w` takes: [`InputForm::of`], except that
/// where the AVX-512 f32 tile runs on weights that do not start on a cache
/// line (GGUF aligns tensors to 32 bytes, llama2.c files to 4), the inputs
/// are copied to the same offset from one, so that neither side's loads
/// split lines; that tile runs about 1.4× faster in cache. (The tile takes
/// that path only for rows of whole vectors, so only those are copied.)
pub fn batch_form(isa: Isa, w: &WeightRef<'_>) -> InputForm {
    let phase = w.data().as_ptr() as usize % 64;
    let f32_tile = match isa.0 {
        #[cfg(target_arch = "x86_64")]
        super::Level::Avx512 => true,
        _ => false,
    };
    let rotatable = w.cols().is_multiple_of(16) && phase.is_multiple_of(4) && phase != 0;
    if w.dtype() == DType::F32 && f32_tile && rotatable {
        return InputForm::F32Phase(phase as u8);
    }
    InputForm::of(w.dtype())
}

/// Where in `d` a copy must start to lie `phase` bytes past a 64-byte
/// boundary.
fn phase_start(d: &[f32], phase: u8) -> usize {
    (usize::from(phase) + 64 - d.as_ptr() as usize % 64) % 64 / 4
}

/// Quantizes `x` into `buf` in `form` (nothing to do for f32). Done once per
/// input vector, before the rows are split across threads; `x.len()` must
/// be a whole number of the form's blocks.
pub fn quantize(isa: Isa, form: InputForm, x: &[f32], buf: &mut InputBuffers<'_>) {
    let n = x.len();
    let block = form.block();
    assert!(
        block > 0 && n.is_multiple_of(block) && n <= buf.qs.len(),
        "quantize: input length"
    );
    match form {
        InputForm::F32 => {}
        InputForm::F32Phase(phase) => {
            let at = phase_start(buf.d, phase);
            buf.d[at..at + n].copy_from_slice(x);
        }
        // Once per vector and cheap: scalar everywhere.
        InputForm::Bf16 => scalar::round_bf16(x, &mut buf.d[..n]),
        InputForm::Q8_0 => {
            let (qs, d) = (&mut buf.qs[..n], &mut buf.d[..n / 32]);
            dispatch!(isa, quantize_q8_0(x, qs, d))
        }
        // The sums follow the scales.
        InputForm::Q8_1 => {
            let (d, s) = buf.d[..n / 16].split_at_mut(n / 32);
            dispatch!(isa, quantize_q8_1(x, &mut buf.qs[..n], d, s))
        }
        InputForm::Q8K => {
            let (qs, d, bsums) = (
                &mut buf.qs[..n],
                &mut buf.d[..n / 256],
                &mut buf.bsums[..n / 16],
            );
            dispatch!(isa, quantize_q8_k(x, qs, d, bsums))
        }
        // A few divisions per value, once per vector: scalar everywhere.
        InputForm::Q8G(_) => {
            scalar::quantize_groups(x, &mut buf.qs[..n], &mut buf.d[..n / block], block)
        }
    }
}

impl InputBuffers<'_> {
    /// `x` in `form`, as the last [`quantize`] of `x` left it.
    pub fn input<'s>(&'s self, form: InputForm, x: &'s [f32]) -> Input<'s> {
        input_in(self.qs, self.d, self.bsums, form, x)
    }

    /// Token `t`'s buffers, when these hold one input every `width` values
    /// (a batch).
    pub fn slot(&mut self, t: usize, width: usize) -> InputBuffers<'_> {
        InputBuffers {
            qs: &mut self.qs[t * width..(t + 1) * width],
            d: &mut self.d[t * width..(t + 1) * width],
            bsums: &mut self.bsums[t * width / 16..(t + 1) * width / 16],
        }
    }

    /// [`InputBuffers::input`] of slot `t` (see [`InputBuffers::slot`]).
    pub fn slot_input<'s>(
        &'s self,
        t: usize,
        width: usize,
        form: InputForm,
        x: &'s [f32],
    ) -> Input<'s> {
        let (qs, d) = (&self.qs[t * width..], &self.d[t * width..]);
        input_in(qs, d, &self.bsums[t * width / 16..], form, x)
    }
}

fn input_in<'s>(
    qs: &'s [i8],
    d: &'s [f32],
    bsums: &'s [i16],
    form: InputForm,
    x: &'s [f32],
) -> Input<'s> {
    let n = x.len();
    match form {
        InputForm::F32 => Input::F32(x),
        InputForm::F32Phase(phase) => {
            let at = phase_start(d, phase);
            Input::F32(&d[at..at + n])
        }
        InputForm::Bf16 => Input::F32(&d[..n]),
        InputForm::Q8_0 => Input::Q8_0 {
            qs: &qs[..n],
            d: &d[..n / 32],
        },
        InputForm::Q8_1 => Input::Q8_1 {
            qs: &qs[..n],
            d: &d[..n / 32],
            s: &d[n / 32..n / 16],
        },
        InputForm::Q8K => Input::Q8K {
            qs: &qs[..n],
            d: &d[..n / 256],
            bsums: &bsums[..n / 16],
        },
        InputForm::Q8G(group) => Input::Q8G {
            qs: &qs[..n],
            d: &d[..n / group as usize],
            group: group as usize,
        },
    }
}

/// `x` in the form weights of type `dtype` take: [`quantize`], then
/// [`InputBuffers::input`].
pub fn prepare<'a>(
    isa: Isa,
    dtype: DType,
    x: &'a [f32],
    buf: &'a mut InputBuffers<'_>,
) -> Input<'a> {
    let form = InputForm::of(dtype);
    quantize(isa, form, x, buf);
    buf.input(form, x)
}

/// Whether `x` is prepared for `w`: the form its type takes, at its width.
pub(super) fn fits(w: &WeightRef<'_>, x: &Input<'_>) -> bool {
    let cols = w.cols();
    match (w.dtype(), *x) {
        (DType::F32 | DType::F16 | DType::BF16, Input::F32(x)) => x.len() == cols,
        (DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::IQ4NL, Input::Q8_0 { qs, d }) => {
            qs.len() == cols && d.len() == cols / 32
        }
        (DType::Q4_1 | DType::Q5_1, Input::Q8_1 { qs, d, s }) => {
            qs.len() == cols && d.len() == cols / 32 && s.len() == cols / 32
        }
        (
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K | DType::IQ4XS,
            Input::Q8K { qs, d, bsums },
        ) => qs.len() == cols && d.len() == cols / 256 && bsums.len() == cols / 16,
        (DType::Q8G { group: g }, Input::Q8G { qs, d, group }) => {
            g as usize == group && qs.len() == cols && d.len() == cols / group
        }
        _ => false,
    }
}

impl<'x> Input<'x> {
    /// The values of an f32 input (empty for the others).
    pub(crate) fn f32s(self) -> &'x [f32] {
        match self {
            Input::F32(x) => x,
            _ => &[],
        }
    }

    /// The int8 values and block scales of a quantized input (empty for
    /// f32).
    fn blocks(self) -> (&'x [i8], &'x [f32]) {
        match self {
            Input::Q8_0 { qs, d }
            | Input::Q8_1 { qs, d, .. }
            | Input::Q8K { qs, d, .. }
            | Input::Q8G { qs, d, .. } => (qs, d),
            Input::F32(_) => (&[], &[]),
        }
    }

    /// The int8 values of a quantized input (empty for f32).
    pub(crate) fn qs(self) -> &'x [i8] {
        self.blocks().0
    }

    /// The block scales of a quantized input (empty for f32).
    pub(crate) fn scales(self) -> &'x [f32] {
        self.blocks().1
    }

    /// The scaled block sums of a Q8_1 input (empty for the others).
    pub(crate) fn block_sums(self) -> &'x [f32] {
        match self {
            Input::Q8_1 { s, .. } => s,
            _ => &[],
        }
    }

    /// The 16-value sums of a K-quant input (empty for the others).
    pub(crate) fn bsums(self) -> &'x [i16] {
        match self {
            Input::Q8K { bsums, .. } => bsums,
            _ => &[],
        }
    }
}

/// How a SIMD level quantizes a block of 256 values for K-quant weights
/// ([`quantize_q8_k_by`]).
///
/// # Safety
///
/// Every method: the contract of the implementing level's module (the
/// CPU has the level's features).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) trait Q8kBlocks {
    /// The largest magnitude of the 256 values `xb`.
    unsafe fn amax(xb: &[f32]) -> f32;
    /// `q = min(round(iscale · xb), 127)`, rounding half to even, and
    /// the sum of each 16 of them.
    unsafe fn quantize(xb: &[f32], iscale: f32, q: &mut [i8], sums: &mut [i16]);
}

/// The scalar twin's `quantize_q8_k`, block by block with `Q`'s vectors:
/// the scale from the first value of the largest magnitude (so that it
/// maps to −127).
///
/// # Safety
///
/// `Q`'s contract.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) unsafe fn quantize_q8_k_by<Q: Q8kBlocks>(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    bsums: &mut [i16],
) {
    let blocks = x.chunks_exact(256).zip(qs.chunks_exact_mut(256));
    for (((xb, q), db), sums) in blocks.zip(d.iter_mut()).zip(bsums.chunks_exact_mut(16)) {
        // SAFETY: the caller's.
        let amax = unsafe { Q::amax(xb) };
        let Some(&max) = xb.iter().find(|v| v.abs() == amax).filter(|_| amax != 0.0) else {
            *db = 0.0;
            q.fill(0);
            sums.fill(0);
            continue;
        };
        let iscale = -127.0 / max;
        // SAFETY: the caller's.
        unsafe { Q::quantize(xb, iscale, q, sums) };
        *db = 1.0 / iscale;
    }
}
