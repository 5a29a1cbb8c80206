//! Every kernel at every instruction-set level this CPU has, at the
//! stories110M shapes. Throughput is reported both as FLOP/s (elements) and
//! as bytes of weights (or activations) streamed per second:
//!
//!     cargo bench -p barellama-bench
//!     cargo bench -p barellama-bench -- matvec/avx512
use barellama_bench::{le_bytes, random, SHAPES};
use barellama_core::kernels::{self, Isa};
use barellama_core::tensor::{DType, WeightRef};
use barellama_core::write::synth;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn matvec(c: &mut Criterion) {
    let mut g = c.benchmark_group("matvec");
    for (rows, cols) in SHAPES {
        let bytes = le_bytes(&random(rows * cols, 1));
        let w = WeightRef::new("w", DType::F32, rows, cols, &bytes).unwrap();
        let x = random(cols, 2);
        let x = kernels::Input::F32(&x);
        let mut out = vec![0.0; rows];
        g.throughput(Throughput::ElementsAndBytes {
            elements: (2 * rows * cols) as u64,
            bytes: bytes.len() as u64,
        });
        for isa in Isa::available() {
            let id = BenchmarkId::new(isa.name(), format!("{rows}x{cols}"));
            g.bench_function(id, |b| b.iter(|| kernels::matvec(isa, &mut out, &w, &x)));
        }
    }
    g.finish();
}

/// The vector kernels at the sizes one stories110M token uses them.
fn vectors(c: &mut Criterion) {
    let (dim, hidden, head, vocab) = (768, 2048, 64, 32000);
    let x = random(hidden.max(vocab), 3);
    let y = random(hidden.max(vocab), 4);
    let norm_bytes = le_bytes(&random(dim, 5));
    let norm = WeightRef::new("norm", DType::F32, 1, dim, &norm_bytes).unwrap();
    let angles = random(head / 2, 6);
    let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
    let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
    let mut buf = vec![0.0f32; hidden.max(vocab)];
    let kv = random(256 * dim, 7);

    let mut g = c.benchmark_group("vector");
    for isa in Isa::available() {
        let name = isa.name();
        // (elements, bytes) per call; the FLOP counts are nominal.
        g.throughput(Throughput::ElementsAndBytes {
            elements: 3 * dim as u64,
            bytes: 8 * dim as u64,
        });
        g.bench_function(BenchmarkId::new(name, "rmsnorm/768"), |b| {
            b.iter(|| kernels::rmsnorm(isa, &mut buf[..dim], &x[..dim], &norm, 1e-5))
        });
        for n in [256, vocab] {
            g.throughput(Throughput::ElementsAndBytes {
                elements: 3 * n as u64,
                bytes: 4 * n as u64,
            });
            g.bench_function(BenchmarkId::new(name, format!("softmax/{n}")), |b| {
                b.iter(|| {
                    buf[..n].copy_from_slice(&x[..n]);
                    kernels::softmax(isa, &mut buf[..n])
                })
            });
        }
        g.throughput(Throughput::ElementsAndBytes {
            elements: 6 * dim as u64,
            bytes: 4 * dim as u64,
        });
        g.bench_function(BenchmarkId::new(name, "rope/768"), |b| {
            b.iter(|| kernels::rope(isa, &mut buf[..dim], &cos, &sin))
        });
        g.throughput(Throughput::ElementsAndBytes {
            elements: 4 * hidden as u64,
            bytes: 8 * hidden as u64,
        });
        g.bench_function(BenchmarkId::new(name, "swiglu/2048"), |b| {
            b.iter(|| {
                buf[..hidden].copy_from_slice(&x[..hidden]);
                kernels::swiglu(isa, &mut buf[..hidden], &y[..hidden])
            })
        });
        // One head over 256 cached positions of a 768-wide KV cache.
        let positions = 256;
        let cache = &kv[..(positions - 1) * dim + head];
        g.throughput(Throughput::ElementsAndBytes {
            elements: 2 * (head * positions) as u64,
            bytes: 4 * (head * positions) as u64,
        });
        g.bench_function(BenchmarkId::new(name, "attention_scores/64x256"), |b| {
            b.iter(|| {
                kernels::attention_scores(isa, &mut buf[..positions], &x[..head], cache, dim, 8.0)
            })
        });
        let weights = &x[..positions];
        g.bench_function(BenchmarkId::new(name, "attention_mix/64x256"), |b| {
            b.iter(|| kernels::attention_mix(isa, &mut buf[..head], weights, cache, dim))
        });
        g.throughput(Throughput::ElementsAndBytes {
            elements: dim as u64,
            bytes: 8 * dim as u64,
        });
        g.bench_function(BenchmarkId::new(name, "add/768"), |b| {
            b.iter(|| kernels::add(isa, &mut buf[..dim], &x[..dim]))
        });
    }
    g.finish();
}

