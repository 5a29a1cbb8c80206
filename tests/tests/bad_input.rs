//! Hostile model and tokenizer bytes become typed errors that name the
//! field, never a panic or an out-of-bounds read.

use barellama_core::arena::TokenizerPlan;
use barellama_core::error::Error;
use barellama_core::image::vocab::llama2c_vocab_size;
use barellama_core::tokenizer::Family;
use barellama_core::tokenizer::Tokenizer;
use barellama_core::Model;
use barellama_tests::{data_dir, read, AlignedBuf, LLAMA2C_HEADER};

#[test]
fn every_truncation_of_a_model_is_an_error() {
    let Some(dir) = data_dir() else { return };
    for name in ["stories260K.bin", "synsmall-v1.bin"] {
        let image = read(&dir, &format!("models/{name}"));
        assert!(Model::load(&image).is_ok());
        // Every offset of the small model; for the larger one, a spread.
        let step = if image.len() <= 2 << 20 { 1 } else { 97 };
        for len in (0..image.len()).step_by(step) {
            match Model::load(&image[..len]) {
                Err(e) => assert_eq!(e.exit_code(), 3, "{name} cut at {len}: {e}"),
                Ok(_) => panic!("{name} cut at {len} bytes loaded"),
            }
        }
    }
}

/// `stories260K.bin` with header word `i` set to `value`.
fn patched(image: &[u8], i: usize, value: i32) -> Vec<u8> {
    let mut v = image.to_vec();
    v[4 * i..4 * i + 4].copy_from_slice(&value.to_le_bytes());
    v
}

#[test]
fn bad_dimensions_name_the_field() {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, "models/stories260K.bin");
    for (i, field) in LLAMA2C_HEADER.iter().enumerate().skip(1) {
        for value in [0, -1, i32::MIN] {
            // A negative vocab_size is v0's separate-classifier flag.
            if *field == "vocab_size" && value != 0 {
                continue;
            }
            let err = Model::load(&patched(&image, i, value)).unwrap_err();
            assert_eq!(
                err,
                Error::Invalid {
                    field,
                    value: value.into()
                },
                "{field} = {value}"
            );
        }
    }
    // dim 0 or absurd is not a llama2.c header at all.
    assert!(matches!(
        Model::load(&patched(&image, 0, 0)),
        Err(Error::Magic { .. })
    ));
    assert!(matches!(
        Model::load(&patched(&image, 0, -5)),
        Err(Error::Magic { .. })
    ));

    let msg = |i, v| Model::load(&patched(&image, i, v)).unwrap_err().to_string();
    assert_eq!(msg(0, 63), "dim = 63 is not a multiple of n_heads = 8");
    assert_eq!(msg(4, 3), "n_heads = 8 is not a multiple of n_kv_heads = 3");
    assert_eq!(msg(3, 64), "head_size (RoPE rotates pairs) = 1 is invalid");
    assert!(
        msg(3, 16).starts_with("file size = 1056540 bytes differs"),
        "{}",
        msg(3, 16)
    );
    assert!(msg(2, 1000).contains("n_layers = 1000 is not supported"));
    // Huge sizes overflow or run past the end: still just an error.
    assert_eq!(
        Model::load(&patched(&image, 6, i32::MAX))
            .unwrap_err()
            .exit_code(),
        3
    );
    assert_eq!(
        Model::load(&patched(&image, 1, i32::MAX))
            .unwrap_err()
            .exit_code(),
        3
    );
}

#[test]
fn versioned_headers_are_checked() {
    let Some(dir) = data_dir() else { return };
    let image = read(&dir, "models/synsmall-v1.bin");
    let mut v = image.clone();
    v[4] = 7;
    assert_eq!(
        Model::load(&v).unwrap_err().to_string(),
        "llama2.c version = 7 is not supported"
    );
    let mut v = image.clone();
    v[36] = 2;
    assert_eq!(
        Model::load(&v).unwrap_err().to_string(),
        "shared_classifier = 2 is invalid"
    );
    assert!(matches!(
        Model::load(b"GGML\0\0\0\0"),
        Err(Error::Magic { .. })
    ));
    let mut longer = image.clone();
    longer.push(0);
    assert!(Model::load(&longer)
        .unwrap_err()
        .to_string()
        .starts_with("file size"));
}

#[test]
fn every_truncation_of_a_tokenizer_is_an_error() {
    let Some(dir) = data_dir() else { return };
    let bytes = read(&dir, "models/tok512.bin");
    assert_eq!(llama2c_vocab_size(&bytes).unwrap(), 512);
    let plan = TokenizerPlan::new(512, Family::SentencePiece, 64).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    for len in 0..bytes.len() {
        let err =
            Tokenizer::from_llama2c(&bytes[..len], 512, plan.carve(arena.get()).unwrap()).err();
        assert_eq!(
            err.map(|e| e.exit_code()),
            Some(3),
            "tokenizer cut at {len}"
        );
    }
    // A piece longer than max_token_length, and a negative length.
    for bad_len in [1000i32, -1] {
        let mut v = bytes.clone();
        v[8..12].copy_from_slice(&bad_len.to_le_bytes());
        let err = Tokenizer::from_llama2c(&v, 512, plan.carve(arena.get()).unwrap()).err();
        assert!(err
            .unwrap()
            .to_string()
            .starts_with("tokenizer piece length"));
    }
}

/// A llama2.c vocabulary of fewer than three pieces has no <unk>, BOS or
/// EOS: encoding would hand out ids past its table.
#[test]
fn a_tokenizer_needs_room_for_unk_bos_and_eos() {
    // max_token_length, then (score, length, piece) records.
    let mut bytes = 8i32.to_le_bytes().to_vec();
    for piece in [&b"<unk>"[..], b"<s>", b"</s>"] {
        bytes.extend(0f32.to_le_bytes());
        bytes.extend((piece.len() as i32).to_le_bytes());
        bytes.extend(piece);
    }
    let mut end = 4;
    for n in 0..=3usize {
        let plan = TokenizerPlan::new(n, Family::SentencePiece, 64).unwrap();
        let mut arena = AlignedBuf::new(plan.bytes());
        let got = Tokenizer::from_llama2c(&bytes[..end], n, plan.carve(arena.get()).unwrap());
        match got {
            Ok(mut t) => {
                assert_eq!(n, 3);
                assert_eq!(t.encode(b"x", true, true).unwrap(), [1, 0, 0, 2]);
            }
            Err(e) => assert_eq!(
                e.to_string(),
                format!("tokenizer vocab_size = {n} has no room for llama2.c's EOS id = 2")
            ),
        }
        if n < 3 {
            end += 8 + bytes[end + 4] as usize;
        }
    }
}
