//! Every command on real models: outputs against the references, bad
//! files and command lines, limits, bytes that are not UTF-8.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use barellama_tests::{diff, read, read_ids, Golden, TempDir};

use super::{barellama, fails, ok, s, stdout, Data};

/// The error line of `args`, which must exit with `code`.
fn error<A: AsRef<OsStr> + std::fmt::Debug>(args: &[A], code: i32) -> String {
    fails(args, b"", code).1
}

#[test]
fn greedy_run_prints_llama2c_text() {
    let Some(d) = Data::new() else { return };
    let (out, err) = ok(
        &d.run(&["-i", "Once upon a time", "-t", "0", "-n", "150"]),
        b"",
    );
    assert!(err.starts_with("achieved tok/s: "));

    // The same ids decoded with llama2.c's rules, by the library.
    let ids = read_ids(&d.0, "golden/stories260K.once.tokens.txt");
    let tok = read(&d.0, "models/tok512.bin");
    let plan = barellama_core::arena::TokenizerPlan::new(
        512,
        barellama_core::tokenizer::Family::SentencePiece,
        1,
    )
    .unwrap();
    let mut arena = barellama_tests::AlignedBuf::new(plan.bytes());
    let t = barellama_core::Tokenizer::from_llama2c(&tok, 512, plan.carve(arena.get()).unwrap())
        .unwrap();
    let mut want = barellama_core::TextSink::plain(String::new());
    for w in ids[..151].windows(2) {
        want.echo(t.decode(w[0], w[1]));
    }
    want.finish().unwrap();
    assert_eq!(out, want.into_inner() + "\n");
}

/// `logits` on `model` with the ids of `golden` into `out`.
fn logits(d: &Data, model: &str, ids: &[u32], tmp: &TempDir, extra: &[&str]) -> Vec<u8> {
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    let (list, out) = (tmp.path("ids.txt"), tmp.path("out.bin"));
    std::fs::write(&list, ids.join(" ")).unwrap();
    let m = d.model(model);
    let args = ["logits", "-m", s(&m), "--tokens", s(&list), "-o", s(&out)];
    ok(&[&args[..], extra].concat(), b"");
    std::fs::read(&out).unwrap()
}

#[test]
fn logits_command_matches_the_golden() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("logits");
    let g = Golden::read(&d.0, "golden/stories260K.sun.l2c.bin");
    let ours = Golden::parse(&logits(&d, "stories260K.bin", &g.tokens, &tmp, &[]));
    assert_eq!(ours.tokens, g.tokens);
    assert_eq!(ours.vocab, 512);
    let (max, _) = diff(&ours.logits, &g.logits);
    assert!(max <= 2e-3, "max |Δlogit| {max}");
}

#[test]
fn logits_are_bitwise_identical_for_any_thread_count() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("threads");
    let g = Golden::read(&d.0, "golden/synsmall.once.l2c.bin");
    let outputs: Vec<Vec<u8>> = ["1", "2", "3", "4"]
        .iter()
        .map(|t| logits(&d, "synsmall.bin", &g.tokens, &tmp, &["--threads", t]))
        .collect();
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "logits differ across --threads"
    );
    let m = d.model("synsmall.bin");
    error(&["logits", "-m", s(&m), "--threads", "0"], 2);
}

/// `logits -o` naming its model or its token list, or a link to either,
/// is refused and leaves both as they were; to `/dev/null`, which cannot
/// be replaced, it writes in place.
#[test]
fn logits_never_writes_over_its_inputs() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("logits-same");
    let (m, ids, link) = (tmp.path("m.bin"), tmp.path("ids.txt"), tmp.path("link"));
    std::fs::copy(d.model("stories260K.bin"), &m).unwrap();
    std::fs::write(&ids, "1 403 407").unwrap();
    std::os::unix::fs::symlink(&ids, &link).unwrap();
    let model = std::fs::read(&m).unwrap();
    let base = ["logits", "-m", s(&m), "--tokens", s(&ids), "-o"];
    for out in [&m, &ids, &link] {
        let e = error(&[&base[..], &[s(out)]].concat(), 2);
        assert!(e.contains("the output is the same file as an input"), "{e}");
        assert!(std::fs::read(&m).unwrap() == model);
        assert_eq!(std::fs::read(&ids).unwrap(), b"1 403 407");
    }
    ok(&[&base[..], &["/dev/null"]].concat(), b"");
}

#[test]
fn tokenize_prints_ids() {
    let Some(d) = Data::new() else { return };
    let z = d.model("tokenizer.bin");
    let tokenize = ["tokenize", "-z", s(&z), "-i", "Hello, world!"];
    let (ids, _) = ok(&[&tokenize[..], &["--bos"]].concat(), b"");
    assert_eq!(ids, "1 15043 29892 3186 29991\n");
    assert_eq!(ok(&tokenize, b"").0, "15043 29892 3186 29991\n");
}

