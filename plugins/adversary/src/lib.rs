//! Test fixture: a step that misbehaves on request, so the sandbox tests can show that each
//! limit and each capability holds. `input.mode` picks the misbehaviour.

use wf_sdk::prelude::*;
use wf_sdk::{HttpRequest, Level};

struct Adversary;

impl Step for Adversary {
    fn info() -> Info {
        Info::new("adversary", "Misbehaves on request (sandbox test fixture)")
    }

    fn run(input: Value, ctx: &Ctx) -> Result<Output, StepError> {
        let arg = input["arg"].as_str().unwrap_or_default().to_string();
        match input["mode"].as_str().unwrap_or_default() {
            "echo" => Ok(json!({
                "echo": input,
                "config": ctx.config(),
                "step": ctx.invocation().step,
                "pipeline": ctx.invocation().pipeline,
            })
            .into()),
            "recurse" => Ok(json!({ "depth": recurse(std::hint::black_box(0)) }).into()),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => {
                eprintln!("about to fail on purpose");
                panic!("adversary panicked on purpose")
            }
            "big-output" => Ok(json!({ "blob": "x".repeat(4 << 20) }).into()),
            "read-file" => match std::fs::read_to_string(&arg) {
                Ok(text) => Ok(json!({ "read": text }).into()),
                Err(e) => Err(StepError::denied(format!("read {arg}: {e}"))),
            },
            "list-dir" => match std::fs::read_dir(&arg) {
                Ok(entries) => Ok(json!({ "entries": entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>() }).into()),
                Err(e) => Err(StepError::denied(format!("list {arg}: {e}"))),
            },
            "write-file" => match std::fs::write(&arg, b"pwned") {
                Ok(()) => Ok(json!({ "wrote": arg }).into()),
                Err(e) => Err(StepError::denied(format!("write {arg}: {e}"))),
            },
            "connect" => match std::net::TcpStream::connect(arg.as_str()) {
                Ok(_) => Ok(json!({ "connected": arg }).into()),
                Err(e) => Err(StepError::denied(format!("connect {arg}: {e}"))),
            },
            "env" => Ok(json!({ "value": std::env::var(&arg).ok(), "all": std::env::vars().count() }).into()),
            "http" => {
                let response = ctx.http(HttpRequest::get(arg))?;
                Ok(json!({ "status": response.status, "body": String::from_utf8_lossy(&response.body) }).into())
            }
            "http-host" => {
                let mut request = HttpRequest::get(arg);
                request.headers.push(("Host".into(), "internal-admin.corp".into()));
                let response = ctx.http(request)?;
                Ok(json!({ "status": response.status }).into())
            }
            "state" => {
                let revision = ctx.state_set(&arg, "counter", &json!(1))?;
                let entry = ctx.state_get(&arg, "counter")?;
                Ok(json!({ "revision": revision, "value": entry.map(|e| e.value) }).into())
            }
            "state-get" => {
                let entry = ctx.state_get(&arg, "counter")?;
                Ok(json!({ "value": entry.map(|e| e.value) }).into())
            }
            "publish" => {
                ctx.publish(&arg, &json!({ "from": "adversary" }))?;
                Ok(json!({ "published": arg }).into())
            }
            "log" => {
                ctx.log(Level::Warn, format!("adversary says {arg}"));
                Ok(json!({ "logged": true }).into())
            }
            // Floods of what the host keeps on a component's behalf (#29): `count` writes of a
            // `kib`-KiB value under distinct keys, publishes of such payloads, log lines.
            "flood-state" => {
                let value = json!("s".repeat(kib(&input) << 10));
                for i in 0..count(&input) {
                    ctx.state_set(&arg, &format!("key-{i}"), &value)?;
                }
                Ok(json!({ "flooded": "state" }).into())
            }
            "flood-events" => {
                let payload = json!({ "blob": "e".repeat(kib(&input) << 10) });
                for _ in 0..count(&input) {
                    ctx.publish(&arg, &payload)?;
                }
                Ok(json!({ "flooded": "events" }).into())
            }
            "flood-logs" => {
                let line = format!("{arg}{}", "l".repeat(kib(&input) << 10));
                for _ in 0..count(&input) {
                    ctx.log(Level::Warn, &line);
                }
                Ok(json!({ "flooded": "logs" }).into())
            }
            "huge-error" => Err(StepError::internal("e".repeat(kib(&input) << 10))),
            "fail" => Err(StepError::unavailable(format!("failing on purpose: {arg}"))),
            "branch" => Ok(Output::Branch { target: arg, output: json!({ "branched": true }) }),
            "now" => Ok(json!({ "now_ms": ctx.now_ms() }).into()),
            other => Err(StepError::invalid_input(format!("unknown mode `{other}`"))),
        }
    }
}

/// Recursion with no end: a stack overflow.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let deeper = recurse(std::hint::black_box(depth + 1));
    std::hint::black_box(deeper) + 1
}

fn kib(input: &Value) -> usize {
    input["kib"].as_u64().unwrap_or(1) as usize
}

fn count(input: &Value) -> u64 {
    input["count"].as_u64().unwrap_or(1)
}

export_step!(Adversary);
