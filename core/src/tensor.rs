//! A typed, zero-copy view of one weight matrix inside the image, and the
//! storage types it may have.

use crate::error::{Error, Result};

/// How a matrix's elements are stored. The block layouts are GGML's (so a
/// GGUF tensor is used in place); a row is a whole number of blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// Little-endian IEEE binary32; in a llama2.c v0 file only 4-byte aligned.
    F32,
    /// IEEE binary16.
    F16,
    /// 32 values: f16 scale `d`, 32 × i8; value = d·q.
    Q8_0,
    /// 32 values: f16 scale `d`, 16 bytes of nibbles (values 0..16 low
    /// nibbles first, then 16..32 high); value = d·(q − 8).
    Q4_0,
    /// 32 values: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles
    /// (as Q4_0's); value = d·q + m.
    Q4_1,
    /// 256 values in 8 sub-blocks of 32: f16 `d`, f16 `dmin`, 12 bytes of
    /// packed 6-bit sub-block scales and mins, 128 bytes of nibbles;
    /// value = d·scale·q − dmin·min.
    Q4K,
    /// 256 values in 16 sub-blocks of 16: 128 bytes of low nibbles, 64
    /// bytes of 2-bit highs, 16 × i8 scales, f16 `d`;
    /// value = d·scale·(q − 32).
    Q6K,
    /// 32 values: f16 `d`, a little-endian 32-bit word whose bit `j` is
    /// value `j`'s fifth bit, then Q4_0's 16 bytes of nibbles;
    /// value = d·(q − 16).
    Q5_0,
    /// 32 values: f16 `d`, f16 minimum `m`, then Q5_0's fifth bits and
    /// nibbles; value = d·q + m.
    Q5_1,
    /// 256 values in 8 sub-blocks of 32: Q4_K's `d`, `dmin` and packed
    /// scales and mins, 32 bytes of fifth bits (bit `j` of byte `l` is
    /// value `32j + l`'s), then Q4_K's 128 bytes of nibbles;
    /// value = d·scale·q − dmin·min.
    Q5K,
    /// 256 values in 16 sub-blocks of 16: 32 bytes of high bits (bit `j`
    /// of byte `l` belongs to value `32j + l`), 64 bytes of 2-bit values
    /// (byte `l` of each 32 holds values `l`, `l + 32`, `l + 64`, `l + 96`
    /// of its 128, lowest bits first), 12 bytes of packed 6-bit scales,
    /// f16 `d`; value = d·(scale − 32)·(q − 4 if the high bit is clear).
    Q3K,
    /// 256 values in 16 sub-blocks of 16: 16 bytes of 4-bit scale (low)
    /// and min (high), 64 bytes of 2-bit values (as Q3_K's), f16 `d`, f16
    /// `dmin`; value = d·scale·q − dmin·min.
    Q2K,
    /// 32 values: f16 `d`, 16 bytes of nibbles (as Q4_0's) that index the
    /// non-linear [`IQ4_VALUES`]; value = d·IQ4_VALUES[q].
    IQ4NL,
    /// 256 values in 8 sub-blocks of 32: f16 `d`, a little-endian u16 of
    /// the scales' top two bits (two per sub-block), 4 bytes of the scales'
    /// low nibbles (sub-block `2i` low, `2i + 1` high), then 16 bytes of
    /// IQ4_NL nibbles per sub-block; value = d·(scale − 32)·IQ4_VALUES[q].
    IQ4XS,
    /// bfloat16: the top half of an f32.
    BF16,
    /// llama2.c v2 (`runq`): a matrix's i8 values row by row, then its f32
    /// scales, one per `group` consecutive values of a row; value = s·q.
    Q8G { group: u32 },
}

