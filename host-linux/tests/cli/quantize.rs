//! `barellama quantize` and `convert` end to end: the files they write
//! against the ones llama.cpp's `llama-quantize` and llama2.c's `export.py`
//! wrote from the same fp32 weights.

use barellama_core::arena::KvType;
use barellama_core::image::gguf::ValueType;
use barellama_core::{Compute, Isa, Model};
use barellama_tests::{read, teacher_forced_kv, Golden, TempDir};

use super::{fails, ok, s, Data};

/// Every tensor's data in `ours` equals the same-named tensor's in `theirs`.
fn same_tensors(ours: &[u8], theirs: &[u8], what: &str) {
    let (a, b) = (Model::load(ours).unwrap(), Model::load(theirs).unwrap());
    let (ga, gb) = (a.gguf.unwrap(), b.gguf.unwrap());
    assert_eq!(ga.tensor_count(), gb.tensor_count(), "{what}: tensor count");
    for t in gb.tensors() {
        let t = t.unwrap();
        let mine = ga
            .tensor(t.name)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: no {:?}", t.name));
        assert_eq!(mine.dtype, t.dtype, "{what}: {:?} type", t.name);
        assert!(
            ga.data(&mine) == gb.data(&t),
            "{what}: {:?} data differs",
            String::from_utf8_lossy(t.name)
        );
    }
}

/// A metadata array's length and bytes.
fn array(image: &[u8], key: &'static str, elem: ValueType) -> (u64, Vec<u8>) {
    let g = Model::load(image).unwrap().gguf.unwrap();
    let (n, bytes) = g.array(key, elem).unwrap().unwrap();
    (n, bytes.to_vec())
}

/// synsmall.bin quantized here against `llama-quantize`'s file, tensor by
/// tensor; then the file we wrote decodes to llama.cpp's own logits exactly
/// as the reference file does (same weights, same vocabulary).
fn like_llama_quantize(kind: &str, reference: &str) {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("quantize");
    let out = tmp.path(&format!("synsmall-{kind}.gguf"));
    let (m, z) = (d.model("synsmall.bin"), d.model("tok512.bin"));
    let args = ["quantize", s(&m), s(&out), "--type", kind, "-z", s(&z)];
    let (_, log) = ok(&args, b"");
    assert!(
        log.contains("[  39/39] blk.3.ffn_up.weight") && log.contains("wrote"),
        "{log}"
    );
    let ours = std::fs::read(&out).unwrap();
    let theirs = read(&d.0, &format!("models/{reference}"));
    same_tensors(&ours, &theirs, kind);
    // tok512.bin's pieces become the vocabulary llama.cpp's converter wrote.
    for (key, elem) in [
        ("tokenizer.ggml.tokens", ValueType::String),
        ("tokenizer.ggml.scores", ValueType::F32),
        ("tokenizer.ggml.token_type", ValueType::I32),
    ] {
        assert_eq!(
            array(&ours, key, elem),
            array(&theirs, key, elem),
            "{kind}: {key}"
        );
    }
    let g = Golden::read(&d.0, "golden/synsmall.once.l2c.bin");
    let compute = Compute::single(Isa::detect());
    let a = teacher_forced_kv(&ours, &g.tokens, 20, compute, KvType::F16);
    let b = teacher_forced_kv(&theirs, &g.tokens, 20, compute, KvType::F16);
    assert!(a == b, "{kind}: logits differ from the reference file's");
}

#[test]
fn q8_0_matches_llama_quantize() {
    like_llama_quantize("q8_0", "synsmall-Q8_0.gguf");
}

#[test]
fn q4_0_matches_llama_quantize() {
    like_llama_quantize("q4_0", "synsmall-Q4_0.gguf");
}

#[test]
fn q4_0_pure_matches_llama_quantize() {
    like_llama_quantize("q4_0-pure", "synsmall-Q4_0-pure.gguf");
}

#[test]
fn q4_1_matches_llama_quantize() {
    like_llama_quantize("q4_1", "synsmall-Q4_1.gguf");
}

