//! `barellama run --chat` and `--stop` end to end: turns from standard
//! input answered as the library answers them, the template a GGUF file
//! names, stop strings withheld, and turns too long for the context.

use std::path::Path;

use barellama_core::{
    Chat, Compute, Isa, Model, Options, Plan, SamplerConfig, Session, Template, TextSink, Vocab,
};
use barellama_tests::{read, AlignedBuf, TempDir};

use super::{fails, s, Data};

/// stdout of a run that must succeed.
fn ok<A: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[A], input: &[u8]) -> String {
    super::ok(args, input).0
}

/// The answers the library gives to `turns`, greedy, each then a newline:
/// what the CLI should print.
fn library_chat(
    image: &[u8],
    tokenizer: &[u8],
    system: &[u8],
    turns: &[&[u8]],
    max: usize,
) -> String {
    let model = Model::load(image).unwrap();
    let plan = Plan::new(&model.config, &Options::default()).unwrap();
    let mut arena = AlignedBuf::new(plan.bytes());
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    };
    let compute = Compute::single(Isa::detect());
    let vocab = Vocab::Llama2c(tokenizer);
    let mut session = Session::new(&model, vocab, greedy, &plan, arena.get(), compute).unwrap();
    let (mut buf, mut log) = (vec![0u8; 1024], vec![0u8; 1024]);
    let mut chat = Chat::new(Template::Llama2, system, &mut buf, &mut log);
    let mut out = String::new();
    for user in turns {
        chat.user(&mut session, user).unwrap();
        let mut text = TextSink::plain(&mut out);
        session.reply(max, |_, piece| Ok(text.push(piece))).unwrap();
        text.finish().unwrap();
        out.push('\n');
    }
    out
}

#[test]
fn chat_answers_each_line_as_the_library_does() {
    let Some(d) = Data::new() else { return };
    let want = library_chat(
        &read(&d.0, "models/stories260K.bin"),
        &read(&d.0, "models/tok512.bin"),
        b"You tell stories.",
        &[b"Tell me a story.", b"What happened next?", b"Bye."],
        30,
    );
    let args = d.run(&["--chat", "-y", "You tell stories.", "-t", "0", "-n", "30"]);
    // Empty lines are skipped, CR LF line ends accepted, the last line
    // needs no newline.
    let input = b"Tell me a story.\n\nWhat happened next?\r\nBye.";
    assert_eq!(ok(&args, input), want);
    // -i gives the first turn, standard input the rest; llama2 is the
    // default for llama2.c files.
    let mut with_i = args.clone();
    with_i.extend(["-i", "Tell me a story.", "--template", "llama2"].map(String::from));
    assert_eq!(ok(&with_i, b"What happened next?\nBye.\n"), want);
    // No input: no turns.
    assert_eq!(ok(&args, b""), "");
}

/// `gguf` with a `tokenizer.chat_template` entry added first; the entry
/// is padded to 64 bytes so the tensor data stays aligned.
fn with_chat_template(gguf: &[u8], template: &str) -> Vec<u8> {
    let key = b"tokenizer.chat_template";
    let fixed = 8 + key.len() + 4 + 8;
    let mut value = template.as_bytes().to_vec();
    value.resize((fixed + value.len()).next_multiple_of(64) - fixed, b' ');
    let mut kv = Vec::new();
    kv.extend_from_slice(&(key.len() as u64).to_le_bytes());
    kv.extend_from_slice(key);
    kv.extend_from_slice(&8u32.to_le_bytes()); // string
    kv.extend_from_slice(&(value.len() as u64).to_le_bytes());
    kv.extend_from_slice(&value);
    let n_kv = u64::from_le_bytes(gguf[16..24].try_into().unwrap());
    let mut out = gguf[..16].to_vec();
    out.extend_from_slice(&(n_kv + 1).to_le_bytes());
    out.extend_from_slice(&kv);
    out.extend_from_slice(&gguf[24..]);
    out
}