impl DType {
    /// Every GGML type the engine computes with, in GGML's id order.
    pub const GGML: [DType; 15] = [
        DType::F32,
        DType::F16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2K,
        DType::Q3K,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
        DType::IQ4NL,
        DType::IQ4XS,
        DType::BF16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q4K => "Q4_K",
            DType::Q6K => "Q6_K",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q5K => "Q5_K",
            DType::Q3K => "Q3_K",
            DType::Q2K => "Q2_K",
            DType::IQ4NL => "IQ4_NL",
            DType::IQ4XS => "IQ4_XS",
            DType::BF16 => "BF16",
            DType::Q8G { .. } => "Q8_G",
        }
    }

    /// Values per block and bytes per block (for [`DType::Q8G`], a group
    /// and its values: the scales lie elsewhere).
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 => (1, 4),
            DType::F16 => (1, 2),
            DType::Q8_0 => (32, 34),
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q4K => (256, 144),
            DType::Q6K => (256, 210),
            DType::Q5_0 => (32, 22),
            DType::Q5_1 => (32, 24),
            DType::Q5K => (256, 176),
            DType::Q3K => (256, 110),
            DType::Q2K => (256, 84),
            DType::IQ4NL => (32, 18),
            DType::IQ4XS => (256, 136),
            DType::BF16 => (1, 2),
            DType::Q8G { group } => (group as usize, group as usize),
        }
    }

    /// The GGML type id of GGUF tensor infos (none for llama2.c's groups).
    pub fn ggml_id(self) -> Option<u32> {
        match self {
            DType::F32 => Some(0),
            DType::F16 => Some(1),
            DType::Q4_0 => Some(2),
            DType::Q4_1 => Some(3),
            DType::Q8_0 => Some(8),
            DType::Q4K => Some(12),
            DType::Q6K => Some(14),
            DType::Q5_0 => Some(6),
            DType::Q5_1 => Some(7),
            DType::Q2K => Some(10),
            DType::Q3K => Some(11),
            DType::Q5K => Some(13),
            DType::IQ4NL => Some(20),
            DType::IQ4XS => Some(23),
            DType::BF16 => Some(30),
            DType::Q8G { .. } => None,
        }
    }

    /// The type with GGML id `id`, if this engine computes with it.
    pub fn from_ggml(id: u32) -> Option<DType> {
        DType::GGML.into_iter().find(|t| t.ggml_id() == Some(id))
    }

    /// Bytes of a `rows × cols` matrix (scales included); `None` on
    /// overflow, a zero group, or when `cols` is not a whole number of
    /// blocks.
    pub fn bytes(self, rows: usize, cols: usize) -> Option<usize> {
        let (values, bytes) = self.block();
        if values == 0 || !cols.is_multiple_of(values) {
            return None;
        }
        let data = (cols / values).checked_mul(bytes)?.checked_mul(rows)?;
        match self {
            DType::Q8G { .. } => {
                data.checked_add((cols / values).checked_mul(rows)?.checked_mul(4)?)
            }
            _ => Some(data),
        }
    }
}

/// The 16 values an IQ4_NL or IQ4_XS nibble stands for (GGML's
/// `kvalues_iq4nl`): denser near zero, where most weights are.
pub const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// A `rows × cols` row-major matrix (a vector has one row) borrowed from the
/// image. The constructor guarantees `data.len()` matches the shape, which is
/// what lets the kernels index without re-checking per element.
#[derive(Clone, Copy)]
pub struct WeightRef<'w> {
    dtype: DType,
    rows: usize,
    cols: usize,
    data: &'w [u8],
    /// [`DType::Q8G`]'s scales, `rows × cols / group` f32; empty otherwise.
    scales: &'w [u8],
}

