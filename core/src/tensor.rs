//! A typed, zero-copy view of one weight matrix inside the image.

use crate::error::{Error, Result};

/// How a matrix's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// Little-endian IEEE binary32; in a llama2.c v0 file only 4-byte aligned.
    F32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
        }
    }

    /// Bytes of a `rows × cols` matrix, or `None` on overflow.
    pub fn bytes(self, rows: usize, cols: usize) -> Option<usize> {
        match self {
            DType::F32 => rows.checked_mul(cols)?.checked_mul(4),
        }
    }
}

/// A `rows × cols` row-major matrix (a vector has one row) borrowed from the
/// image. The constructor guarantees `data.len()` matches the shape, which is
/// what lets the kernels index without re-checking per element.
#[derive(Clone, Copy)]
pub struct WeightRef<'w> {
    dtype: DType,
    rows: usize,
    cols: usize,
    data: &'w [u8],
}

impl<'w> WeightRef<'w> {
    /// Views `data` as a matrix; `name` labels the error if the sizes disagree.
    pub fn new(
        name: &'static str,
        dtype: DType,
        rows: usize,
        cols: usize,
        data: &'w [u8],
    ) -> Result<Self> {
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
        Ok(WeightRef {
            dtype,
            rows,
            cols,
            data,
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

    pub fn data(&self) -> &'w [u8] {
        self.data
    }

    /// The `count` rows from `start` on, as a matrix of their own (how work
    /// is split across threads).
    pub fn rows_at(&self, start: usize, count: usize) -> WeightRef<'w> {
        assert!(start + count <= self.rows, "rows_at: range");
        let row = self.dtype.bytes(1, self.cols).unwrap_or(0);
        WeightRef {
            rows: count,
            data: &self.data[start * row..(start + count) * row],
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
            self.data.len()
        )
    }
}