#[test]
fn inspect_and_bench_run_on_a_real_model() {
    let Some(d) = Data::new() else { return };
    let (m, z) = (d.model("stories260K.bin"), d.model("tok512.bin"));
    let (text, _) = ok(&["inspect", "-m", s(&m)], b"");
    assert!(
        text.contains("llama2.c v0") && text.contains("layers.4.w3"),
        "{text}"
    );

    let bench = ["bench", "-m", s(&m), "-n"];
    let (json, _) = ok(&[&bench[..], &["32", "-z", s(&z), "--json"]].concat(), b"");
    for key in [
        "\"tok_per_s\":",
        "\"ms_p50\":",
        "\"ms_p99\":",
        "\"ttft_ms\":",
        "\"rss_mb\":",
    ] {
        assert!(json.contains(key), "{json}");
    }
    assert!(
        json.contains("\"tokens\":32") && json.contains("\"allocs_per_token\":0,"),
        "{json}"
    );
    assert!(!json.contains("prefill"), "{json}");
    let (json, _) = ok(
        &[&bench[..], &["8", "--prompt-tokens", "100", "--json"]].concat(),
        b"",
    );
    assert!(
        json.contains("\"prompt_tokens\":100,\"prefill_tok_per_s\":"),
        "{json}"
    );
    let e = error(&[&bench[..], &["8", "--prompt-tokens", "510"]].concat(), 2);
    assert!(e.contains("--prompt-tokens exceeds"), "{e}");
}

#[test]
fn bad_files_exit_3() {
    let Some(d) = Data::new() else { return };
    let (m, z) = (d.model("stories260K.bin"), d.model("tok512.bin"));
    let image = read(&d.0, "models/stories260K.bin");
    let tmp = TempDir::new("bad");
    let mut zero_dim = image.clone();
    zero_dim[4..8].copy_from_slice(&0i32.to_le_bytes());
    let mut odd = image.clone();
    odd[0..4].copy_from_slice(&63i32.to_le_bytes());
    let cases: [(&str, &[u8]); 5] = [
        ("empty.bin", b""),
        ("header.bin", &image[..10]),
        ("weights.bin", &image[..image.len() / 2]),
        ("zero.bin", &zero_dim),
        ("odd.bin", &odd),
    ];
    for (name, bytes) in cases {
        std::fs::write(tmp.path(name), bytes).unwrap();
        let e = error(&["run", "-m", s(&tmp.path(name)), "-z", s(&z)], 3);
        println!("{name}: {e}");
    }
    error(&["run", "-m", s(&tmp.path("missing.bin")), "-z", s(&z)], 3);
    error(&["inspect", "-m", s(&d.0)], 3);
    for tokenizer in [tmp.path("empty.bin"), d.model("tokenizer.bin")] {
        error(&["run", "-m", s(&m), "-z", s(&tokenizer)], 3);
    }
}