impl<'w> WeightRef<'w> {
    /// Views `data` as a matrix; `name` labels the error if the sizes
    /// disagree. For [`DType::Q8G`], `data` holds the values then the scales.
    pub fn new(
        name: &'static str,
        dtype: DType,
        rows: usize,
        cols: usize,
        data: &'w [u8],
    ) -> Result<Self> {
        let (values, _) = dtype.block();
        if values == 0 || !cols.is_multiple_of(values) {
            return Err(Error::Mismatch {
                field: name,
                value: cols as i64,
                rule: "columns are not a whole number of blocks of",
                other: dtype.name(),
                other_value: values as i64,
            });
        }
        let want = dtype
            .bytes(rows, cols)
            .ok_or(Error::Overflow { field: name })?;
        if want != data.len() {
            return Err(Error::Mismatch {
                field: name,
                value: data.len() as i64,
                rule: "bytes, but its shape needs",
                other: "bytes",
                other_value: want as i64,
            });
        }
        // Only Q8G has separate scales, after `rows · cols` values.
        let (data, scales) = match dtype {
            DType::Q8G { .. } => data.split_at(rows * cols),
            _ => (data, &data[data.len()..]),
        };
        Ok(WeightRef {
            dtype,
            rows,
            cols,
            data,
            scales,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values (all of the matrix but [`DType::Q8G`]'s scales).
    pub fn data(&self) -> &'w [u8] {
        self.data
    }

    /// [`DType::Q8G`]'s scales as little-endian f32; empty for other types.
    pub fn scales(&self) -> &'w [u8] {
        self.scales
    }

    /// Bytes the matrix occupies, scales included.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.scales.len()
    }

    /// Bytes of one row's values.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The `count` rows from `start` on, as a matrix of their own (how work
    /// is split across threads).
    pub fn rows_at(&self, start: usize, count: usize) -> WeightRef<'w> {
        assert!(start + count <= self.rows, "rows_at: range");
        let row = self.row_bytes();
        let scales = self.scales.len() / self.rows.max(1);
        WeightRef {
            rows: count,
            data: &self.data[start * row..(start + count) * row],
            scales: &self.scales[start * scales..(start + count) * scales],
            ..*self
        }
    }
}

/// Shape and size only: the bytes are megabytes of noise in a message.
impl core::fmt::Debug for WeightRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} {}x{} ({} bytes)",
            self.dtype.name(),
            self.rows,
            self.cols,
            self.bytes()
        )
    }
}

/// IEEE binary16 bits to f32, exactly (subnormals, infinities and NaNs too).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from(h >> 10) & 0x1f;
    let man = u32::from(h) & 0x3ff;
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: value man·2^-24, renormalised for binary32.
        (0, _) => {
            let shift = man.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | ((man << shift) & 0x3ff) << 13
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 bits to f32, exactly.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// f32 to the nearest bfloat16 (ties to even), as GGML rounds: a NaN stays
/// a quiet NaN, everything else rounds its bits (overflow goes to
/// infinity, subnormals are kept).
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// f32 to the nearest IEEE binary16 (ties to even), as GGML stores scales.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        let nan = if man != 0 { 0x200 } else { 0 };
        return sign | 0x7c00 | nan;
    }
    // Rebias; below 2^-14 becomes subnormal or zero.
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let (mant, shift) = if e <= 0 {
        if e < -10 {
            return sign;
        }
        (man | 0x80_0000, (14 - e) as u32)
    } else {
        (man, 13)
    };
    let half = 1u32 << (shift - 1);
    let rest = mant & ((1 << shift) - 1);
    let mut h = (mant >> shift) as u16;
    if rest > half || (rest == half && h & 1 == 1) {
        h += 1;
    }
    let h = if e <= 0 { h } else { ((e as u16) << 10) + h };
    sign | h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn f16_round_trips_every_value() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x} -> {x}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        assert_eq!(f16_to_f32(f32_to_f16(1.0 + 1.0 / 2048.0)), 1.0);
        assert_eq!(
            f16_to_f32(f32_to_f16(1.0 + 3.0 / 2048.0)),
            1.0 + 2.0 / 1024.0
        );
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(1e-8), 0);
        assert_eq!(f16_to_f32(1), 5.960_464_5e-8);
    }

    #[test]
    fn block_sizes_are_checked() {
        assert_eq!(DType::Q4K.bytes(2, 512), Some(2 * 2 * 144));
        assert_eq!(DType::Q4K.bytes(1, 100), None);
        let bytes = [0u8; 18];
        assert!(WeightRef::new("w", DType::Q4_0, 1, 32, &bytes).is_ok());
        let err = WeightRef::new("w", DType::Q4_0, 1, 16, &bytes[..9]).unwrap_err();
        assert!(err.to_string().contains("whole number of blocks"), "{err}");
    }
}
