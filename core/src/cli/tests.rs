//! Every command through [`main`] on a [`Host`] in memory: files from a
//! table (a tiny synthetic model and tokenizer, and what the commands make
//! of them), captured stdout and stderr, scripted stdin lines, a clock
//! that ticks one millisecond per reading, and one thread.

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use super::{main, Host};
use crate::arena::{Options, Plan};
use crate::config::Config;
use crate::error::{text, Error, Result};
use crate::exec::{Compute, Exec, SingleThread};
use crate::generate::{Session, TextSink};
use crate::image::vocab::Vocab;
use crate::image::{Format, Model};
use crate::io::Output;
use crate::kernels::Isa;
use crate::sampler::SamplerConfig;
use crate::tensor::DType;
use crate::write::synth;

/// The test model's shape: rows of 64 and 128 values, so Q8_0 and v2
/// (groups of 64) take it and Q4_K (256) refuses it.
const TINY: Config = Config {
    dim: 64,
    hidden_dim: 128,
    n_layers: 2,
    n_heads: 4,
    n_kv_heads: 2,
    vocab_size: 3 + 256 + 26 + 26 + 1,
    seq_len: 128,
    rope_theta: 10000.0,
    rope_scale: 1.0,
    norm_eps: 1e-5,
};

/// A llama2.c `tokenizer.bin` for [`TINY`]: `<unk>`, `<s>`, `</s>`, the
/// 256 byte tokens, the letters, the letters after a space, and a space;
/// longer pieces score higher, so ` h` is merged before `h` stands alone.
fn tokenizer_bin() -> Vec<u8> {
    let mut pieces: Vec<Vec<u8>> = ["<unk>", "<s>", "</s>"].map(Vec::from).to_vec();
    pieces.extend((0..=255).map(|b| format!("<0x{b:02X}>").into_bytes()));
    pieces.extend((b'a'..=b'z').map(|c| vec![c]));
    pieces.extend((b'a'..=b'z').map(|c| vec![b' ', c]));
    pieces.push(vec![b' ']);
    assert_eq!(pieces.len(), TINY.vocab_size);
    let mut bin = 6i32.to_le_bytes().to_vec();
    for p in &pieces {
        bin.extend_from_slice(&(p.len() as f32).to_le_bytes());
        bin.extend_from_slice(&(p.len() as i32).to_le_bytes());
        bin.extend_from_slice(p);
    }
    bin
}

/// [`TINY`] with seeded random weights, as a llama2.c v1 file.
fn model_bin() -> Vec<u8> {
    let mut image = vec![0u8; synth::llama2c_bytes(&TINY, DType::F32).unwrap()];
    synth::write_llama2c(&TINY, DType::F32, 7, &mut image).unwrap();
    image
}

/// Bytes starting on a 64-byte boundary, as a mapping's do.
struct Aligned {
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(bytes: &[u8]) -> Self {
        let mut buf = vec![0u8; bytes.len() + 64];
        let at = buf.as_ptr().align_offset(64);
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        Aligned {
            buf,
            at,
            len: bytes.len(),
        }
    }

    fn get(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.len]
    }
}

/// A file a command is writing: its path, its bytes, and how many more
/// it takes before the disk is full. The bytes reach the host's files only
/// through [`Host::commit`]; dropped before, they vanish, as a real host's
/// temporary file does.
struct Created {
    path: Vec<u8>,
    bytes: Vec<u8>,
    room: usize,
}