#[test]
fn the_template_comes_from_the_gguf_file_or_template() {
    let Some(d) = Data::new() else { return };
    let tmp = TempDir::new("chat-template");
    let plain = d.model("stories260K-f32.gguf");
    let gguf = read(&d.0, "models/stories260K-f32.gguf");
    let zephyr = tmp.path("zephyr.gguf");
    std::fs::write(
        &zephyr,
        with_chat_template(
            &gguf,
            "{% for message in messages %}{% if message['role'] == 'user' %}\
             {{ '<|user|>\n' + message['content'] + eos_token }}{% endif %}\
             {% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}",
        ),
    )
    .unwrap();
    let llama2 = tmp.path("llama2.gguf");
    let meta = "{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}";
    std::fs::write(&llama2, with_chat_template(&gguf, meta)).unwrap();
    let unknown = tmp.path("chatml.gguf");
    let chatml = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}";
    std::fs::write(&unknown, with_chat_template(&gguf, chatml)).unwrap();

    let input = b"Tell me a story.\nAnd then?\n";
    let run = |model: &Path, extra: &[&str]| {
        let mut args = vec!["run", "-m", s(model), "--chat", "-t", "0", "-n", "20"];
        args.extend_from_slice(&["--ctx", "512"]);
        args.extend_from_slice(extra);
        ok(&args, input)
    };
    let as_zephyr = run(&plain, &["--template", "zephyr"]);
    let as_llama2 = run(&plain, &["--template", "llama2"]);
    let as_chatml = run(&plain, &["--template", "chatml"]);
    assert_ne!(as_zephyr, as_llama2);
    assert_ne!(as_chatml, as_llama2);
    assert_eq!(run(&zephyr, &[]), as_zephyr);
    assert_eq!(run(&llama2, &[]), as_llama2);
    assert_eq!(run(&unknown, &[]), as_chatml);
    assert_eq!(run(&unknown, &["--template", "zephyr"]), as_zephyr);

    // No template: ChatML, as llama.cpp falls back, and a notice. (This
    // vocabulary has no `<|im_start|>` token: its text is text.)
    let args = [
        "run",
        "-m",
        s(&plain),
        "--chat",
        "-t",
        "0",
        "-n",
        "20",
        "--ctx",
        "512",
    ];
    let (out, err) = super::ok(&args, input);
    assert_eq!(out, as_chatml);
    assert!(
        err.contains("using chatml (choose with --template)"),
        "{err}"
    );
}

#[test]
fn stop_strings_end_the_text_unprinted() {
    let Some(d) = Data::new() else { return };
    let prompt = "Once upon a time";
    // `args`, then `--stop` before each of `stops`.
    let with_stops = |args: &[&str], stops: &[&str]| {
        let stops = stops.iter().flat_map(|stop| ["--stop", stop]);
        d.run(&args.iter().copied().chain(stops).collect::<Vec<_>>())
    };
    let run = |stops: &[&str]| {
        ok(
            &with_stops(&["-i", prompt, "-t", "0", "-n", "150"], stops),
            b"",
        )
    };
    let full = run(&[]);
    let generated = &full[prompt.len()..full.len() - 1];
    let cut = |stop: &str| {
        let at = generated.find(stop).unwrap();
        format!("{prompt}{}\n", &generated[..at])
    };
    // "Lily" first comes after the prompt; the match spans tokens.
    assert_eq!(run(&["Lily"]), cut("Lily"));
    assert_eq!(run(&["park", "Lily"]), cut("Lily"));
    assert_eq!(run(&["park"]), cut("park"));
    assert_eq!(run(&[". She", "zebra"]), cut(". She"));
    // The prompt's own text never stops anything.
    assert_eq!(run(&["upon", "xyzzy"]), full);

    // --stop ends each chat answer too.
    let chat = |stops: &[&str]| {
        let args = with_stops(&["--chat", "-t", "0", "-n", "40"], stops);
        ok(&args, b"Tell me a story.\nMore.\n")
    };
    let answers = chat(&[]);
    let at = answers
        .find("special")
        .expect("the first answer says 'special'");
    let stopped = chat(&["special"]);
    let second = stopped
        .strip_prefix(&format!("{}\n", &answers[..at]))
        .unwrap_or_else(|| panic!("{stopped:?} does not start with {:?}", &answers[..at]));
    // The second answer follows the cut one, which stays in the context.
    assert!(
        second.ends_with('\n') && !second.contains("special"),
        "{stopped:?}"
    );
}

/// A turn too long for the context is not sent, with a notice, and the
/// chat goes on; one too long for the line buffer ends it (exit 4).
#[test]
fn a_turn_longer_than_the_context_is_refused() {
    let Some(d) = Data::new() else { return };
    let args = |ctx: &str| d.run(&["--chat", "-t", "0", "--ctx", ctx]);
    let long = "a story ".repeat(40) + "\nHi.\n";
    let o = super::barellama(&args("64"), long.as_bytes());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("this turn is not sent"), "{err}");
    assert!(err.contains("chat: 1 answer(s)"), "{err}");
    let longer = "x".repeat(64 * 8 + 1) + "\n";
    let (_, e) = fails(&args("64"), longer.as_bytes(), 4);
    assert!(e.contains("prompt too long: 513 bytes"), "{e}");
}

#[test]
fn chat_and_stop_flags_are_checked() {
    let Some(d) = Data::new() else { return };
    let run = |extra: &[&str]| fails(&d.run(extra), b"", 2).1;
    assert!(run(&["-y", "Be nice."]).contains("only with --chat: '-y'"));
    assert!(run(&["--template", "zephyr"]).contains("only with --chat: '--template'"));
    assert!(run(&["--chat", "--template", "vicuna"]).contains("chatml or llama3: 'vicuna'"));
    assert!(run(&["--stop", ""]).contains("--stop takes"));
    let long = "x".repeat(65);
    assert!(run(&["--stop", &long]).contains("--stop takes"));
    let many: Vec<&str> = ["--stop", "a"].repeat(9);
    assert!(run(&many).contains("at most 8 --stop"));
    assert!(run(&["--chat", "-y"]).contains("missing value after: '-y'"));
    let help = ok(&["run", "--help"], b"");
    for flag in ["--chat", "-y SYSTEM", "--template", "--stop TEXT"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
