//! The `barellama` binary end to end: outputs against the references, exit
//! codes of DESIGN.md, and one-line errors without backtraces.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};

use barellama_tests::{data_dir, diff, read, read_ids, Golden, TempDir};

fn barellama<A: AsRef<OsStr>>(args: &[A]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_barellama"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("barellama runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

/// Fails unless `args` exits with `code` and prints exactly one line to stderr.
fn fails<A: AsRef<OsStr> + std::fmt::Debug>(args: &[A], code: i32) -> String {
    let o = barellama(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?}: stderr is not one line:\n{err}"
    );
    assert!(
        err.starts_with("barellama: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn greedy_run_prints_llama2c_text() {
    let Some(dir) = data_dir() else { return };
    let (m, z) = (
        dir.join("models/stories260K.bin"),
        dir.join("models/tok512.bin"),
    );
    let o = barellama(&[
        "run",
        "-m",
        s(&m),
        "-z",
        s(&z),
        "-i",
        "Once upon a time",
        "-t",
        "0",
        "-n",
        "150",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("achieved tok/s: "));

    // The same ids decoded with llama2.c's rules, by the library.
    let ids = read_ids(&dir, "golden/stories260K.once.tokens.txt");
    let tok = read(&dir, "models/tok512.bin");
    let plan = barellama_core::arena::TokenizerPlan::new(512, 1).unwrap();
    let mut arena = barellama_tests::AlignedBuf::new(plan.bytes());
    let t = barellama_core::Tokenizer::from_llama2c(&tok, 512, plan.carve(arena.get()).unwrap())
        .unwrap();
    let mut want = barellama_core::TextSink::plain(String::new());
    for w in ids[..151].windows(2) {
        want.echo(t.decode(w[0], w[1]));
    }
    want.finish().unwrap();
    assert_eq!(stdout(&o), want.into_inner() + "\n");
}

#[test]
fn logits_command_matches_the_golden() {
    let Some(dir) = data_dir() else { return };
    let tmp = TempDir::new("logits");
    let g = Golden::read(&dir, "golden/stories260K.sun.l2c.bin");
    let ids: Vec<String> = g.tokens.iter().map(u32::to_string).collect();
    std::fs::write(tmp.path("ids.txt"), ids.join(" ")).unwrap();
    let out = tmp.path("out.bin");
    let m = dir.join("models/stories260K.bin");
    let o = barellama(&[
        "logits",
        "-m",
        s(&m),
        "--tokens",
        s(&tmp.path("ids.txt")),
        "-o",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = Golden::parse(&std::fs::read(&out).unwrap());
    assert_eq!(ours.tokens, g.tokens);
    assert_eq!(ours.vocab, 512);
    let (max, _) = diff(&ours.logits, &g.logits);
    assert!(max <= 2e-3, "max |Δlogit| {max}");
}

#[test]
fn logits_are_bitwise_identical_for_any_thread_count() {
    let Some(dir) = data_dir() else { return };
    let tmp = TempDir::new("threads");
    let g = Golden::read(&dir, "golden/synsmall.once.l2c.bin");
    let ids: Vec<String> = g.tokens.iter().map(u32::to_string).collect();
    std::fs::write(tmp.path("ids.txt"), ids.join(" ")).unwrap();
    let (m, ids) = (dir.join("models/synsmall.bin"), tmp.path("ids.txt"));
    let outputs: Vec<Vec<u8>> = ["1", "2", "3", "4"]
        .iter()
        .map(|t| {
            let out = tmp.path(&format!("out{t}.bin"));
            let args = [
                "logits",
                "-m",
                s(&m),
                "--tokens",
                s(&ids),
                "-o",
                s(&out),
                "--threads",
                t,
            ];
            assert!(barellama(&args).status.success());
            std::fs::read(&out).unwrap()
        })
        .collect();
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "logits differ across --threads"
    );
    fails(&["logits", "-m", s(&m), "--threads", "0"], 2);
}

#[test]
fn tokenize_prints_ids() {
    let Some(dir) = data_dir() else { return };
    let z = dir.join("models/tokenizer.bin");
    let o = barellama(&["tokenize", "-z", s(&z), "-i", "Hello, world!", "--bos"]);
    assert_eq!(stdout(&o), "1 15043 29892 3186 29991\n");
    let o = barellama(&["tokenize", "-z", s(&z), "-i", "Hello, world!"]);
    assert_eq!(stdout(&o), "15043 29892 3186 29991\n");
}

#[test]
fn inspect_and_bench_run_on_a_real_model() {
    let Some(dir) = data_dir() else { return };
    let m = dir.join("models/stories260K.bin");
    let o = barellama(&["inspect", "-m", s(&m)]);
    let text = stdout(&o);
    assert!(
        text.contains("llama2.c v0") && text.contains("layers.4.w3"),
        "{text}"
    );

    let z = dir.join("models/tok512.bin");
    let o = barellama(&["bench", "-m", s(&m), "-z", s(&z), "-n", "32", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json = stdout(&o);
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
    let args = [
        "bench",
        "-m",
        s(&m),
        "-n",
        "8",
        "--prompt-tokens",
        "100",
        "--json",
    ];
    let json = stdout(&barellama(&args));
    assert!(
        json.contains("\"prompt_tokens\":100,\"prefill_tok_per_s\":"),
        "{json}"
    );
    let e = fails(
        &["bench", "-m", s(&m), "-n", "8", "--prompt-tokens", "510"],
        2,
    );
    assert!(e.contains("--prompt-tokens exceeds"), "{e}");
}

#[test]
fn bad_files_exit_3() {
    let Some(dir) = data_dir() else { return };
    let tmp = TempDir::new("bad");
    let z = dir.join("models/tok512.bin");
    let image = read(&dir, "models/stories260K.bin");
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
        let e = fails(&["run", "-m", s(&tmp.path(name)), "-z", s(&z)], 3);
        println!("{name}: {e}");
    }
    fails(&["run", "-m", s(&tmp.path("missing.bin")), "-z", s(&z)], 3);
    fails(&["inspect", "-m", s(&dir)], 3);
    let m = dir.join("models/stories260K.bin");
    fails(&["run", "-m", s(&m), "-z", s(&tmp.path("empty.bin"))], 3);
    fails(
        &[
            "run",
            "-m",
            s(&m),
            "-z",
            s(&dir.join("models/tokenizer.bin")),
        ],
        3,
    );
}

#[test]
fn bad_command_lines_exit_2() {
    let Some(dir) = data_dir() else { return };
    let (m, z) = (
        dir.join("models/stories260K.bin"),
        dir.join("models/tok512.bin"),
    );
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "-m", s(&m), "-z", s(&z)];
        a.extend_from_slice(extra);
        fails(&a, 2)
    };
    assert!(run(&["--frobnicate"]).contains("unknown option: '--frobnicate'"));
    assert!(run(&["-n"]).contains("missing value after: '-n'"));
    assert!(run(&["-n", "ten"]).contains("not a valid number: 'ten'"));
    assert!(run(&["-t", "-1"]).contains("out of range: '-1'"));
    assert!(run(&["-p", "1.5"]).contains("out of range: '1.5'"));
    assert!(run(&["-k", "0"]).contains("out of range: '0'"));
    assert!(run(&["-n", "513"]).contains("-n exceeds"));
    assert!(run(&["--threads", "0"]).contains("out of range: '0'"));
    assert!(run(&["--threads", "-2"]).contains("not a valid number: '-2'"));
    assert!(run(&["--ctx", "0"]).contains("out of range: '0'"));
    assert!(run(&["-s", "1e3"]).contains("not a valid number"));
    assert!(run(&["-t", "nan"]).contains("out of range: 'nan'"));
    assert!(run(&["-i", "a", "-f", s(&z)]).contains("-i or -f"));
    assert!(fails(&["run", "-m", s(&m)], 2).contains("needs a tokenizer"));
    fails(&["run", "-z", s(&z)], 2);
    fails(&["bench", "--format", "q5_1"], 2);
    fails(&["bench", "-n", "0"], 2);
    fails(&["logits", "-m", s(&m)], 2);
    fails(&["tokenize", "-i", "x"], 2);
    fails(&["quantize", s(&m), "out.gguf"], 2);
    fails(&["quantize", s(&m), "out.gguf", "--type", "q9"], 2);
    fails(&["inspect", "-m"], 2);
    fails(&["walk"], 2);
    for cmd in [
        "run", "bench", "logits", "tokenize", "inspect", "quantize", "convert",
    ] {
        let o = barellama(&[cmd, "--help"]);
        assert!(o.status.success() && stdout(&o).starts_with("usage: barellama"));
    }
}

#[test]
fn no_arguments_prints_usage_and_exits_2() {
    let o = barellama::<&str>(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("usage: barellama"));
}

/// Files that are not models: a directory, a FIFO (no writer: opening must
/// not block), a file this process may not read, a dangling symlink.
#[test]
fn special_files_exit_3() {
    let Some(dir) = data_dir() else { return };
    let tmp = TempDir::new("special");
    let z = dir.join("models/tok512.bin");
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
    for model in [dir.clone(), fifo, unreadable, dangling] {
        let e = fails(&["run", "-m", s(&model), "-z", s(&z)], 3);
        println!("{e}");
        fails(&["inspect", "-m", s(&model)], 3);
    }
    let m = dir.join("models/stories260K.bin");
    fails(&["run", "-m", s(&m), "-z", s(&tmp.path("fifo"))], 3);
    fails(&["run", "-m", s(&m), "-z", s(&z), "-f", s(&dir)], 3);
}

/// Limits are errors with exit code 4: a prompt with more tokens than the
/// positions asked for, a context longer than the model's through the
/// library (the CLI's `--ctx` may exceed it on purpose, as llama.cpp's -c).
#[test]
fn a_prompt_longer_than_the_context_exits_4() {
    let Some(dir) = data_dir() else { return };
    let m = dir.join("models/stories260K.bin");
    let z = dir.join("models/tok512.bin");
    let long = "Once upon a time there was a little girl named Lily.";
    let e = fails(&["run", "-m", s(&m), "-z", s(&z), "-n", "8", "-i", long], 4);
    assert!(e.contains("context full"), "{e}");
    let e = fails(
        &[
            "run",
            "-m",
            s(&m),
            "-z",
            s(&z),
            "--ctx",
            "4",
            "-n",
            "0",
            "-i",
            long,
        ],
        4,
    );
    assert!(e.contains("context full"), "{e}");
}

/// Prompts are bytes: invalid UTF-8 from the arguments or from a file
/// reaches the tokenizer through byte tokens (`<0xNN>` is id NN + 3), and
/// whatever the model emits, stdout is valid UTF-8.
#[test]
fn invalid_utf8_prompts_use_byte_tokens_and_output_stays_utf8() {
    let Some(dir) = data_dir() else { return };
    let tmp = TempDir::new("utf8");
    let m = dir.join("models/stories260K.bin");
    let z = dir.join("models/tok512.bin");
    let prompt: &[u8] = b"Lily \xff\xfe\xe2\x82 saw";
    let file = tmp.path("prompt.txt");
    std::fs::write(&file, prompt).unwrap();
    let arg = OsStr::from_bytes(prompt);
    let z_arg = z.as_os_str();
    let from_arg = barellama(&[
        OsStr::new("tokenize"),
        OsStr::new("-z"),
        z_arg,
        OsStr::new("-i"),
        arg,
    ]);
    let from_file = barellama(&["tokenize", "-z", s(&z), "-f", s(&file)]);
    assert!(from_arg.status.success());
    let ids = stdout(&from_arg);
    assert_eq!(ids, stdout(&from_file));
    let ids: Vec<u32> = ids.split_whitespace().map(|t| t.parse().unwrap()).collect();
    for byte in [0xffu32, 0xfe, 0xe2, 0x82] {
        assert!(ids.contains(&(byte + 3)), "{ids:?}");
    }
    let run = barellama(&[
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
    ]);
    assert!(run.status.success());
    assert!(std::str::from_utf8(&run.stdout).is_ok());
    // Hot sampling emits byte tokens in any order; the text stays UTF-8.
    for seed in ["1", "2", "3"] {
        let hot = barellama(&[
            "run",
            "-m",
            s(&m),
            "-z",
            s(&z),
            "-t",
            "2.0",
            "-p",
            "1",
            "-n",
            "0",
            "-s",
            seed,
        ]);
        assert!(hot.status.success());
        assert!(std::str::from_utf8(&hot.stdout).is_ok(), "seed {seed}");
    }
}

/// `--beams 1` prints greedy decoding's text; wider beams print text too,
/// with the score on stderr; `--beams` takes 1 to 8.
#[test]
fn beam_search_from_the_command_line() {
    let Some(dir) = data_dir() else { return };
    let m = dir.join("models/stories260K.bin");
    let z = dir.join("models/tok512.bin");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run",
            "-m",
            s(&m),
            "-z",
            s(&z),
            "-n",
            "80",
            "-i",
            "Once upon a time",
        ];
        a.extend_from_slice(extra);
        barellama(&a)
    };
    let greedy = run(&["-t", "0"]);
    let one = run(&["--beams", "1"]);
    assert_eq!(stdout(&one), stdout(&greedy));
    let four = run(&["--beams", "4"]);
    assert!(four.status.success() && stdout(&four).starts_with("Once upon a time"));
    let err = String::from_utf8_lossy(&four.stderr);
    assert!(err.contains("beam search: 4 beams"), "{err}");
    for bad in ["0", "9"] {
        fails(&["run", "-m", s(&m), "-z", s(&z), "--beams", bad], 2);
    }
    fails(
        &[
            "run",
            "-m",
            s(&m),
            "-z",
            s(&z),
            "--beams",
            "2",
            "--stop",
            "x",
        ],
        2,
    );
}