impl Output for Created {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.bytes.len() + bytes.len() > self.room {
            return Err(Error::Io {
                what: "output file",
                errno: 28,
            });
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
}

/// The most memory one request gets, as a real host's mmap would refuse
/// an absurd size: above the 1 GiB of `bench`'s bandwidth probe.
const MEMORY_LIMIT: usize = 3 << 29;

struct TestHost {
    files: Vec<(String, Aligned)>,
    /// The paths of the files mapped so far: what `create` must not replace.
    mapped: RefCell<Vec<Vec<u8>>>,
    /// Committed files, by path; the latest of a path is the file.
    created: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Bytes an output file takes before writing fails (a full disk).
    disk_room: usize,
    stdin: RefCell<VecDeque<Vec<u8>>>,
    stdout: RefCell<Vec<u8>>,
    stderr: RefCell<Vec<u8>>,
    /// Bytes stdout takes before printing fails (a closed pipe).
    stdout_room: usize,
    clock: Cell<u64>,
    /// Looks for Ctrl-C until it comes, counting this one (0: never).
    interrupt_at: Cell<u64>,
    /// Calls of [`Host::flush`].
    flushes: Cell<usize>,
    isa: Isa,
    interactive: bool,
}

impl TestHost {
    /// `model.bin` and `tok.bin`; the CPU's best kernels.
    fn new() -> Self {
        TestHost {
            files: vec![],
            mapped: RefCell::default(),
            created: RefCell::default(),
            disk_room: usize::MAX,
            stdin: RefCell::default(),
            stdout: RefCell::default(),
            stderr: RefCell::default(),
            stdout_room: usize::MAX,
            clock: Cell::new(0),
            interrupt_at: Cell::new(0),
            flushes: Cell::new(0),
            isa: Isa::detect(),
            interactive: false,
        }
        .file("model.bin", &model_bin())
        .file("tok.bin", &tokenizer_bin())
    }

    fn file(mut self, name: &str, bytes: &[u8]) -> Self {
        self.files.push((name.to_string(), Aligned::new(bytes)));
        self
    }

    /// Standard input: these lines.
    fn stdin(self, lines: &[&str]) -> Self {
        *self.stdin.borrow_mut() = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
        self
    }

    /// Runs a command line; its exit code, stdout and stderr.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.stdout.borrow_mut().clear();
        self.stderr.borrow_mut().clear();
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let code = main(self, &argv);
        let text = |b: &RefCell<Vec<u8>>| String::from_utf8(b.borrow().clone()).unwrap();
        (code, text(&self.stdout), text(&self.stderr))
    }

    /// stdout of a command line that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    }

    /// The one error line of a command line that must exit with `code`.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let (got, _, err) = self.run(args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(
            err.starts_with("barellama: ") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        err
    }

    /// What a command wrote to the file `name`.
    fn created(&self, name: &str) -> Option<Vec<u8>> {
        let created = self.created.borrow();
        let file = created.iter().rev().find(|(n, _)| n == name.as_bytes());
        file.map(|(_, bytes)| bytes.clone())
    }
}

impl Host for TestHost {
    type File = Created;

    fn map(&self, path: &[u8]) -> Result<&[u8]> {
        let file = self.files.iter().find(|(name, _)| name.as_bytes() == path);
        let bytes = file.map(|(_, bytes)| bytes.get()).ok_or(Error::File {
            path: text(path),
            problem: "cannot open",
            errno: 2,
        })?;
        self.mapped.borrow_mut().push(path.to_vec());
        Ok(bytes)
    }

    /// Leaked: the memory must live as long as the host, and a test's
    /// host lives as long as the test.
    fn memory(&self, bytes: usize) -> Result<&mut [u8]> {
        if bytes > MEMORY_LIMIT {
            return Err(Error::OutOfMemory { bytes });
        }
        let buf = Box::leak(vec![0u8; bytes + 64].into_boxed_slice());
        let at = buf.as_ptr().align_offset(64);
        Ok(&mut buf[at..at + bytes])
    }

    /// Paths are the files' identities here: no links.
    fn create(&self, path: &[u8]) -> Result<Created> {
        if self.mapped.borrow().iter().any(|m| m == path) {
            return Err(super::same_file(path));
        }
        Ok(Created {
            path: path.to_vec(),
            bytes: Vec::new(),
            room: self.disk_room,
        })
    }

    fn commit(&self, file: Created) -> Result<()> {
        self.created.borrow_mut().push((file.path, file.bytes));
        Ok(())
    }