#[test]
fn q4_k_matches_llama_quantize_q4_k_m() {
    like_llama_quantize("q4_k", "synsmall-Q4_K_M.gguf");
}

#[test]
fn f16_and_convert_match_llama_cpp() {
    like_llama_quantize("f16", "synsmall-F16.gguf");
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("convert");
    let out = tmp.path("synsmall-f32.gguf");
    let (m, z) = (d.model("synsmall.bin"), d.model("tok512.bin"));
    ok(&["convert", s(&m), s(&out), "-z", s(&z)], b"");
    same_tensors(
        &std::fs::read(&out).unwrap(),
        &read(&d.0, "models/synsmall-f32.gguf"),
        "f32",
    );
}

/// A GGUF source keeps its own vocabulary; its F32 weights quantize the
/// same as llama2.c's.
#[test]
fn gguf_to_gguf_keeps_the_vocabulary() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("requantize");
    let out = tmp.path("q8.gguf");
    let m = d.model("synsmall-f32.gguf");
    ok(&["quantize", s(&m), s(&out), "--type", "q8_0"], b"");
    let ours = std::fs::read(&out).unwrap();
    let theirs = read(&d.0, "models/synsmall-Q8_0.gguf");
    same_tensors(&ours, &theirs, "q8_0 from gguf");
    let key = "tokenizer.ggml.tokens";
    let source = read(&d.0, "models/synsmall-f32.gguf");
    assert_eq!(
        array(&ours, key, ValueType::String),
        array(&source, key, ValueType::String)
    );
}

/// The whole llama2.c v2 file, header included, as `export.py` wrote it.
#[test]
fn v2_files_are_export_py_byte_for_byte() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("v2");
    for (source, group, reference) in [
        ("synsmall.bin", "v2", "synsmall-q80.bin"),
        ("stories260K.bin", "v2:4", "stories260K-q80.bin"),
    ] {
        let out = tmp.path(reference);
        let m = d.model(source);
        ok(&["quantize", s(&m), s(&out), "--type", group], b"");
        assert!(
            std::fs::read(&out).unwrap() == read(&d.0, &format!("models/{reference}")),
            "{reference}"
        );
    }
}

#[test]
fn refusals_come_before_the_output_exists() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("refuse");
    let out = tmp.path("never");
    let (m, q) = (d.model("stories260K.bin"), d.model("synsmall-Q8_0.gguf"));
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["quantize", s(&m), s(&out), "--type", "v2:8"],
            3,
            "w2 = 172 values per row are not a multiple of group_size = 8",
        ),
        (
            &["quantize", s(&m), s(&out), "--type", "q8_0"],
            2,
            "a llama2.c model needs -z TOKENIZER",
        ),
        (
            &["quantize", s(&q), s(&out), "--type", "q4_0"],
            3,
            "tensor 'token_embd.weight' is already quantized",
        ),
        (
            &["quantize", s(&m), s(&out), "--type", "q5_0"],
            2,
            "--type takes",
        ),
        (
            &["quantize", s(&m), s(&out), "--type", "v2:0"],
            2,
            "--type takes",
        ),
        (&["quantize", s(&m), "--type", "f16"], 2, "needs IN and OUT"),
    ];
    for (args, code, message) in cases {
        let (_, err) = fails(args, b"", code);
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} created the output");
    }
}

