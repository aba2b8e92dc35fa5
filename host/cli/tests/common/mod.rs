//! Running the real `wf-host` binary: start an app, find where it listens, talk HTTP/1.1 over a
//! plain socket, and read the process's resident memory and open files.

#![allow(dead_code)] // each suite uses the part it needs

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn wf_host() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wf-host"));
    command.current_dir(root()).env_remove("RUST_LOG");
    command
}

/// A `wf-host run` child, killed when dropped.
pub struct Running {
    pub child: Child,
    /// Every server's address, from the `listening` log lines.
    pub address: String,
    /// Later stderr lines.
    pub log: Receiver<String>,
    /// The data directory made for this run (when the caller gave none), removed on drop.
    _data: Option<TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.child.id(), "VmRSS:")
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Threads of the process.
    pub fn threads(&self) -> u64 {
        proc_status_field(self.child.id(), "Threads:")
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn terminate(mut self, limit: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn proc_status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// Starts `wf-host run` with `args` and waits (at most 60 s) for its first `listening` line.
/// Unless `envs` or `args` name a data directory, the run gets a fresh one of its own, so tests
/// running the same example at once do not share one.
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut command = wf_host();
    command
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let named = envs.iter().any(|(k, _)| *k == "WF_DATA_DIR")
        || args.iter().any(|a| a.starts_with("--data-dir"));
    let data = (!named).then(|| {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempDir::new(&format!("data-{n}"))
    });
    if let Some(data) = &data {
        command.env("WF_DATA_DIR", &data.0);
    }
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("wf-host starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let address = loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            panic!(
                "no `listening` log line; stderr so far:\n{}",
                seen.join("\n")
            );
        };
        if let Some(i) = line.find("address=") {
            break line[i + "address=".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        seen.push(line);
    };
    Running {
        child,
        address,
        log: rx,
        _data: data,
    }
}

/// One HTTP/1.1 request over a fresh connection; returns the status and the body.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Writes `yaml` as `app.yaml` in `dir`; its path.
pub fn app_file(dir: &TempDir, yaml: impl AsRef<str>) -> PathBuf {
    let path = dir.0.join("app.yaml");
    std::fs::write(&path, yaml.as_ref()).expect("the app file is written");
    path
}

/// `wf-host run-pipeline APP PIPELINE --input INPUT`: whether it succeeded, and its stderr.
pub fn run_pipeline(app: &Path, pipeline: &str, input: &serde_json::Value) -> (bool, String) {
    let output = wf_host()
        .arg("run-pipeline")
        .arg(app)
        .arg(pipeline)
        .arg("--input")
        .arg(input.to_string())
        .output()
        .expect("wf-host runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("wf-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
