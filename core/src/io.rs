//! Byte sinks: where the writers (GGUF, llama2.c, logits) and the command
//! line put their bytes. A host implements [`Output`] for its files; the
//! sinks here count, fill a slice, or batch small writes.

use crate::error::{Error, Result};

/// A byte sink: stdout, stderr or a created file.
pub trait Output {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
}

/// An [`Output`] that only counts: the size of a file before writing it.
#[derive(Default)]
pub struct Counter(pub u64);

impl Output for Counter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
}

/// An [`Output`] filling a slice from the start.
pub struct SliceOutput<'b> {
    pub buf: &'b mut [u8],
    pub pos: usize,
}

impl Output for SliceOutput<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self.pos + bytes.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(Error::OutOfMemory { bytes: end })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// Collects small writes (GGUF metadata comes a few bytes at a time) into
/// `buf` before they reach `out`; [`Buffered::flush`] sends the rest.
pub struct Buffered<'b, O: Output> {
    out: O,
    buf: &'b mut [u8],
    len: usize,
}

impl<'b, O: Output> Buffered<'b, O> {
    pub fn new(out: O, buf: &'b mut [u8]) -> Self {
        Buffered { out, buf, len: 0 }
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.write(&self.buf[..self.len])?;
        self.len = 0;
        Ok(())
    }

    /// Sends the rest and hands back the sink: a host's file must be
    /// complete before it is committed.
    pub fn finish(mut self) -> Result<O> {
        self.flush()?;
        Ok(self.out)
    }
}
impl<O: Output> Output for Buffered<'_, O> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.len + bytes.len() > self.buf.len() {
            self.flush()?;
        }
        if bytes.len() >= self.buf.len() {
            return self.out.write(bytes);
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }
}