/// The quantized and half-precision weight types, input prepared once per
/// call as the model does.
fn quantized(c: &mut Criterion) {
    let mut g = c.benchmark_group("matvec_q");
    for dtype in [DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4K, DType::Q6K] {
        for (rows, cols) in SHAPES {
            if cols % dtype.block().0 != 0 {
                continue;
            }
            let mut bytes = vec![0u8; dtype.bytes(rows, cols).unwrap()];
            synth::fill_random(dtype, &mut bytes, 0.05, 3);
            let w = WeightRef::new("w", dtype, rows, cols, &bytes).unwrap();
            let x = random(cols, 4);
            let (mut qs, mut d, mut bsums) =
                (vec![0i8; cols], vec![0.0; cols / 32], vec![0i16; cols / 16]);
            let mut buf = kernels::InputBuffers {
                qs: &mut qs,
                d: &mut d,
                bsums: &mut bsums,
            };
            let input = kernels::prepare(Isa::SCALAR, dtype, &x, &mut buf);
            let mut out = vec![0.0; rows];
            g.throughput(Throughput::ElementsAndBytes {
                elements: (2 * rows * cols) as u64,
                bytes: bytes.len() as u64,
            });
            for isa in Isa::available() {
                let id = BenchmarkId::new(
                    format!("{}/{}", dtype.name(), isa.name()),
                    format!("{rows}x{cols}"),
                );
                g.bench_function(id, |b| {
                    b.iter(|| kernels::matvec(isa, &mut out, &w, &input))
                });
            }
        }
    }
    g.finish();
}

/// The matrix–matrix kernels as a prefill task calls them: a group of rows
/// that fills 64 KiB (and so stays in cache), applied to a batch of 64
/// inputs staged as `batch_form` asks.
///
///     cargo bench -p barellama-bench -- matmul/F32
fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    let batch = 64;
    for dtype in DType::GGML.into_iter().chain([DType::Q8G { group: 64 }]) {
        for cols in [768, 2048] {
            let rows = (64 * 1024 / dtype.bytes(1, cols).unwrap()).next_multiple_of(16);
            // 32 bytes past a cache line, as GGUF files often place them.
            let n = dtype.bytes(rows, cols).unwrap();
            let mut store = vec![0u8; n + 128];
            let at = (64 - store.as_ptr() as usize % 64) % 64 + 32;
            let bytes = &mut store[at..at + n];
            synth::fill_random(dtype, bytes, 0.05, 3);
            let w = WeightRef::new("w", dtype, rows, cols, bytes).unwrap();
            let xs: Vec<Vec<f32>> = (0..batch).map(|t| random(cols, 5 + t as u64)).collect();
            let width = cols.next_multiple_of(256) + 256;
            let (mut qs, mut d) = (vec![0i8; batch * width], vec![0.0f32; batch * width]);
            let mut bsums = vec![0i16; batch * width / 16];
            let mut buf = kernels::InputBuffers {
                qs: &mut qs,
                d: &mut d,
                bsums: &mut bsums,
            };
            let mut outs = vec![vec![0.0; rows]; batch];
            g.throughput(Throughput::Elements((2 * rows * cols * batch) as u64));
            for isa in Isa::available() {
                let form = kernels::batch_form(isa, &w);
                for (t, x) in xs.iter().enumerate() {
                    kernels::quantize(isa, form, x, &mut buf.slot(t, width));
                }
                let inputs: Vec<kernels::Input<'_>> = (0..batch)
                    .map(|t| buf.slot_input(t, width, form, &xs[t]))
                    .collect();
                let id = BenchmarkId::new(
                    format!("{}/{}", dtype.name(), isa.name()),
                    format!("{rows}x{cols}x{batch}"),
                );
                g.bench_function(id, |b| {
                    b.iter(|| {
                        let mut outs: Vec<&mut [f32]> =
                            outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                        kernels::matmul(isa, &mut outs, &w, &inputs)
                    })
                });
                // What the tile replaces: the same work as one matvec per
                // input over the cached rows.
                let id = BenchmarkId::new(
                    format!("{}/{}/matvec-each", dtype.name(), isa.name()),
                    format!("{rows}x{cols}x{batch}"),
                );
                g.bench_function(id, |b| {
                    b.iter(|| {
                        for (o, x) in outs.iter_mut().zip(&inputs) {
                            kernels::matvec(isa, o, &w, x);
                        }
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, matvec, quantized, matmul, vectors);
criterion_main!(benches);
