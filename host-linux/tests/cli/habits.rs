//! What a user coming from llama.cpp or llama2.c does without thinking:
//! llama.cpp's long flags, `--flag=value`, `-f -`, piping into `head`,
//! Ctrl-C in a chat, a chat longer than its context, defaults that fit
//! small models, and the mix-ups a command line invites.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{barellama, fails, ok, s, Data};

#[test]
fn llama_cpp_long_flags_are_aliases() {
    let Some(d) = Data::new() else { return };
    let short = d.run(&["-i", "Once upon", "-t", "0.8", "-p", "0.5", "-k", "20"]);
    let short = [
        &short[..],
        &["-s", "7", "-n", "40", "--ctx", "64"].map(String::from),
    ]
    .concat();
    let (want, _) = ok(&short, b"");
    let long = d.run(&[
        "--prompt",
        "Once upon",
        "--temp",
        "0.8",
        "--top-p=0.5",
        "--top-k",
        "20",
        "--seed=7",
        "-n",
        "40",
        "-c",
        "64",
        "--threads=1",
    ]);
    assert_eq!(ok(&long, b"").0, want);
    let sized = d.run(&["-i", "Once upon", "-t", "0.8", "-p", "0.5", "-k", "20"]);
    let sized = [
        &sized[..],
        &["-s", "7", "-n", "40", "--ctx-size", "64"].map(String::from),
    ]
    .concat();
    assert_eq!(ok(&sized, b"").0, want);
    // -f - reads the prompt from standard input, as --file FILE from a file.
    let piped = d.run(&["-f", "-", "-t", "0", "-n", "30"]);
    let given = d.run(&["-i", "Once upon", "-t", "0", "-n", "30"]);
    let want = ok(&given, b"").0;
    assert_eq!(ok(&piped, b"Once upon").0, want);
    let tmp = barellama_tests::TempDir::new("aliases");
    let file = tmp.path("prompt.txt");
    std::fs::write(&file, "Once upon").unwrap();
    assert_eq!(
        ok(&d.run(&["--file", s(&file), "-t", "0", "-n", "30"]), b"").0,
        want
    );
    // --system-prompt is -y.
    let chat = |flag: &str| {
        let args = d.run(&["--chat", "-t", "0", "-n", "20", flag, "Be brief."]);
        ok(&args, b"Tell me a story.\n").0
    };
    assert_eq!(chat("--system-prompt"), chat("-y"));
    // --n-predict counts tokens after the prompt, as llama.cpp's -n.
    let (out, err) = ok(
        &d.run(&["-i", "Once upon", "-t", "0", "--n-predict", "5"]),
        b"",
    );
    assert!(err.contains("generated 5 tokens"), "{err}");
    assert!(out.starts_with("Once upon"), "{out}");
    let (version, _) = ok(&["--version"], b"");
    assert!(version.starts_with("barellama "), "{version}");
}

#[test]
fn run_reports_speed_and_the_seed_it_chose() {
    let Some(d) = Data::new() else { return };
    let (_, err) = ok(&d.run(&["-i", "Once upon", "-n", "20"]), b"");
    assert!(
        err.contains("seed ") && err.contains("-s repeats it"),
        "{err}"
    );
    assert!(
        err.contains("prompt ") && err.contains("tokens in"),
        "{err}"
    );
    let (_, err) = ok(&d.run(&["-i", "Once upon", "-n", "20", "-s", "3"]), b"");
    assert!(!err.contains("seed "), "{err}");
}

