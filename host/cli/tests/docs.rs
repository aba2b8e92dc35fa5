//! The documentation is executed (issue #27): every ```` ```console ```` block of README.md,
//! docs/cli.md and docs/plugins.md runs, block after block, in one shell per document — as a
//! reader would type them — and what each command prints must match what the document shows.
//!
//! The format is trycmd's: a line `$ COMMAND` runs it; the lines after it, up to the next `$`,
//! are what it prints (standard output and error together). In them `[..]` stands for any text
//! within a line and a line `...` for any number of lines. A first line `[exit N]` expects that
//! exit code (otherwise 0). A command ending in `&` runs in the background (its output goes to
//! a log), and the next command waits until it has logged `ready`.
//!
//! Each document runs in a network namespace of its own (the apps of the tour listen on port
//! 8080, some on every interface as the original's configs do), with `wf-host` and `wf-plugin`
//! of this build first on the `PATH`, as `make install` would put them. `WF_DOCS_SHOW=1` prints
//! what every command printed, to write a document's expectations from.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::root;

/// Longest a command may run (a first component build included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest a background app may take to log `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The `$` commands of a document's console blocks, with what each must print.
fn steps(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if !in_console {
            in_console = trimmed == "```console";
            continue;
        }
        if trimmed == "```" {
            in_console = false;
        } else if let Some(command) = trimmed.strip_prefix("$ ") {
            steps.push(Step {
                line: i + 1,
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(trimmed.to_string());
        }
    }
    steps
}

/// Whether `actual` matches `pattern`, where `[..]` is any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let Some(rest) = actual.strip_prefix(parts[0]) else {
        return false;
    };
    let last = parts[parts.len() - 1];
    let mut rest = rest;
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `actual` lines match `expected`, where a line `...` is any number of lines.
fn lines_match(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && lines_match(rest, more)),
    }
}

/// A network namespace with its loopback up, deleted on drop.
struct Namespace(String);

impl Namespace {
    fn create(name: &str) -> Option<Namespace> {
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", name]) {
            return None;
        }
        let namespace = Namespace(name.to_string());
        ok(&["netns", "exec", name, "ip", "link", "set", "lo", "up"]).then_some(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One bash session, fed commands on its standard input.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    output: Receiver<String>,
    logs: PathBuf,
    backgrounds: usize,
    count: usize,
}

impl Drop for Shell {
    fn drop(&mut self) {
        // The apps the document left running, then the shell.
        let _ = writeln!(self.stdin, "kill $(jobs -p) 2>/dev/null; exit");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// Where this build's binaries are: beside `wf-host`.
fn bin_dir() -> PathBuf {
    let host = PathBuf::from(env!("CARGO_BIN_EXE_wf-host"));
    let dir = host.parent().unwrap().to_path_buf();
    assert!(
        dir.join("wf-plugin").is_file(),
        "`wf-plugin` is not built beside `{}`: run `cargo build -p wf-plugin` (make test builds it)",
        host.display()
    );
    dir
}

impl Shell {
    fn start(namespace: &Namespace, logs: &Path) -> Shell {
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &namespace.0,
                "bash",
                "--noprofile",
                "--norc",
            ])
            .current_dir(root())
            .env("PATH", path)
            // No network in the namespace: cargo resolves from its local cache.
            .env("CARGO_NET_OFFLINE", "true")
            .env_remove("RUST_LOG")
            .env_remove("WF_ADMIN_TOKEN")
            .env_remove("PORT")
            .env_remove("HOST")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash starts in the namespace");
        let mut stdin = child.stdin.take().unwrap();
        // Both streams of every command, in order, on one pipe.
        writeln!(stdin, "exec 2>&1").unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Shell {
            child,
            stdin,
            output,
            logs: logs.to_path_buf(),
            backgrounds: 0,
            count: 0,
        }
    }

