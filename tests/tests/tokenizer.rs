//! llama.cpp's 46 tokenizer cases through llama2.c-format vocabularies,
//! against llama2.c's own `encode()`, and decode(encode(x)) == x.

use barellama_core::arena::TokenizerPlan;
use barellama_core::image::gguf::{Gguf, ValueType};
use barellama_core::image::vocab::llama2c_vocab_size;
use barellama_core::tokenizer::Family;
use barellama_core::tokenizer::Tokenizer;
use barellama_core::Vocab;
use barellama_tests::{data_dir, read, AlignedBuf};

/// The cases: texts separated by `\n__ggml_vocab_test__\n`, the last empty
/// piece after the final separator is not a case.
fn cases(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let raw = read(dir, "golden/tokenizer-cases.inp");
    let sep = b"\n__ggml_vocab_test__\n";
    let mut out = Vec::new();
    let mut rest = &raw[..];
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        out.push(rest[..i].to_vec());
        rest = &rest[i + sep.len()..];
    }
    assert!(rest.is_empty(), "trailing bytes after the last separator");
    out
}

fn expected(dir: &std::path::Path, name: &str) -> Vec<Vec<u32>> {
    String::from_utf8(read(dir, name))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|w| w.parse().unwrap()).collect())
        .collect()
}

fn check(tokenizer: &str, golden: &str) {
    let Some(dir) = data_dir() else { return };
    let bytes = read(&dir, &format!("models/{tokenizer}"));
    let vocab = llama2c_vocab_size(&bytes).unwrap();
    let cases = cases(&dir);
    let mut want = expected(&dir, golden);
    assert_eq!(cases.len(), 46);
    // llama2.c was also run on the empty piece after the last separator.
    assert_eq!(want.pop(), Some(vec![1]));
    assert_eq!(want.len(), cases.len());
    let longest = cases.iter().map(Vec::len).max().unwrap();
    let plan = TokenizerPlan::new(vocab, Family::SentencePiece, longest).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut tok = Tokenizer::from_llama2c(&bytes, vocab, plan.carve(arena.get()).unwrap()).unwrap();
    for (i, (text, want)) in cases.iter().zip(&want).enumerate() {
        let ids = tok.encode(text, true, false).unwrap().to_vec();
        assert_eq!(&ids, want, "case {i}: {:?}", String::from_utf8_lossy(text));
        let mut decoded = Vec::new();
        for w in ids.windows(2) {
            tok.decode(w[0], w[1])
                .bytes(|b| decoded.extend_from_slice(b));
        }
        assert_eq!(decoded, *text, "case {i} does not round-trip");
    }
}

/// llama.cpp's ids for the cases with the byte-level BPE vocabulary of a
/// GGUF file, no BOS; and decode(encode(x)) == x.
fn check_bpe(model: &str, golden: &str) {
    let Some(dir) = data_dir() else { return };
    let bytes = read(&dir, &format!("models/{model}"));
    let g = Gguf::parse(&bytes).unwrap();
    let vocab = Vocab::Gguf(g);
    let (n, _) = g
        .array("tokenizer.ggml.tokens", ValueType::String)
        .unwrap()
        .unwrap();
    let cases = cases(&dir);
    let want = expected(&dir, golden);
    assert_eq!(want.len(), cases.len());
    let longest = cases.iter().map(Vec::len).max().unwrap();
    let family = Family::of(&vocab).unwrap();
    assert!(matches!(family, Family::BytePairs { .. }));
    let plan = TokenizerPlan::new(n as usize, family, longest).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut tok = Tokenizer::new(vocab, n as usize, plan.carve(arena.get()).unwrap()).unwrap();
    for (i, (text, want)) in cases.iter().zip(&want).enumerate() {
        let ids = tok.encode(text, false, false).unwrap().to_vec();
        assert_eq!(&ids, want, "case {i}: {:?}", String::from_utf8_lossy(text));
        let mut decoded = Vec::new();
        for &id in &ids {
            tok.decode(tok.bos(), id)
                .bytes(|b| decoded.extend_from_slice(b));
        }
        assert_eq!(decoded, *text, "case {i} does not round-trip");
    }
}

#[test]
fn llama3_vocab_matches_llama_cpp() {
    check_bpe(
        "synl3-Q8_0.gguf",
        "golden/tokenizer-cases.llama-bpe.llamacpp.out",
    );
}

#[test]
fn smollm2_vocab_matches_llama_cpp() {
    check_bpe(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "golden/tokenizer-cases.smollm2.llamacpp.out",
    );
}

#[test]
fn llama_vocab_matches_llama2c() {
    check(
        "tokenizer.bin",
        "golden/tokenizer-cases.tokenizer-bin.l2c.out",
    );
}

#[test]
fn tok512_matches_llama2c() {
    check("tok512.bin", "golden/tokenizer-cases.tok512.l2c.out");
}

#[test]
fn eos_is_appended_ids_past_the_vocab_decode_to_nothing_and_vocab_mismatch_is_refused() {
    let Some(dir) = data_dir() else { return };
    let bytes = read(&dir, "models/tok512.bin");
    let plan = TokenizerPlan::new(512, Family::SentencePiece, 16).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let mut tok = Tokenizer::from_llama2c(&bytes, 512, plan.carve(arena.get()).unwrap()).unwrap();
    assert_eq!(tok.encode(b"", true, true).unwrap(), [1, 2]);
    // Ids from outside (a caller's, a file's) past the vocabulary print
    // nothing rather than panic.
    for id in [512, u32::MAX] {
        assert!(tok.piece(id).is_empty());
        tok.decode(1, id)
            .bytes(|b| assert!(b.is_empty(), "{id}: {b:?}"));
    }
    assert!(
        tok.encode(&[b'a'; 17], false, false).is_err(),
        "longer than planned"
    );

    let plan = TokenizerPlan::new(511, Family::SentencePiece, 16).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let err = Tokenizer::from_llama2c(&bytes, 511, plan.carve(arena.get()).unwrap()).err();
    assert!(err.unwrap().to_string().contains("vocab_size = 511"));
}