    fn print(&self, bytes: &[u8]) -> Result<()> {
        let mut out = self.stdout.borrow_mut();
        if out.len() + bytes.len() > self.stdout_room {
            return Err(Error::Closed {
                what: "standard output",
            });
        }
        out.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.flushes.set(self.flushes.get() + 1);
        Ok(())
    }

    fn eprint(&self, bytes: &[u8]) {
        self.stderr.borrow_mut().extend_from_slice(bytes);
    }

    fn interactive(&self) -> bool {
        self.interactive
    }

    fn read_line(&self, line: &mut [u8]) -> Result<Option<usize>> {
        let Some(next) = self.stdin.borrow_mut().pop_front() else {
            return Ok(None);
        };
        let max = line.len();
        let slot = line.get_mut(..next.len()).ok_or(Error::PromptTooLong {
            bytes: next.len(),
            max,
        })?;
        slot.copy_from_slice(&next);
        Ok(Some(next.len()))
    }

    /// Every scripted line, each followed by a newline.
    fn read_stdin(&self) -> Result<&[u8]> {
        let lines = self.stdin.borrow_mut().drain(..).collect::<Vec<_>>();
        let all: Vec<u8> = lines
            .iter()
            .flat_map(|l| l.iter().chain(b"\n"))
            .copied()
            .collect();
        Ok(Box::leak(all.into_boxed_slice()))
    }

    fn catch_interrupts(&self) {}

    /// Ctrl-C comes at the `interrupt_at`-th look, once.
    fn interrupted(&self) -> bool {
        let at = self.interrupt_at.get();
        self.interrupt_at.set(at.saturating_sub(1));
        at == 1
    }

    fn now_ns(&self) -> u64 {
        self.clock.set(self.clock.get() + 1_000_000);
        self.clock.get()
    }

    fn peak_rss_bytes(&self) -> u64 {
        0
    }

    fn allocations(&self) -> u64 {
        0
    }

    fn isa(&self) -> Isa {
        self.isa
    }

    fn default_threads(&self) -> usize {
        1
    }

    fn exec(&self, _threads: usize) -> Result<&dyn Exec> {
        Ok(&SingleThread)
    }
}

/// A greedy session of the tiny model on `host`'s files, as the library
/// builds one: what the command line's output is checked against.
fn library_session<'h>(host: &'h TestHost, model: &'h Model<'h>) -> Session<'h, 'h> {
    let plan = Plan::new(&model.config, &Options::default()).unwrap();
    let greedy = SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    };
    let vocab = Vocab::Llama2c(host.map(b"tok.bin").unwrap());
    let arena = host.memory(plan.bytes()).unwrap();
    let compute = Compute::single(host.isa);
    Session::new(model, vocab, greedy, &plan, arena, compute).unwrap()
}

/// A command line written as one string: its words, split at spaces.
fn words(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

const RUN: [&str; 5] = ["run", "-m", "model.bin", "-z", "tok.bin"];

/// `run` with the tiny model and `extra` arguments.
fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [&RUN[..], extra].concat()
}

#[test]
fn run_prints_the_prompt_and_the_librarys_greedy_text() {
    let host = TestHost::new().file("prompt.txt", b"hello world");
    let model = Model::load(host.map(b"model.bin").unwrap()).unwrap();
    let mut session = library_session(&host, &model);
    let mut want = TextSink::plain(String::new());
    session
        .generate(b"hello world", 40, |_, piece| {
            want.echo(piece);
            Ok(())
        })
        .unwrap();
    want.finish().unwrap();
    let (code, out, err) = host.run(&run_args(&["-i", "hello world", "-t", "0", "-n", "40"]));
    assert_eq!((code, out), (0, want.into_inner() + "\n"));
    assert!(err.starts_with("achieved tok/s: "), "{err}");
    // A prompt from a file, and seeded sampling, repeat exactly.
    let sampled = run_args(&["-f", "prompt.txt", "-s", "5", "-n", "30"]);
    assert_eq!(host.ok(&sampled), host.ok(&sampled));
}