    /// Runs `command`; what it printed and its exit code.
    fn run(&mut self, command: &str) -> Result<(Vec<String>, i32), String> {
        let background = command.strip_suffix('&').map(str::trim_end);
        let log = self
            .logs
            .join(format!("background-{}.log", self.backgrounds));
        let script = match background {
            Some(command) => {
                self.backgrounds += 1;
                format!("{command} > '{}' 2>&1 &", log.display())
            }
            None => command.to_string(),
        };
        self.count += 1;
        let marker = format!("__wf_docs_done_{}__", self.count);
        writeln!(self.stdin, "{script}\necho \"{marker} $?\"").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut printed = Vec::new();
        let code = loop {
            match self
                .output
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => match line.strip_prefix(&marker) {
                    Some(code) => break code.trim().parse().unwrap_or(-1),
                    None => printed.push(line.trim_end().to_string()),
                },
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("did not finish within {COMMAND_TIMEOUT:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => return Err("the shell died".into()),
            }
        };
        if background.is_some() {
            wait_until_ready(&log)?;
        }
        Ok((printed, code))
    }
}

/// Waits until a background app has logged `ready`.
fn wait_until_ready(log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(" ready ") || l.ends_with(" ready"))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the background command did not log `ready` within {READY_TIMEOUT:?}:\n{text}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a document's console blocks; every mismatch, located.
fn execute(document: &str) -> Vec<String> {
    let path = root().join(document);
    let text = std::fs::read_to_string(&path).unwrap();
    let steps = steps(&text);
    assert!(!steps.is_empty(), "{document} has no console blocks");
    let name = format!(
        "wf-docs-{}-{}",
        std::process::id(),
        document.replace(['/', '.'], "-")
    );
    let Some(namespace) = Namespace::create(&name) else {
        eprintln!(
            "skipped: {document}: cannot create a network namespace here (needs root and iproute2)"
        );
        return Vec::new();
    };
    let logs = std::env::temp_dir().join(&name);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    let show = std::env::var_os("WF_DOCS_SHOW").is_some();
    let mut failures = Vec::new();
    {
        let mut shell = Shell::start(&namespace, &logs);
        for step in &steps {
            let (printed, code) = match shell.run(&step.command) {
                Ok(result) => result,
                Err(e) => {
                    failures.push(format!("{document}:{}: `{}` {e}", step.line, step.command));
                    break;
                }
            };
            if show {
                eprintln!(
                    "$ {}\n{}{}",
                    step.command,
                    if code == 0 {
                        String::new()
                    } else {
                        format!("[exit {code}]\n")
                    },
                    printed.join("\n")
                );
            }
            let (expected_code, expected) = match step.expected.first().and_then(|l| {
                l.strip_prefix("[exit ")?
                    .strip_suffix(']')?
                    .parse::<i32>()
                    .ok()
            }) {
                Some(code) => (code, &step.expected[1..]),
                None => (0, &step.expected[..]),
            };
            if code != expected_code || !lines_match(expected, &printed) {
                failures.push(format!(
                    "{document}:{}: `{}` exited {code} (expected {expected_code}) and printed:\n{}\n--- the document shows:\n{}",
                    step.line,
                    step.command,
                    printed.join("\n"),
                    expected.join("\n")
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
    failures
}

/// What the documents leave behind, removed before each so every one starts as a newcomer
/// would: the component project the tour creates, and each example's data directory (its run
/// journal, state-machine instances and uploaded components).
fn clean_up() {
    let _ = std::fs::remove_dir_all("/tmp/greeter");
    for example in std::fs::read_dir(root().join("example")).unwrap().flatten() {
        let _ = std::fs::remove_dir_all(example.path().join(".wf"));
    }
    let _ = std::fs::remove_dir_all(root().join("../shared/seed/examples/.wf"));
    let _ = std::fs::remove_file("/tmp/broken.yaml");
}

#[test]
fn the_readme_tour_docs_cli_and_the_wasm_quick_start_do_what_they_say() {
    let mut failures = Vec::new();
    for document in ["README.md", "docs/cli.md", "docs/plugins.md"] {
        clean_up();
        failures.extend(execute(document));
    }
    clean_up();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn the_matcher_takes_wildcards_and_elisions() {
    let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(line_matches("id [..] done", "id 42 done"));
    assert!(line_matches(
        "[..]/greeter.wasm ([..] KiB)",
        "/t/greeter.wasm (160 KiB)"
    ));
    assert!(!line_matches("id [..] done", "id 42 gone"));
    assert!(line_matches("exact", "exact") && !line_matches("exact", "exactly"));
    assert!(lines_match(
        &lines(&["a", "...", "z"]),
        &lines(&["a", "b", "c", "z"])
    ));
    assert!(lines_match(&lines(&["...", "z"]), &lines(&["z"])));
    assert!(!lines_match(&lines(&["a", "z"]), &lines(&["a", "b", "z"])));
    assert!(lines_match(&lines(&[]), &lines(&[])));
    let parsed =
        steps("```console\n$ echo hi\nhi\n$ false\n[exit 1]\n```\n```sh\n$ not run\n```\n");
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].expected, ["hi"]);
    assert_eq!(parsed[1].expected, ["[exit 1]"]);
}