#[test]
fn misused_flags_say_what_they_take() {
    let Some(d) = Data::new() else { return };
    let error = |extra: &[&str]| fails(&d.run(extra), b"", 2).1;
    assert!(
        error(&["-p", "Hello"]).contains("-p is top-p here, as in llama2.c; the prompt is -i"),
        "{}",
        error(&["-p", "Hello"])
    );
    assert!(error(&["--top-p", "2"]).contains("-p (--top-p) takes a number in [0, 1]: '2'"));
    assert!(error(&["-t", "-1"]).contains("-t (--temp) takes a temperature of 0 or more"));
    assert!(error(&["--threads", "0"]).contains("--threads takes 1 to 1024: '0'"));
    assert!(error(&["--min-p", "1.5"]).contains("--min-p takes a number in [0, 1]"));
    assert!(error(&["--repeat-last-n", "-2"]).contains("--repeat-last-n takes"));
    assert!(error(&["--chat=yes"]).contains("takes no value: '--chat'"));
    // -k 0 is off, as in llama.cpp.
    ok(&d.run(&["-i", "Once", "-k", "0", "-n", "10"]), b"");
}

#[test]
fn defaults_fit_small_models() {
    let Some(d) = Data::new() else { return };
    // stories260K-f32.gguf declares 256 positions: -n follows, unasked.
    let m = d.model("stories260K-f32.gguf");
    let (out, _) = ok(
        &["run", "-m", s(&m), "-i", "Once upon a time", "-t", "0"],
        b"",
    );
    assert!(out.starts_with("Once upon a time"), "{out}");
    // -n shorter than the prompt: the prompt, nothing after it.
    let (out, _) = ok(
        &d.run(&["-i", "Once upon a time there was", "-n", "3", "-t", "0"]),
        b"",
    );
    assert!(out.starts_with("Once upon a time there was"), "{out}");
    // -n beyond the context is cut to it.
    ok(
        &d.run(&["-i", "Once", "-n", "100000", "--ctx", "64", "-t", "0"]),
        b"",
    );
    // bench on a 128-position model without -n.
    let q8 = d.model("synsmall-Q8_0.gguf");
    ok(&["bench", "-m", s(&q8), "--threads", "1"], b"");
}

#[test]
fn model_and_tokenizer_mix_ups_are_named() {
    let Some(d) = Data::new() else { return };
    let (m, z, g) = (
        d.model("stories260K.bin"),
        d.model("tok512.bin"),
        d.model("stories260K-f32.gguf"),
    );
    let e = fails(&["run", "-m", s(&z), "-i", "x"], b"", 2).1;
    assert!(
        e.contains("this is a llama2.c tokenizer, not a model: give it with -z"),
        "{e}"
    );
    let e = fails(&["tokenize", "-m", s(&m), "-i", "x"], b"", 2).1;
    assert!(
        e.contains("a llama2.c model has no vocabulary: give its tokenizer with -z"),
        "{e}"
    );
    let e = fails(&["run", "-m", s(&m), "-z", s(&g), "-i", "x"], b"", 2).1;
    assert!(e.contains("-z takes a llama2.c tokenizer.bin"), "{e}");
    let e = fails(&["tokenize", "-z", s(&g), "-i", "x"], b"", 2).1;
    assert!(e.contains("-z takes a llama2.c tokenizer.bin"), "{e}");
}