#[test]
fn beams_of_one_print_what_greedy_prints() {
    let host = TestHost::new();
    let greedy = host.ok(&run_args(&["-i", "the", "-t", "0", "-n", "30"]));
    assert_eq!(
        host.ok(&run_args(&["-i", "the", "-n", "30", "--beams", "1"])),
        greedy
    );
    let (code, out, err) = host.run(&run_args(&["-i", "the", "-n", "30", "--beams", "3"]));
    assert_eq!(code, 0);
    assert!(out.starts_with("the") && out.ends_with('\n'), "{out}");
    assert!(err.starts_with("beam search: 3 beams, "), "{err}");
}

#[test]
fn stop_strings_cut_the_generated_text() {
    let host = TestHost::new();
    let greedy = run_args(&["-i", "a", "-t", "0", "-n", "60"]);
    let full = host.ok(&greedy);
    let generated = &full[1..full.len() - 1];
    let chars: Vec<char> = generated.chars().collect();
    let stop: String = chars[chars.len() / 2..][..2].iter().collect();
    let cut = |stop: &str| {
        let at = generated.find(stop).unwrap_or(generated.len());
        format!("a{}\n", &generated[..at])
    };
    assert_eq!(
        host.ok(&[&greedy[..], &["--stop", &stop]].concat()),
        cut(&stop)
    );
    // The prompt's own text stops nothing.
    assert_eq!(host.ok(&[&greedy[..], &["--stop", "a"]].concat()), cut("a"));
}

