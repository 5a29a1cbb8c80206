//! The macOS host on whichever OS runs the tests, so that its mapping path
//! (`madvise` and a read of every page, not `MAP_POPULATE`) is checked in
//! Linux CI. Off macOS the crate builds no `barellama`, so this test
//! executable stands in for it: started with `BARELLAMA_HOST` set, it is
//! the command line of the host that names. No test harness, so that
//! `main` can be that command line.

use std::path::Path;
use std::process::{Command, Output};

use barellama_core::cli;
use barellama_core::hosted::CountingAlloc;
use barellama_tests::{data_dir, diff, Golden, TempDir};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// The variable that turns this executable into a host's command line.
const HOST: &str = "BARELLAMA_HOST";

/// `barellama ARGS` on `host`: "macos", or "linux" on Linux.
fn barellama(host: &str, args: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("the test executable");
    let o = Command::new(exe).env(HOST, host).args(args).output();
    o.expect("the test executable runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `models/NAME` in the data directory.
fn model(dir: &Path, name: &str) -> String {
    s(&dir.join("models").join(name)).to_owned()
}

fn stdout(o: &Output) -> &str {
    std::str::from_utf8(&o.stdout).expect("stdout is UTF-8")
}

/// Teacher-forced logits from the macOS host, in this process, against
/// llama2.c's.
fn logits_match_llama2c(dir: &Path) {
    let tmp = TempDir::new("macos-logits");
    let golden = Golden::read(dir, "golden/stories260K.sun.l2c.bin");
    let ids: Vec<String> = golden.tokens.iter().map(u32::to_string).collect();
    let (tokens, out) = (tmp.path("ids.txt"), tmp.path("out.bin"));
    std::fs::write(&tokens, ids.join(" ")).unwrap();
    let m = model(dir, "stories260K.bin");
    let args = ["logits", "-m", &m, "--tokens", s(&tokens), "-o", s(&out)];
    let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    assert_eq!(cli::main(&barellama_macos::host(&ALLOC), &argv), 0);
    let ours = Golden::parse(&std::fs::read(&out).unwrap());
    assert_eq!(ours.tokens, golden.tokens);
    let (max, _) = diff(&ours.logits, &golden.logits);
    assert!(max <= 2e-3, "max |Δlogit| {max}");
}

/// The prompt's ids as llama2.c encoded them, and the exit codes of
/// DESIGN.md, each error on one line of stderr.
fn tokenize_and_exit_codes(dir: &Path) {
    let golden = Golden::read(dir, "golden/stories260K.once.l2c.bin");
    let prompt: Vec<String> = golden.tokens[..golden.n_prompt]
        .iter()
        .map(u32::to_string)
        .collect();
    let z = model(dir, "tok512.bin");
    let o = barellama(
        "macos",
        &["tokenize", "-z", &z, "-i", "Once upon a time", "--bos"],
    );
    assert_eq!(stdout(&o), prompt.join(" ") + "\n");

    let missing = model(dir, "missing.bin");
    for (args, code) in [
        (&["run", "-m", &missing, "-z", &z][..], 3),
        (&["inspect", "-m", s(dir)][..], 3),
        (&["run", "-n"][..], 2),
    ] {
        let o = barellama("macos", args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.starts_with("barellama: ") && err.lines().count() == 1);
    }
}

/// `bench` reports the peak RSS that `getrusage` gives, in megabytes.
fn bench_reports_peak_rss(dir: &Path) {
    let (m, z) = (model(dir, "stories260K.bin"), model(dir, "tok512.bin"));
    let o = barellama("macos", &["bench", "-m", &m, "-z", &z, "-n", "8", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json = stdout(&o);
    let (_, rss) = json.split_once("\"rss_mb\":").expect(json);
    let rss: f64 = rss.split(',').next().unwrap().parse().expect(json);
    // The model and the executable alone are more than a megabyte.
    assert!(rss > 1.0, "{json}");
}

/// The macOS host prints what the Linux host prints, byte for byte.
#[cfg(target_os = "linux")]
fn same_output_as_the_linux_host(dir: &Path) {
    let (m, z) = (model(dir, "stories260K.bin"), model(dir, "tok512.bin"));
    let run = ["run", "-m", &m, "-z", &z, "-i", "Once upon a time"];
    let greedy = [&run[..], &["-t", "0", "-n", "150"]].concat();
    let sampled = [&run[..], &["-s", "7", "--threads", "2"]].concat();
    for args in [
        &greedy[..],
        &sampled,
        &["inspect", "-m", &m],
        &["tokenize", "-z", &z, "-i", "Lily and Ben"][..],
    ] {
        let (mac, linux) = (barellama("macos", args), barellama("linux", args));
        assert!(mac.status.success(), "{args:?}");
        assert_eq!(mac.status.code(), linux.status.code(), "{args:?}");
        assert_eq!(stdout(&mac), stdout(&linux), "{args:?}");
    }
}

fn main() {
    match std::env::var(HOST).as_deref() {
        Ok("macos") => std::process::exit(barellama_macos::main(&ALLOC)),
        #[cfg(target_os = "linux")]
        Ok("linux") => std::process::exit(barellama_linux::main(&ALLOC)),
        Ok(other) => panic!("{HOST}={other}: no such host here"),
        Err(_) => {}
    }
    let Some(dir) = data_dir() else { return };
    logits_match_llama2c(&dir);
    tokenize_and_exit_codes(&dir);
    bench_reports_peak_rss(&dir);
    #[cfg(target_os = "linux")]
    same_output_as_the_linux_host(&dir);
    println!("host-macos cli: ok");
}