/// The names in the directory `dir`, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// OUT that is IN or the tokenizer, by name, through a symbolic link or a
/// hard link, is refused before anything is written: the input was mapped,
/// and truncating it killed the process with SIGBUS and left it empty.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("same-file");
    let (m, z, f) = (tmp.path("s.bin"), tmp.path("tok.bin"), tmp.path("f.gguf"));
    for (copy, name) in [
        (&m, "stories260K.bin"),
        (&z, "tok512.bin"),
        (&f, "stories260K-f32.gguf"),
    ] {
        std::fs::copy(d.model(name), copy).unwrap();
    }
    let (soft, hard) = (tmp.path("soft.bin"), tmp.path("hard.bin"));
    std::os::unix::fs::symlink("s.bin", &soft).unwrap();
    std::fs::hard_link(&m, &hard).unwrap();
    let before = listing(&tmp.path(""));
    let (m, z, f, soft, hard) = (s(&m), s(&z), s(&f), s(&soft), s(&hard));
    let cases: [(&[&str], &str); 7] = [
        (&["quantize", m, m, "--type", "v2:4"], m),
        (&["quantize", m, soft, "--type", "v2:4"], soft),
        (&["quantize", m, hard, "--type", "v2:4"], hard),
        (&["quantize", m, m, "--type", "f16", "-z", z], m),
        (&["quantize", m, z, "--type", "f16", "-z", z], z),
        (&["convert", f, f], f),
        (&["convert", m, soft, "-z", z], soft),
    ];
    for (args, out) in cases {
        let (_, err) = fails(args, b"", 2);
        let want = format!("the output is the same file as an input: '{out}'");
        assert!(err.contains(&want), "{args:?}: {err}");
        for (copy, name) in [
            (m, "stories260K.bin"),
            (z, "tok512.bin"),
            (f, "stories260K-f32.gguf"),
        ] {
            assert!(
                std::fs::read(copy).unwrap() == std::fs::read(d.model(name)).unwrap(),
                "{args:?} changed {name}"
            );
        }
        assert_eq!(listing(&tmp.path("")), before, "{args:?}");
    }
}

/// A quantize that fails leaves no file, not even its temporary one, and
/// an OUT that was there as it was: refused up front (rows of 172 values
/// are no whole Q8_0 blocks; once an empty OUT and "size overflows the
/// address space"), or cut off while writing (a file size limit, with
/// SIGXFSZ ignored so that the write fails instead of killing).
#[test]
fn a_failing_quantize_leaves_no_file() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("fail");
    let out = tmp.path("o.gguf");
    let (m, z) = (d.model("stories260K.bin"), d.model("tok512.bin"));
    let q8 = ["quantize", s(&m), s(&out), "--type", "q8_0", "-z", s(&z)];
    let limited = |args: &[&str]| {
        std::process::Command::new("sh")
            .args(["-c", "trap '' XFSZ; ulimit -f 100; exec \"$@\"", "sh"])
            .arg(env!("CARGO_BIN_EXE_barellama"))
            .args(args)
            .output()
            .unwrap()
    };
    let v2 = ["quantize", s(&m), s(&out), "--type", "v2:4"];
    for existing in [None, Some(b"an older file".as_slice())] {
        if let Some(bytes) = existing {
            std::fs::write(&out, bytes).unwrap();
        }
        let (_, err) = fails(&q8, b"", 3);
        assert!(
            err.contains(
                "tensor 'blk.0.ffn_down.weight' has rows of 172 values, \
                 not a multiple of Q8_0's block of 32"
            ),
            "{err}"
        );
        let o = limited(&v2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.ends_with("barellama: cannot write output file (file too large, errno 27)\n"),
            "{err}"
        );
        assert_eq!(std::fs::read(&out).ok().as_deref(), existing);
        let left = if existing.is_some() {
            &["o.gguf"][..]
        } else {
            &[]
        };
        assert_eq!(listing(&tmp.path("")), left);
    }
}

/// A quantize that succeeds leaves OUT and nothing else, whether OUT was
/// there before or not.
#[test]
fn a_successful_quantize_leaves_only_out() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("only-out");
    let out = tmp.path("q80.bin");
    let m = d.model("stories260K.bin");
    let want = read(&d.0, "models/stories260K-q80.bin");
    for _ in 0..2 {
        ok(&["quantize", s(&m), s(&out), "--type", "v2:4"], b"");
        assert!(std::fs::read(&out).unwrap() == want);
        assert_eq!(listing(&tmp.path("")), ["q80.bin"]);
    }
}