#[test]
fn chat_answers_each_line_of_stdin() {
    let chat = run_args(&["--chat", "-s", "3", "-n", "12", "-y", "Be brief."]);
    let host = TestHost::new().stdin(&["hello", "", "how are you\r"]);
    let answers = host.ok(&chat);
    assert!(answers.len() > 4 && answers.ends_with('\n'), "{answers:?}");
    // -i is the first turn; stdin the rest.
    let host = TestHost::new().stdin(&["how are you"]);
    assert_eq!(host.ok(&[&chat[..], &["-i", "hello"]].concat()), answers);
    // A person at a terminal sees prompts.
    // A person at a terminal sees prompts, on stderr: stdout is answers.
    let mut host = TestHost::new().stdin(&["hello"]);
    host.interactive = true;
    let (code, shown, prompts) = host.run(&chat);
    assert_eq!(code, 0);
    assert!(
        !shown.contains("User:") && shown.ends_with('\n'),
        "{shown:?}"
    );
    assert!(
        prompts.starts_with("User: Assistant: User: \n"),
        "{prompts:?}"
    );
    // A line longer than the context could hold.
    let long = "a".repeat(129 * 8);
    let host = TestHost::new().stdin(&[&long]);
    assert!(host.fails(&chat, 4).contains("prompt too long"));
    // A full context drops the oldest turns: every turn is answered.
    let host = TestHost::new().stdin(&["hello"; 40]);
    let (code, out, err) = host.run(&run_args(&["--chat", "-t", "0", "--ctx", "40"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("turns dropped, oldest first"), "{err}");
    assert!(err.contains("chat: 40 answer(s)"), "{err}");
    assert!(out.lines().count() >= 40, "{out:?}");
}

/// Ctrl-C mid-answer ends that answer; the next turn is answered in full.
#[test]
fn ctrl_c_stops_one_answer() {
    let chat = run_args(&["--chat", "-t", "0", "-n", "12"]);
    let whole = TestHost::new().stdin(&["hello", "how are you"]).ok(&chat);
    let host = TestHost::new().stdin(&["hello", "how are you"]);
    // Looked for before each token: the third look comes after two.
    host.interrupt_at.set(3);
    let (code, cut, err) = host.run(&chat);
    assert_eq!(code, 0, "{err}");
    let (cut, whole) = (
        cut.lines().collect::<Vec<_>>(),
        whole.lines().collect::<Vec<_>>(),
    );
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(whole[0].starts_with(cut[0]) && cut[0].len() < whole[0].len());
    assert!(err.contains("chat: 2 answer(s)"), "{err}");
}

/// Generated text goes out a piece at a time: one flush per token at most.
#[test]
fn output_is_flushed_once_per_piece() {
    let host = TestHost::new();
    let (code, _, err) = host.run(&run_args(&["-i", "hello", "-t", "0", "--n-predict", "20"]));
    assert_eq!(code, 0);
    assert!(err.contains("generated 20 tokens"), "{err}");
    let flushes = host.flushes.get();
    assert!((1..=22).contains(&flushes), "{flushes} flushes");
}

#[test]
fn a_failed_print_stops_the_run() {
    let mut host = TestHost::new();
    host.stdout_room = 8;
    // A reader gone (`| head -c 8`) ends the run quietly.
    let (code, out, err) = host.run(&run_args(&["-i", "hello world", "-n", "100"]));
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.len() <= 8);
}

/// The one summary line and JSON object, exact: the clock ticks 1 ms per
/// reading, so every step takes 1 ms and every probe pass 1 ms.
#[test]
fn bench_reports_json_and_a_summary() {
    let host = TestHost::new();
    let args = words("bench -m model.bin -z tok.bin -n 4 --prompt-tokens 3 --isa scalar --json");
    let (code, json, summary) = host.run(&args);
    assert_eq!(code, 0, "{summary}");
    let bytes_per_token = 379_136;
    assert_eq!(
        json,
        format!(
            "{{\"model\":\"model.bin\",\"format\":\"F32\",\"isa\":\"scalar\",\"threads\":1,\
             \"tokens\":4,\"tok_per_s\":1000.000,\"ms_p50\":1.000,\"ms_p99\":1.000,\
             \"ttft_ms\":1.000,\"rss_mb\":0.0,\"allocs_per_token\":0,\
             \"bytes_per_token\":{bytes_per_token},\"bandwidth_gb_s\":1073.742,\
             \"bandwidth_1t_gb_s\":1073.742,\"roofline\":0.0004,\"prompt_tokens\":3,\
             \"prefill_tok_per_s\":3000.000}}\n"
        )
    );
    assert_eq!(
        summary,
        "model.bin: F32, 1 thread, scalar: 4 tokens, 1000.00 tok/s, p50 1.00 ms, \
         p99 1.00 ms, ttft 1.00 ms, peak RSS 0 MB, 0 allocs/token; 0.4 MB/token at \
         1073.74 GB/s read bandwidth = 0% of the roofline\n\
         prefill: 3 prompt tokens, 3000.00 tok/s\n"
    );
}

/// GGUF files carry their vocabulary: `run` and `bench` need no `-z`.
#[test]
fn a_gguf_model_runs_with_its_own_vocabulary() {
    let host = TestHost::new();
    host.ok(&["convert", "model.bin", "model.gguf", "-z", "tok.bin"]);
    let host = TestHost::new().file("model.gguf", &host.created("model.gguf").unwrap());
    let text = host.ok(&[
        "run",
        "-m",
        "model.gguf",
        "-i",
        "hello",
        "-t",
        "0",
        "-n",
        "20",
    ]);
    assert!(text.starts_with("hello"), "{text}");
    let line = host.ok(&["bench", "-m", "model.gguf", "-n", "2"]);
    assert!(line.starts_with("model.gguf: F32, 1 thread, "), "{line}");
    let ids = host.ok(&["tokenize", "-z", "tok.bin", "-i", "hello world", "--bos"]);
    assert_eq!(
        host.ok(&["tokenize", "-m", "model.gguf", "-i", "hello world", "--bos"]),
        ids
    );
}

#[test]
fn tokenize_prints_ids_on_one_line() {
    let host = TestHost::new().file("text.txt", b"hello world");
    // BOS, " h", e, l, l, o, " w", o, r, l, d.
    let want = "1 292 263 270 270 273 307 273 276 270 262\n";
    assert_eq!(
        host.ok(&["tokenize", "-z", "tok.bin", "-i", "hello world", "--bos"]),
        want
    );
    assert_eq!(
        host.ok(&["tokenize", "-z", "tok.bin", "-f", "text.txt"]),
        &want[2..]
    );
    let with_model = [
        "tokenize",
        "-z",
        "tok.bin",
        "-m",
        "model.bin",
        "-i",
        "hello world",
    ];
    assert_eq!(host.ok(&with_model), &want[2..]);
}

#[test]
fn logits_are_the_models_teacher_forced_rows() {
    let host = TestHost::new()
        .file("ids.txt", b"1 292 263\n270 ")
        .file("bad.txt", b"1 2 x")
        .file("one.txt", b"1");
    let args = words("logits -m model.bin --tokens ids.txt -o out.bin");
    host.ok(&args);
    let out = host.created("out.bin").unwrap();
    let words: Vec<u32> = out
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect();
    let vocab = TINY.vocab_size;
    assert_eq!(
        words[..9],
        [0x4743_324c, 1, 3, vocab as u32, 4, 1, 292, 263, 270]
    );
    assert_eq!(words.len(), 9 + 3 * vocab);
    let model = Model::load(host.map(b"model.bin").unwrap()).unwrap();
    let mut session = library_session(&host, &model);
    for (pos, id) in [1, 292, 263].into_iter().enumerate() {
        let row = session.transformer.forward(id, pos).unwrap();
        let bits: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        assert!(bits[..] == words[9 + pos * vocab..][..vocab], "row {pos}");
    }
    let with_ids = |ids| [&args[..4], &[ids, "-o", "o"]].concat();
    assert!(host.fails(&with_ids("bad.txt"), 3).contains("token id"));
    host.fails(&with_ids("one.txt"), 2);
}

#[test]
fn inspect_lists_both_formats() {
    let host = TestHost::new();
    let text = host.ok(&["inspect", "-m", "model.bin"]);
    assert!(
        text.starts_with("format: llama2.c v1, shared classifier\n"),
        "{text}"
    );
    assert!(
        text.contains("\nlayers.1.w3 ") && text.contains("\nwcls "),
        "{text}"
    );
    host.ok(&[
        "quantize",
        "model.bin",
        "q8.gguf",
        "--type",
        "q8_0",
        "-z",
        "tok.bin",
    ]);
    let host = TestHost::new().file("q8.gguf", &host.created("q8.gguf").unwrap());
    let text = host.ok(&["inspect", "-m", "q8.gguf"]);
    assert!(
        text.starts_with("format: GGUF v3, alignment 32, "),
        "{text}"
    );
    for line in [
        "\ngeneral.architecture                         string  \"llama\"\n",
        "\ntokenizer.ggml.tokens                        array   [string; 312]\n",
        "\nblk.1.ffn_up.weight          Q8_0                 64x128         8704       122080\n",
        "\ndim 64 hidden_dim 128 n_layers 2 ",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
}

#[test]
fn quantize_and_convert_write_models_that_load() {
    let host = TestHost::new();
    let (code, _, log) = host.run(&[
        "quantize",
        "model.bin",
        "q.gguf",
        "--type",
        "q8_0",
        "-z",
        "tok.bin",
    ]);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.starts_with("[   1/") && log.contains("barellama: wrote q.gguf in "),
        "{log}"
    );
    let q = Aligned::new(&host.created("q.gguf").unwrap());
    let model = Model::load(q.get()).unwrap();
    assert_eq!(model.weights.layers[0].wq.dtype(), DType::Q8_0);
    host.ok(&["quantize", "model.bin", "q.bin", "--type", "v2"]);
    let v2 = Aligned::new(&host.created("q.bin").unwrap());
    let model = Model::load(v2.get()).unwrap();
    assert!(matches!(model.format, Format::Llama2c { version: 2, .. }));
    host.ok(&["convert", "model.bin", "f.gguf", "-z", "tok.bin"]);
    let f32 = Aligned::new(&host.created("f.gguf").unwrap());
    let model = Model::load(f32.get()).unwrap();
    assert_eq!(model.weights.layers[0].wq.dtype(), DType::F32);
    // Refusals come before the output exists, and say why.
    host.fails(&["quantize", "model.bin", "no.gguf", "--type", "q8_0"], 2);
    host.fails(&["quantize", "model.bin", "no.gguf", "--type", "v2:5"], 3);
    let q4k = words("quantize model.bin no.gguf --type q4_k -z tok.bin");
    assert!(host.fails(&q4k, 3).contains(
        "tensor 'token_embd.weight' has rows of 64 values, not a multiple of Q4_K's block of 256"
    ));
    let short = TestHost::new().file("short.bin", &tokenizer_bin()[..100]);
    let z_short = words("quantize model.bin no.gguf --type f16 -z short.bin");
    assert!(short.fails(&z_short, 3).contains("input ends at byte 100"));
    assert!(host.created("no.gguf").is_none() && short.created("no.gguf").is_none());
}

/// An output is committed whole or not at all: a command that fails while
/// writing leaves no file, and an older file of the same path as it was.
#[test]
fn outputs_appear_only_when_complete() {
    let mut host = TestHost::new().file("ids.txt", b"1 292 263");
    let q8 = words("quantize model.bin q.gguf --type q8_0 -z tok.bin");
    host.ok(&q8);
    let before = host.created("q.gguf").unwrap();
    host.disk_room = 1024;
    let logits = words("logits -m model.bin --tokens ids.txt -o out.bin");
    for args in [&q8, &logits] {
        let (code, _, log) = host.run(args);
        assert_eq!(code, 1, "{log}");
        assert!(
            log.ends_with("no space left on device, errno 28)\n"),
            "{log}"
        );
    }
    assert_eq!(host.created("q.gguf"), Some(before));
    assert_eq!(host.created("out.bin"), None);
}

/// Every file a command reads is refused as its output, before anything
/// is written.
#[test]
fn an_output_never_replaces_an_input() {
    let host = TestHost::new().file("ids.txt", b"1 292 263");
    for (args, out) in [
        ("quantize model.bin model.bin --type v2", "model.bin"),
        (
            "quantize model.bin tok.bin --type q8_0 -z tok.bin",
            "tok.bin",
        ),
        ("convert model.bin model.bin -z tok.bin", "model.bin"),
        ("logits -m model.bin --tokens ids.txt -o ids.txt", "ids.txt"),
        (
            "logits -m model.bin --tokens ids.txt -o model.bin",
            "model.bin",
        ),
    ] {
        let args = words(args);
        let e = host.fails(&args, 2);
        let want = format!("the output is the same file as an input: '{out}'");
        assert!(e.contains(&want), "{args:?}: {e}");
    }
    assert!(host.created.borrow().is_empty());
}

#[test]
fn help_and_usage_errors() {
    let host = TestHost::new();
    for command in [
        "run", "bench", "logits", "tokenize", "inspect", "quantize", "convert",
    ] {
        assert!(host
            .ok(&[command, "--help"])
            .starts_with("usage: barellama "));
    }
    assert!(host.ok(&["help"]).starts_with("usage: barellama <command>"));
    let (code, _, err) = host.run(&[]);
    assert!(code == 2 && err.starts_with("usage: barellama <command>"));
    for (args, message) in [
        (&["walk"][..], "unknown command: 'walk'"),
        (
            &run_args(&["--frobnicate"]),
            "unknown option: '--frobnicate'",
        ),
        (&run_args(&["-n"]), "missing value after: '-n'"),
        (
            &run_args(&["-t", "-1"]),
            "-t (--temp) takes a temperature of 0 or more: '-1'",
        ),
        (
            &run_args(&["--threads", "0"]),
            "--threads takes 1 to 1024: '0'",
        ),
        (&run_args(&["--kv", "f8"]), "--kv takes f32 or f16: 'f8'"),
        (
            &run_args(&["--repeat-penalty", "0"]),
            "--repeat-penalty takes a number above 0 (1: off): '0'",
        ),
        (&run_args(&["-y", "hi"]), "only with --chat: '-y'"),
        (&["run", "-m", "model.bin"], "needs a tokenizer"),
        (
            &["run", "-z", "tok.bin"],
            "missing required option: '-m MODEL'",
        ),
        (
            &["inspect", "-m", "model.bin", "-z", "tok.bin"],
            "unknown option: '-z'",
        ),
        (
            &["tokenize", "-z", "tok.bin", "-i", "a", "--threads", "2"],
            "unknown option",
        ),
        (&["bench", "--format", "q5_1"], "--format takes"),
        (
            &["bench", "-m", "model.bin", "-n", "200"],
            "exceeds the context",
        ),
        (&["quantize", "a", "b", "c"], "more than IN and OUT: 'c'"),
        (
            &["convert", "model.bin", "x", "--type", "f16"],
            "unknown option: '--type'",
        ),
    ] {
        let e = host.fails(args, 2);
        assert!(e.contains(message), "{args:?}: {e}");
    }
    host.fails(&["run", "-m", "missing.bin", "-z", "tok.bin"], 3);
    host.fails(
        &run_args(&["--ctx", "4", "-n", "0", "-i", "hello world"]),
        4,
    );
}

/// `--isa` takes this CPU's levels and refuses the rest by name; `bench
/// --scalar` is `--isa scalar`.
#[test]
fn isa_picks_a_level_no_higher_than_the_hosts() {
    for isa in Isa::available() {
        assert_eq!(Isa::detect().at_most(isa.name().as_bytes()), Some(isa));
        assert_eq!(
            Isa::SCALAR.at_most(isa.name().as_bytes()),
            (isa == Isa::SCALAR).then_some(isa)
        );
    }
    let mut host = TestHost::new();
    let scalar = host.ok(&run_args(&[
        "-i", "hi", "-t", "0", "-n", "20", "--isa", "scalar",
    ]));
    assert!(scalar.starts_with("hi"));
    host.isa = Isa::SCALAR;
    for name in ["avx2", "avx512", "neon", "neon+dotprod", "sse"] {
        let e = host.fails(&run_args(&["--isa", name]), 2);
        assert!(
            e.contains("--isa takes") && e.contains(&format!("'{name}'")),
            "{e}"
        );
        host.fails(&["logits", "-m", "model.bin", "--isa", name], 2);
    }
    host.fails(&["bench", "--isa"], 2);
}

/// Hostile command lines: every flag of every command with no value, a
/// word, a negative number and a huge one, never panic; errors are one
/// line with an exit code of DESIGN.md's.
#[test]
fn no_argument_panics() {
    let host = TestHost::new().file("ids.txt", b"1 2 3");
    let flags = [
        "-m",
        "-z",
        "-i",
        "-f",
        "-n",
        "-t",
        "-p",
        "-k",
        "-s",
        "-y",
        "-o",
        "--threads",
        "--ctx",
        "--kv",
        "--isa",
        "--beams",
        "--stop",
        "--template",
        "--tokens",
        "--type",
        "--chat",
        "--bos",
        "--json",
        "--scalar",
        "--format",
        "--prompt-tokens",
    ];
    let commands = [
        "logits -m model.bin --tokens ids.txt -o o",
        "tokenize -z tok.bin -i hello",
        "inspect -m model.bin",
        "quantize model.bin q --type f16 -z tok.bin",
        "convert model.bin q -z tok.bin",
    ]
    .map(words);
    let commands = [&RUN[..]]
        .into_iter()
        .chain(commands.iter().map(Vec::as_slice));
    for command in commands {
        for flag in flags {
            for value in [&[][..], &["x"], &["-1"], &["99999999999999999999999"]] {
                let args = [command, &[flag], value, &["-n", "4"]].concat();
                let (code, _, err) = host.run(&args);
                assert!((0..=4).contains(&code), "{args:?}: {code}");
                assert!(code == 0 || err.lines().count() == 1, "{args:?}: {err}");
            }
        }
    }
}