/// `| head -c 10`: the reader goes away; the run ends quietly, exit 0.
#[test]
fn a_closed_pipe_ends_quietly() {
    let Some(d) = Data::new() else { return };
    // The ids of a long text make a line longer than a pipe holds.
    let tmp = barellama_tests::TempDir::new("pipe");
    let text = tmp.path("long.txt");
    std::fs::write(&text, "Once upon a time there was a cat. ".repeat(8000)).unwrap();
    let z = d.model("tok512.bin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_barellama"))
        .args(["tokenize", "-z", s(&z), "-f", s(&text)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Output goes out a line or a piece at a time, not a byte at a time:
/// counted with strace where it is installed.
#[test]
fn output_is_written_a_piece_at_a_time() {
    let Some(d) = Data::new() else { return };
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace is not installed: the write count is not checked");
        return;
    }
    let tmp = barellama_tests::TempDir::new("writes");
    let trace = tmp.path("trace");
    let mut args = vec![
        "-f".to_string(),
        "-e".into(),
        "trace=write".into(),
        "-o".into(),
        s(&trace).into(),
        env!("CARGO_BIN_EXE_barellama").into(),
    ];
    args.extend(d.run(&["-i", "Once upon a time", "-t", "0", "--n-predict", "40"]));
    let out = Command::new("strace").args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let writes = std::fs::read_to_string(&trace).unwrap();
    let to_stdout = writes.lines().filter(|l| l.contains("write(1,")).count();
    // 40 pieces, the prompt's line and the final new line at most.
    assert!(
        (1..=42).contains(&to_stdout),
        "{to_stdout} writes:\n{writes}"
    );
    let m = d.model("stories260K-f32.gguf");
    let out = Command::new("strace")
        .args(&args[..5])
        .args([env!("CARGO_BIN_EXE_barellama"), "inspect", "-m", s(&m)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    let writes = std::fs::read_to_string(&trace).unwrap();
    let to_stdout = writes.lines().filter(|l| l.contains("write(1,")).count();
    assert!(to_stdout <= lines, "{to_stdout} writes for {lines} lines");
}

/// Reads `child`'s stdout until it holds `n` bytes or `limit` passes.
fn read_some(child: &mut std::process::ChildStdout, n: usize, limit: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < n && start.elapsed() < limit {
        match child.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    got
}

/// Ctrl-C mid-answer stops that answer only: the next turn is answered;
/// Ctrl-C at the prompt then ends the chat with exit 0.
#[test]
fn ctrl_c_stops_the_answer_not_the_chat() {
    let Some(d) = Data::new() else { return };
    let m = d.model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut child = Command::new(env!("CARGO_BIN_EXE_barellama"))
        .args(["run", "-m", s(&m), "--chat", "-t", "0", "-n", "600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin
        .write_all(b"Write a very long story about a dragon and a knight.\n")
        .unwrap();
    let first = read_some(&mut stdout, 8, Duration::from_secs(120));
    assert!(first.len() >= 8, "no answer began: {first:?}");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    stdin.write_all(b"What is 2 + 2?\n").unwrap();
    // Then Ctrl-C at the prompt, the input still open, ends the chat.
    let mut text = first;
    while !String::from_utf8_lossy(&text).contains("four") {
        let more = read_some(&mut stdout, 1, Duration::from_secs(120));
        assert!(!more.is_empty(), "{:?}", String::from_utf8_lossy(&text));
        text.extend(more);
    }
    std::thread::sleep(Duration::from_millis(200));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let text = String::from_utf8_lossy(&[text, rest].concat()).into_owned();
    let answers: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(answers.len() >= 2, "{text:?}");
    assert!(err.contains("chat: 2 answer(s)"), "{err}");
}

/// Eight turns in 64 positions: the oldest turns make way, with a notice,
/// and every turn gets its answer.
#[test]
fn a_chat_outlives_its_context() {
    let Some(d) = Data::new() else { return };
    let args = d.run(&["--chat", "-t", "0", "--ctx", "64", "-y", "Be brief."]);
    let turns = "Tell me a story.\n".repeat(8);
    let o = barellama(&args, turns.as_bytes());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 8);
    assert!(err.contains("turns dropped, oldest first"), "{err}");
    assert!(err.contains("chat: 8 answer(s)"), "{err}");
}

/// SmolLM2's greedy haiku is llama.cpp's, word for word, though four of
/// its steps are near-ties: the chat prompt's ids and every step of the
/// arithmetic are llama.cpp's. The answer ends at `<|im_end|>`.
#[test]
fn smollm2_greedy_haiku_is_llama_cpp_s() {
    let Some(d) = Data::new() else { return };
    let m = d.model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let (out, _) = ok(
        &["run", "-m", s(&m), "--chat", "-t", "0"],
        b"Write a haiku about the sea.\n",
    );
    assert_eq!(
        out,
        "In the depths of the blue, a lone vessel sails, a reflection of the unending \
         beauty of the sea.\n"
    );
}
