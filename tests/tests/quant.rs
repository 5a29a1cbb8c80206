//! The quantizers against the files the reference tools made from the same
//! fp32 weights: every tensor of every GGUF file `llama-quantize` wrote from
//! `synsmall.bin` (F16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K tensors), and every matrix
//! of the llama2.c v2 files `export.py` wrote, must come out byte for byte.

use barellama_core::tensor::{DType, WeightRef};
use barellama_core::write::quant::quantize_row;
use barellama_core::Model;
use barellama_tests::{data_dir, read};

/// Row `r` of an f32 matrix.
fn f32_row(w: &WeightRef<'_>, r: usize) -> Vec<f32> {
    assert_eq!(w.dtype(), DType::F32);
    w.rows_at(r, 1)
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The first block of `want` that `got` differs in, described; `None`
/// when they are equal.
fn first_difference(dtype: DType, got: &[u8], want: &[u8]) -> Option<String> {
    let (_, block) = dtype.block();
    let at = got.iter().zip(want).position(|(a, b)| a != b)?;
    let b = at / block;
    let range = b * block..(b + 1) * block;
    Some(format!(
        "block {b} (byte {at}):\n    ours {:02x?}\n    file {:02x?}",
        &got[range.clone()],
        &want[range]
    ))
}

/// Quantizes every row of `fp32` as `file`'s type and compares the bytes;
/// returns the blocks compared, or a description of the first mismatch.
fn compare(file: &WeightRef<'_>, fp32: &WeightRef<'_>) -> Result<usize, String> {
    assert_eq!((file.rows(), file.cols()), (fp32.rows(), fp32.cols()));
    let dtype = file.dtype();
    let mut ours = vec![0u8; dtype.bytes(1, file.cols()).unwrap()];
    for r in 0..file.rows() {
        quantize_row(dtype, &f32_row(fp32, r), &mut ours);
        // A Q8G row's bytes: its values, then its scales.
        let row = file.rows_at(r, 1);
        if let Some(diff) = first_difference(dtype, &ours, &[row.data(), row.scales()].concat()) {
            return Err(format!("row {r}, {diff}"));
        }
    }
    let (values, _) = dtype.block();
    Ok(file.rows() * file.cols() / values)
}

/// Each weight of `a` beside the same weight of `b`, with its GGUF name.
fn pairs<'a, 'b>(a: &Model<'a>, b: &Model<'b>) -> Vec<(String, WeightRef<'a>, WeightRef<'b>)> {
    let (a, b) = (&a.weights, &b.weights);
    let mut out = vec![
        (
            "token_embd".to_string(),
            a.token_embedding,
            b.token_embedding,
        ),
        ("output_norm".to_string(), a.rms_final, b.rms_final),
        ("output".to_string(), a.wcls, b.wcls),
    ];
    for (l, (x, y)) in a.layers.iter().zip(&b.layers).enumerate() {
        let named = [
            ("attn_norm", x.rms_att, y.rms_att),
            ("attn_q", x.wq, y.wq),
            ("attn_k", x.wk, y.wk),
            ("attn_v", x.wv, y.wv),
            ("attn_output", x.wo, y.wo),
            ("ffn_norm", x.rms_ffn, y.rms_ffn),
            ("ffn_gate", x.w1, y.w1),
            ("ffn_down", x.w2, y.w2),
            ("ffn_up", x.w3, y.w3),
        ];
        out.extend(named.map(|(n, x, y)| (format!("blk.{l}.{n}"), x, y)));
    }
    out
}

/// Every tensor of `models/NAME` against `models/FP32` quantized here.
/// Returns how many blocks of each type matched.
fn reference_file(name: &str, fp32: &str) -> Vec<(DType, usize)> {
    let Some(dir) = data_dir() else {
        return Vec::new();
    };
    let (fp32, quantized) = (
        read(&dir, &format!("models/{fp32}")),
        read(&dir, &format!("models/{name}")),
    );
    let fp32 = Model::load(&fp32).unwrap();
    let file = Model::load(&quantized).unwrap();
    let pairs = pairs(&file, &fp32);
    if let Some(g) = &file.gguf {
        assert_eq!(
            pairs.len(),
            g.tensor_count(),
            "{name}: every tensor compared"
        );
    }
    let mut counts: Vec<(DType, usize)> = Vec::new();
    let mut failures = Vec::new();
    for (tensor, w, f) in &pairs {
        match compare(w, f) {
            Ok(blocks) => match counts.iter_mut().find(|(t, _)| *t == w.dtype()) {
                Some((_, n)) => *n += blocks,
                None => counts.push((w.dtype(), blocks)),
            },
            Err(e) => failures.push(format!("{name} {tensor} ({}): {e}", w.dtype().name())),
        }
    }
    for (dtype, blocks) in &counts {
        println!("{name}: {blocks} {} blocks identical", dtype.name());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    counts
}

fn gguf_file(name: &str) -> Vec<(DType, usize)> {
    reference_file(name, "synsmall.bin")
}

/// Asserts `counts` holds blocks of every type in `types`.
fn covers(counts: &[(DType, usize)], types: &[DType]) {
    if counts.is_empty() {
        return; // no data
    }
    for t in types {
        assert!(
            counts.iter().any(|(c, n)| c == t && *n > 0),
            "no {} tensor",
            t.name()
        );
    }
}

#[test]
fn f16_matches_llama_quantize() {
    covers(&gguf_file("synsmall-F16.gguf"), &[DType::F16, DType::F32]);
}

#[test]
fn q8_0_matches_llama_quantize() {
    covers(&gguf_file("synsmall-Q8_0.gguf"), &[DType::Q8_0]);
}

#[test]
fn q4_0_pure_matches_llama_quantize() {
    covers(&gguf_file("synsmall-Q4_0-pure.gguf"), &[DType::Q4_0]);
}

/// Q4_0 and Q4_1 files have a Q6_K classifier.
#[test]
fn q4_0_q4_1_and_q6_k_match_llama_quantize() {
    for (file, dtype) in [
        ("synsmall-Q4_0.gguf", DType::Q4_0),
        ("synsmall-Q4_1.gguf", DType::Q4_1),
    ] {
        covers(&gguf_file(file), &[dtype, DType::Q6K]);
    }
}

#[test]
fn q4_k_m_matches_llama_quantize() {
    covers(
        &gguf_file("synsmall-Q4_K_M.gguf"),
        &[DType::Q4K, DType::Q6K],
    );
}

/// llama2.c v2 files (`export.py`'s `version2_export`): every matrix's
/// values and scales.
#[test]
fn q8_groups_match_export_py() {
    let counts = reference_file("synsmall-q80.bin", "synsmall.bin");
    covers(&counts, &[DType::Q8G { group: 64 }]);
    let counts = reference_file("stories260K-q80.bin", "stories260K.bin");
    covers(&counts, &[DType::Q8G { group: 4 }]);
}
