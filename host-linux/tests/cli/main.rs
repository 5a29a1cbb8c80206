//! The `barellama` binary end to end: outputs against the references, exit
//! codes of DESIGN.md, and one-line errors without backtraces. One test
//! executable: what running the binary takes is written once, here.

mod chat;
mod commands;
mod habits;
mod quantize;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use barellama_tests::data_dir;

/// Runs `barellama args…` with `input` on standard input.
fn barellama<A: AsRef<OsStr>>(args: &[A], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_barellama"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("barellama runs");
    // The process may exit before reading everything: ignore broken pipes.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// stdout, which must be UTF-8.
fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

/// stdout and stderr of a run that must succeed.
fn ok<A: AsRef<OsStr> + std::fmt::Debug>(args: &[A], input: &[u8]) -> (String, String) {
    let o = barellama(args, input);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    (stdout(&o), err)
}

/// Fails unless the run exits with `code` after exactly one line on
/// stderr, an error without a panic; returns stdout and that line.
fn fails<A: AsRef<OsStr> + std::fmt::Debug>(
    args: &[A],
    input: &[u8],
    code: i32,
) -> (String, String) {
    let o = barellama(args, input);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: stderr:\n{err}");
    assert!(
        err.starts_with("barellama: ") && !err.contains("panicked"),
        "{err}"
    );
    (stdout(&o), err)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The test data: `None` (after a note) when it is missing.
struct Data(PathBuf);

impl Data {
    fn new() -> Option<Data> {
        data_dir().map(Data)
    }

    /// `models/NAME`.
    fn model(&self, name: &str) -> PathBuf {
        self.0.join("models").join(name)
    }

    /// `run -m stories260K.bin -z tok512.bin`, then `extra`.
    fn run(&self, extra: &[&str]) -> Vec<String> {
        let (m, z) = (self.model("stories260K.bin"), self.model("tok512.bin"));
        let base = ["run", "-m", s(&m), "-z", s(&z)];
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    }
}