#[test]
fn bad_command_lines_exit_2() {
    let Some(d) = Data::new() else { return };
    let (m, z) = (d.model("stories260K.bin"), d.model("tok512.bin"));
    let run = |extra: &[&str]| error(&d.run(extra), 2);
    assert!(run(&["--frobnicate"]).contains("unknown option: '--frobnicate'"));
    assert!(run(&["-n"]).contains("missing value after: '-n'"));
    // Each range error names its option and range.
    for (args, says) in [
        (
            &["-n", "ten"][..],
            "-n takes a whole number of positions: 'ten'",
        ),
        (
            &["-t", "-1"],
            "-t (--temp) takes a temperature of 0 or more: '-1'",
        ),
        (
            &["-t", "nan"],
            "-t (--temp) takes a temperature of 0 or more: 'nan'",
        ),
        (
            &["-p", "1.5"],
            "-p (--top-p) takes a number in [0, 1]: '1.5'",
        ),
        (
            &["-k", "-1"],
            "-k (--top-k) takes a whole number (0: off): '-1'",
        ),
        (&["--threads", "0"], "--threads takes 1 to 1024: '0'"),
        (&["--threads", "-2"], "--threads takes 1 to 1024: '-2'"),
        (
            &["--ctx", "-1"],
            "--ctx (-c, --ctx-size) takes a whole number of positions",
        ),
        (
            &["-s", "1e3"],
            "-s (--seed) takes a whole number of 0 or more: '1e3'",
        ),
        (
            &["--n-predict", "x"],
            "--n-predict takes a whole number of tokens: 'x'",
        ),
    ] {
        let e = run(args);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    assert!(run(&["-i", "a", "-f", s(&z)]).contains("-i or -f"));
    assert!(run(&["--isa", "mmx"]).contains("--isa takes"));
    assert!(error(&["run", "-m", s(&m)], 2).contains("needs a tokenizer"));
    error(&["run", "-z", s(&z)], 2);
    error(&["bench", "--format", "q5_1"], 2);
    error(&["bench", "-n", "0"], 2);
    error(&["logits", "-m", s(&m)], 2);
    error(&["tokenize", "-i", "x"], 2);
    error(&["quantize", s(&m), "out.gguf"], 2);
    error(&["quantize", s(&m), "out.gguf", "--type", "q9"], 2);
    error(&["inspect", "-m"], 2);
    error(&["walk"], 2);
    for cmd in [
        "run", "bench", "logits", "tokenize", "inspect", "quantize", "convert",
    ] {
        assert!(ok(&[cmd, "--help"], b"").0.starts_with("usage: barellama"));
    }
}

#[test]
fn no_arguments_prints_usage_and_exits_2() {
    let o = barellama::<&str>(&[], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("usage: barellama"));
}

/// Files that are not models: a directory, a FIFO (no writer: opening must
/// not block), a file this process may not read, a dangling symlink.
#[test]
fn special_files_exit_3() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("special");
    let (m, z) = (d.model("stories260K.bin"), d.model("tok512.bin"));
    let fifo = tmp.path("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let locked = tmp.path("locked.bin");
    std::fs::write(&locked, b"x").unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // Root reads any file; then a path through a regular file stands in.
    let unreadable = match std::fs::File::open(&locked) {
        Ok(_) => locked.join("model.bin"),
        Err(_) => locked,
    };
    let dangling = tmp.path("dangling");
    std::os::unix::fs::symlink(tmp.path("nowhere"), &dangling).unwrap();
    for model in [d.0.clone(), fifo.clone(), unreadable, dangling] {
        let e = error(&["run", "-m", s(&model), "-z", s(&z)], 3);
        println!("{e}");
        error(&["inspect", "-m", s(&model)], 3);
    }
    error(&["run", "-m", s(&m), "-z", s(&fifo)], 3);
    error(&["run", "-m", s(&m), "-z", s(&z), "-f", s(&d.0)], 3);
}

/// Limits are errors with exit code 4: a prompt with more tokens than the
/// positions asked for, a context longer than the model's through the
/// library (the CLI's `--ctx` may exceed it on purpose, as llama.cpp's -c).
#[test]
fn a_prompt_longer_than_the_context_exits_4() {
    let Some(d) = Data::new() else { return };
    let long = "Once upon a time there was a little girl named Lily.";
    let e = error(&d.run(&["--ctx", "8", "-i", long]), 4);
    assert!(e.contains("context full"), "{e}");
    let e = error(&d.run(&["--ctx", "4", "-n", "0", "-i", long]), 4);
    assert!(e.contains("context full"), "{e}");
}

/// Prompts are bytes: invalid UTF-8 from the arguments or from a file
/// reaches the tokenizer through byte tokens (`<0xNN>` is id NN + 3), and
/// whatever the model emits, stdout is valid UTF-8.
#[test]
fn invalid_utf8_prompts_use_byte_tokens_and_output_stays_utf8() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("utf8");
    let (m, z) = (d.model("stories260K.bin"), d.model("tok512.bin"));
    let prompt: &[u8] = b"Lily \xff\xfe\xe2\x82 saw";
    let file = tmp.path("prompt.txt");
    std::fs::write(&file, prompt).unwrap();
    let arg = OsStr::from_bytes(prompt);
    let z_arg = z.as_os_str();
    let from_arg = barellama(
        &[
            OsStr::new("tokenize"),
            OsStr::new("-z"),
            z_arg,
            OsStr::new("-i"),
            arg,
        ],
        b"",
    );
    let (from_file, _) = ok(&["tokenize", "-z", s(&z), "-f", s(&file)], b"");
    assert!(from_arg.status.success());
    let ids = stdout(&from_arg);
    assert_eq!(ids, from_file);
    let ids: Vec<u32> = ids.split_whitespace().map(|t| t.parse().unwrap()).collect();
    for byte in [0xffu32, 0xfe, 0xe2, 0x82] {
        assert!(ids.contains(&(byte + 3)), "{ids:?}");
    }
    let run = barellama(
        &[
            OsStr::new("run"),
            OsStr::new("-m"),
            m.as_os_str(),
            OsStr::new("-z"),
            z_arg,
            OsStr::new("-t"),
            OsStr::new("0"),
            OsStr::new("-n"),
            OsStr::new("40"),
            OsStr::new("-i"),
            arg,
        ],
        b"",
    );
    assert!(run.status.success());
    assert!(std::str::from_utf8(&run.stdout).is_ok());
    // Hot sampling emits byte tokens in any order; the text stays UTF-8;
    // `ok` checks that stdout is.
    for seed in ["1", "2", "3"] {
        ok(
            &d.run(&["-t", "2.0", "-p", "1", "-n", "0", "-s", seed]),
            b"",
        );
    }
}

/// `--beams 1` prints greedy decoding's text; wider beams print text too,
/// with the score on stderr; `--beams` takes 1 to 8.
#[test]
fn beam_search_from_the_command_line() {
    let Some(d) = Data::new() else { return };
    let run = |extra: &[&str]| {
        ok(
            &d.run(&[&["-n", "80", "-i", "Once upon a time"], extra].concat()),
            b"",
        )
    };
    let (greedy, _) = run(&["-t", "0"]);
    let (one, _) = run(&["--beams", "1"]);
    assert_eq!(one, greedy);
    let (four, err) = run(&["--beams", "4"]);
    assert!(four.starts_with("Once upon a time"));
    assert!(err.contains("beam search: 4 beams"), "{err}");
    for bad in ["0", "9"] {
        error(&d.run(&["--beams", bad]), 2);
    }
    error(&d.run(&["--beams", "2", "--stop", "x"]), 2);
}
