//! GGUF v3, written through an [`Output`]: a counting sink measures a file
//! before it exists, a slice sink builds one in memory, a file sink streams
//! one to disk — the same code for all three.

use crate::error::{text, Error, Result};
use crate::image::gguf::{ValueType, DEFAULT_ALIGNMENT, MAGIC};
use crate::io::Output;
use crate::tensor::DType;

/// The GGUF v3 writer: header, metadata, tensor infos, aligned data.
pub struct Writer<'s> {
    sink: &'s mut dyn Output,
    pos: u64,
}

/// One tensor to write: name, type and shape (`rows × cols`; `rows == 1`
/// writes a one-dimensional tensor).
#[derive(Clone, Copy, Debug)]
pub struct TensorSpec<'n> {
    pub name: &'n [u8],
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
}

impl TensorSpec<'_> {
    /// The tensor's size; a row that is not whole blocks of its type is
    /// refused naming the tensor, the row and the block, so that a `--type`
    /// the model's shape cannot take is not mistaken for an overflow.
    pub fn bytes(&self) -> Result<usize> {
        let (block, _) = self.dtype.block();
        if !self.cols.is_multiple_of(block) {
            return Err(Error::Blocks {
                name: text(self.name),
                cols: self.cols,
                dtype: self.dtype.name(),
                block,
            });
        }
        self.dtype
            .bytes(self.rows, self.cols)
            .ok_or(Error::Overflow { field: "tensor" })
    }

    /// Where the next tensor's data starts when this one starts at `offset`.
    pub fn next_offset(&self, offset: u64) -> Result<u64> {
        Ok((offset + self.bytes()? as u64).next_multiple_of(DEFAULT_ALIGNMENT))
    }
}

impl<'s> Writer<'s> {
    /// Starts a file with `tensors` tensors and `kvs` metadata entries.
    pub fn new(sink: &'s mut dyn Output, tensors: u64, kvs: u64) -> Result<Self> {
        let mut w = Writer { sink, pos: 0 };
        w.raw(&MAGIC.to_le_bytes())?;
        w.raw(&3u32.to_le_bytes())?;
        w.raw(&tensors.to_le_bytes())?;
        w.raw(&kvs.to_le_bytes())?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.pos += bytes.len() as u64;
        self.sink.write(bytes)
    }

    fn string(&mut self, s: &[u8]) -> Result<()> {
        self.raw(&(s.len() as u64).to_le_bytes())?;
        self.raw(s)
    }

    fn key(&mut self, key: &str, ty: ValueType) -> Result<()> {
        self.string(key.as_bytes())?;
        self.raw(&ty.id().to_le_bytes())
    }

    pub fn u32(&mut self, key: &str, v: u32) -> Result<()> {
        self.key(key, ValueType::U32)?;
        self.raw(&v.to_le_bytes())
    }

    pub fn f32(&mut self, key: &str, v: f32) -> Result<()> {
        self.key(key, ValueType::F32)?;
        self.raw(&v.to_le_bytes())
    }

    pub fn bool(&mut self, key: &str, v: bool) -> Result<()> {
        self.key(key, ValueType::Bool)?;
        self.raw(&[u8::from(v)])
    }

    pub fn str(&mut self, key: &str, v: &[u8]) -> Result<()> {
        self.key(key, ValueType::String)?;
        self.string(v)
    }

    /// An array of `len` elements of the fixed-size type `elem`, given as
    /// their little-endian bytes.
    pub fn array(&mut self, key: &str, elem: ValueType, len: u64, data: &[u8]) -> Result<()> {
        self.array_start(key, elem, len)?;
        self.raw(data)
    }

    /// An array of strings.
    pub fn strings<'x>(
        &mut self,
        key: &str,
        items: impl ExactSizeIterator<Item = &'x [u8]>,
    ) -> Result<()> {
        self.array_start(key, ValueType::String, items.len() as u64)?;
        for s in items {
            self.string(s)?;
        }
        Ok(())
    }

    /// The head of an array of `len` elements of type `elem`; the caller
    /// then writes exactly their bytes with [`Writer::element`] (a string
    /// element is its u64 length and its bytes).
    pub fn array_start(&mut self, key: &str, elem: ValueType, len: u64) -> Result<()> {
        self.key(key, ValueType::Array)?;
        self.raw(&elem.id().to_le_bytes())?;
        self.raw(&len.to_le_bytes())
    }

    /// Bytes of an array started with [`Writer::array_start`].
    pub fn element(&mut self, bytes: &[u8]) -> Result<()> {
        self.raw(bytes)
    }

    /// A metadata entry copied from another file: its key, type and the
    /// value's bytes as [`Gguf::raw_metadata`](crate::image::gguf::Gguf::raw_metadata) gives them.
    pub fn entry(&mut self, key: &[u8], ty: ValueType, value: &[u8]) -> Result<()> {
        self.string(key)?;
        self.raw(&ty.id().to_le_bytes())?;
        self.raw(value)
    }

    /// One tensor info; `offset` is where its data starts in the data
    /// section, and the next tensor's is [`TensorSpec::next_offset`].
    pub fn tensor_info(&mut self, t: &TensorSpec<'_>, offset: u64) -> Result<()> {
        self.string(t.name)?;
        let dims: &[u64] = &[t.cols as u64, t.rows as u64];
        let dims = if t.rows == 1 { &dims[..1] } else { dims };
        self.raw(&(dims.len() as u32).to_le_bytes())?;
        for d in dims {
            self.raw(&d.to_le_bytes())?;
        }
        let id = t.dtype.ggml_id().ok_or(Error::Text {
            field: "tensor",
            value: text(t.name),
            problem: "has a type GGUF cannot store",
        })?;
        self.raw(&id.to_le_bytes())?;
        self.raw(&offset.to_le_bytes())
    }

    /// Zero padding up to the next multiple of the alignment: before the
    /// data section and after every tensor.
    pub fn align(&mut self) -> Result<()> {
        let pad = self.pos.next_multiple_of(DEFAULT_ALIGNMENT) - self.pos;
        self.raw(&[0u8; DEFAULT_ALIGNMENT as usize][..pad as usize])
    }

    /// Tensor data (write each tensor whole, then [`Writer::align`]).
    pub fn data(&mut self, bytes: &[u8]) -> Result<()> {
        self.raw(bytes)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }
}
