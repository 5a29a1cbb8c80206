//! The KV cache: for each layer, `seq_len` positions of `kv_dim` keys and
//! as many values, in f32 (llama2.c) or f16 (llama.cpp's default), once
//! per beam. Everything that reads or writes it is here.

use crate::config::Config;
use crate::exec::{for_each_pair, Exec};
use crate::kernels::{attention_f16, attention_mix, attention_scores, f32_to_f16, softmax, Isa};

/// The caches' keys and values, carved from the arena by the plan.
pub enum KvBuffers<'a> {
    F32 {
        keys: &'a mut [f32],
        values: &'a mut [f32],
    },
    /// f16 bits; a position's key and value are computed in f32 and
    /// rounded into the cache.
    F16 {
        keys: &'a mut [u16],
        values: &'a mut [u16],
    },
}

impl KvBuffers<'_> {
    /// How many KV caches (beams) the buffers hold.
    pub(super) fn caches(&self, p: &Config) -> usize {
        let n = match self {
            KvBuffers::F32 { keys, .. } => keys.len(),
            KvBuffers::F16 { keys, .. } => keys.len(),
        };
        n / (p.n_layers * p.seq_len * p.kv_dim())
    }

    /// Copies the first `positions` positions of cache `from` into cache
    /// `to` (another), a layer per parallel task: at 2 threads a serial copy
    /// was a tenth of a 4-beam step.
    pub(super) fn copy(
        &mut self,
        exec: &dyn Exec,
        p: &Config,
        caches: (usize, usize),
        positions: usize,
    ) {
        let layers = (p.n_layers, p.seq_len * p.kv_dim());
        let len = positions * p.kv_dim();
        match self {
            KvBuffers::F32 { keys, values } => {
                copy_layers(exec, [keys, values], caches, layers, len)
            }
            KvBuffers::F16 { keys, values } => {
                copy_layers(exec, [keys, values], caches, layers, len)
            }
        }
    }

    /// Writes a position's key and value, computed in f32, at cache index
    /// `at` (rounding them to f16 for an f16 cache).
    pub(super) fn put(&mut self, isa: Isa, at: usize, k: &[f32], v: &[f32]) {
        let n = k.len();
        match self {
            KvBuffers::F32 { keys, values } => {
                keys[at..at + n].copy_from_slice(k);
                values[at..at + n].copy_from_slice(v);
            }
            KvBuffers::F16 { keys, values } => {
                f32_to_f16(isa, &mut keys[at..at + n], k);
                f32_to_f16(isa, &mut values[at..at + n], v);
            }
        }
    }

    /// One query head's attention over `positions` cached positions of the
    /// KV head starting at `head`; `att` is scratch (`positions` floats for the
    /// f32 cache, twice that for the f16 one).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attend(
        &self,
        isa: Isa,
        q: &[f32],
        head: usize,
        kv_dim: usize,
        positions: usize,
        att: &mut [f32],
        out: &mut [f32],
    ) {
        let head_size = q.len() as f32;
        match self {
            // llama2.c: scores divided by √head_size, softmax, weighted sum.
            KvBuffers::F32 { keys, values } => {
                let att = &mut att[..positions];
                attention_scores(isa, att, q, &keys[head..], kv_dim, libm::sqrtf(head_size));
                softmax(isa, att);
                attention_mix(isa, out, att, &values[head..], kv_dim);
            }
            // llama.cpp: scores times 1/√head_size, online softmax.
            KvBuffers::F16 { keys, values } => {
                let scale = 1.0 / libm::sqrtf(head_size);
                let scratch = &mut att[..2 * positions];
                attention_f16(
                    isa,
                    out,
                    q,
                    &keys[head..],
                    &values[head..],
                    kv_dim,
                    positions,
                    scale,
                    scratch,
                );
            }
        }
    }
}

/// [`KvBuffers::copy`] for one element type: the first `len` of each of
/// the `layers` parts (`layer` long) of cache `from`'s keys and values into
/// cache `to`'s.
fn copy_layers<T: Copy + Send + Sync>(
    exec: &dyn Exec,
    [keys, values]: [&mut [T]; 2],
    (from, to): (usize, usize),
    (layers, layer): (usize, usize),
    len: usize,
) {
    let cache = layers * layer;
    let (src_k, dst_k) = apart(keys, from * cache, to * cache, cache);
    let (src_v, dst_v) = apart(values, from * cache, to * cache, cache);
    for_each_pair(exec, layers, dst_k, layer, dst_v, layer, &|l, k, v| {
        k[..len].copy_from_slice(&src_k[l * layer..][..len]);
        v[..len].copy_from_slice(&src_v[l * layer..][..len]);
    });
}

/// The `n` elements of `v` at `from`, to read, and at `to`, to write: two
/// ranges that must not overlap.
fn apart<T>(v: &mut [T], from: usize, to: usize, n: usize) -> (&[T], &mut [T]) {
    if from < to {
        let (a, b) = v.split_at_mut(to);
        (&a[from..from + n], &mut b[..n])
    } else {
        let (a, b) = v.split_at_mut(from);
        (&b[..n], &mut a[to..to + n])
    }
}
