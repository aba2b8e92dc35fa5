//! `wf-plugin`: create, build, test, inspect and push wf WebAssembly components.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use wf_wasm::component::{CallInfo, ComponentKind, ComponentSpec, LoadedComponent, StepOutcome};
use wf_wasm::{CallError, HostServices, Limits, Runtime, RuntimeConfig};

const TARGET: &str = "wasm32-wasip2";

#[derive(Parser)]
#[command(
    name = "wf-plugin",
    version,
    about = "Create, build, test, inspect and push wf WebAssembly components",
    after_help = "Examples:\n  wf-plugin new greeter --kind step\n  wf-plugin build --path greeter\n  wf-plugin test --path greeter\n  wf-plugin push greeter --host http://127.0.0.1:8080"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Step,
    Module,
    Trigger,
}

#[derive(Subcommand)]
enum Command {
    /// Create a component project that builds out of the box.
    #[command(after_help = "Example:\n  wf-plugin new greeter --kind step --dir /tmp")]
    New {
        /// The component's name (also its step type name).
        name: String,
        /// Which world the component implements.
        #[arg(long, value_enum, default_value = "step")]
        kind: Kind,
        /// Parent directory of the new project.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the component in release mode for wasm32-wasip2 and check it against the WIT.
    #[command(after_help = "Example:\n  wf-plugin build --path /tmp/greeter")]
    Build {
        /// The component project's directory.
        #[arg(long, default_value = ".")]
        path: PathBuf,
    },
    /// Build, then run the fixture cases in `tests/*.json` in the real host runtime.
    #[command(
        after_help = "A case file: {\"input\": {...}, \"config\": {...}, \"expect\": {...}}\nor, for a failure: {\"input\": {...}, \"error\": \"invalid-input\", \"message_contains\": \"...\"}.\n`expect` must be contained in the step's output. For a module component, add \"operation\": \"NAME\"; for a trigger, \"input\" is the event payload (\"source\": index, default 0) and the output is {\"starts\": [{\"pipeline\", \"data\"}]}.\n\nExample:\n  wf-plugin test --path hello"
    )]
    Test {
        /// The component project's directory.
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// Test this .wasm instead of building the project.
        #[arg(long)]
        wasm: Option<PathBuf>,
    },
    /// Show what a component says about itself, what it imports and exports.
    #[command(after_help = "Example:\n  wf-plugin inspect hello.wasm")]
    Inspect {
        /// The .wasm component.
        file: PathBuf,
    },
    /// Upload a component to a running wf-host (its `wasm.components` API).
    #[command(
        after_help = "Examples:\n  wf-plugin push ./greeter --host http://127.0.0.1:8080\n  wf-plugin push greeter.wasm --host http://127.0.0.1:8080 --token $WF_ADMIN_TOKEN"
    )]
    Push {
        /// The .wasm component, or a component project's folder (what `build` made there).
        file: PathBuf,
        /// Base URL of the wf-host serving the components API.
        #[arg(long, env = "WF_HOST_URL")]
        host: String,
        /// The name to install it under (must match its `describe`); by default what it says.
        #[arg(long)]
        name: Option<String>,
        /// Bearer token of the API.
        #[arg(long, env = "WF_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Grant as JSON: {"config": {...}, "capabilities": {...}, "limits": {...}}.
        #[arg(long)]
        grant: Option<String>,
        /// API path prefix.
        #[arg(long, default_value = "/api/dynamic/components")]
        prefix: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::New { name, kind, dir } => {
            new_project(&name, kind, &dir).map(|_| ExitCode::SUCCESS)
        }
        Command::Build { path } => build(&path).await.map(|_| ExitCode::SUCCESS),
        Command::Test { path, wasm } => test(&path, wasm).await,
        Command::Inspect { file } => inspect(&file).await.map(|_| ExitCode::SUCCESS),
        Command::Push {
            file,
            host,
            name,
            token,
            grant,
            prefix,
        } => push(&file, &host, name, token, grant, &prefix).await,
    }
}

/// Where the wf-sdk crate is: `WF_SDK_PATH`, else next to this tool's sources.
fn sdk_path() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("WF_SDK_PATH") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../rust"),
    };
    path.canonicalize().with_context(|| {
        format!(
            "the wf-sdk crate is not at `{}`; set WF_SDK_PATH to the sdk/rust directory of a wf checkout",
            path.display()
        )
    })
}

fn new_project(name: &str, kind: Kind, dir: &Path) -> anyhow::Result<()> {
    wf_wasm::component::check_name(name).map_err(anyhow::Error::msg)?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "`{}` already exists; build it with `wf-plugin build --path {}`, or pick another name or `--dir`",
            root.display(),
            root.display()
        );
    }
    let sdk = sdk_path()?;
    let crate_name = name.replace('.', "-");
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::create_dir_all(root.join("tests"))?;
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
wf-sdk = {{ path = "{sdk}" }}

# A project of its own, even inside another workspace.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
"#,
            sdk = sdk.display()
        ),
    )?;
    let (template, case, what) = match kind {
        Kind::Step => (
            STEP_TEMPLATE,
            Some((
                "greets",
                json!({"input": {"name": "ada"}, "expect": {"message": "hello, ada"}}),
            )),
            "a step component",
        ),
        Kind::Module => (
            MODULE_TEMPLATE,
            Some((
                "count",
                json!({"operation": "count", "input": {}, "expect": {"calls": 1}}),
            )),
            "a module component",
        ),
        Kind::Trigger => (
            TRIGGER_TEMPLATE,
            Some((
                "hook",
                json!({"input": {"body": {"id": 1}}, "expect": {"starts": [{"pipeline": "handle-hook", "data": {"hook": {"id": 1}}}]}}),
            )),
            "a trigger component",
        ),
    };
    std::fs::write(root.join("src/lib.rs"), template.replace("NAME", name))?;
    if let Some((case, body)) = case {
        std::fs::write(
            root.join(format!("tests/{case}.json")),
            serde_json::to_string_pretty(&body)?,
        )?;
    }
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    println!(
        "created {} ({what}); next: wf-plugin build --path {}",
        root.display(),
        root.display()
    );
    Ok(())
}

const STEP_TEMPLATE: &str = r#"//! The `NAME` step.

use wf_sdk::prelude::*;

struct Component;

impl Step for Component {
    fn info() -> Info {
        Info::new("NAME", "Greets whoever the input names")
    }

    fn run(input: Value, _ctx: &Ctx) -> Result<Output, StepError> {
        let who = input["name"].as_str().unwrap_or("world");
        Ok(json!({ "message": format!("hello, {who}") }).into())
    }
}

export_step!(Component);

#[cfg(test)]
mod tests {
    use super::*;
    use wf_sdk::testing::Harness;

    #[test]
    fn greets() {
        let out = Harness::new().run::<Component>(json!({"name": "ada"})).unwrap();
        assert_eq!(out, Output::Next(json!({"message": "hello, ada"})));
    }
}
"#;

const MODULE_TEMPLATE: &str = r#"//! The `NAME` module component: one long-lived instance, started with the app; steps call its
//! operations with `step.wasm` + `operation:`.

use wf_sdk::prelude::*;

struct Component {
    calls: u64,
}

impl Module for Component {
    fn info() -> Info {
        Info::new("NAME", "Counts the calls made to it")
    }

    fn start(_ctx: &Ctx) -> Result<Self, StepError> {
        Ok(Component { calls: 0 })
    }

    fn invoke(&mut self, operation: &str, _input: Value, _ctx: &Ctx) -> Result<Value, StepError> {
        match operation {
            "count" => {
                self.calls += 1;
                Ok(json!({ "calls": self.calls }))
            }
            other => Err(StepError::invalid_input(format!("unknown operation `{other}`"))),
        }
    }
}

export_module!(Component);

#[cfg(test)]
mod tests {
    use super::*;
    use wf_sdk::testing::Harness;

    #[test]
    fn counts() {
        let harness = Harness::new();
        let mut module = harness.start::<Component>().unwrap();
        assert_eq!(harness.invoke(&mut module, "count", json!({})).unwrap(), json!({"calls": 1}));
    }
}
"#;

const TRIGGER_TEMPLATE: &str = r#"//! The `NAME` trigger component: wf watches the sources it declares and starts the pipelines
//! its `on_event` names.

use wf_sdk::prelude::*;

struct Component;

impl Trigger for Component {
    fn info() -> Info {
        Info::new("NAME", "Starts the `handle-hook` pipeline for every POST /hooks/NAME")
    }

    fn sources(_ctx: &Ctx) -> Vec<Source> {
        vec![Source::HttpRoute { method: "POST".into(), path: "/hooks/NAME".into() }]
    }

    fn on_event(event: Event, _ctx: &Ctx) -> Result<Vec<Start>, StepError> {
        // `event.payload` is {method, path, query, headers, body}.
        Ok(vec![Start::new("handle-hook", json!({ "hook": event.payload["body"] }))])
    }
}

export_trigger!(Component);

#[cfg(test)]
mod tests {
    use super::*;
    use wf_sdk::testing::Harness;

    #[test]
    fn starts_a_run_per_hook() {
        let starts = Harness::new().on_event::<Component>(0, json!({"body": {"id": 1}})).unwrap();
        assert_eq!(starts, vec![Start::new("handle-hook", json!({"hook": {"id": 1}}))]);
    }
}
"#;

/// `cargo metadata` facts about the project at `path`.
struct Project {
    package: String,
    target_dir: PathBuf,
}

fn project(path: &Path) -> anyhow::Result<Project> {
    let manifest = path.join("Cargo.toml");
    let output = Process::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("cannot run cargo: is Rust installed (https://rustup.rs)?")?;
    if !output.status.success() {
        bail!(
            "`{}` is not a Rust project: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let meta: Value = serde_json::from_slice(&output.stdout)?;
    let wanted = manifest.canonicalize()?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).canonicalize().ok())
                .as_ref()
                == Some(&wanted)
        })
        .and_then(|p| p["name"].as_str())
        .ok_or_else(|| {
            anyhow::anyhow!("run it in a component's directory (one with a [package] Cargo.toml)")
        })?;
    Ok(Project {
        package: package.to_string(),
        target_dir: PathBuf::from(meta["target_directory"].as_str().unwrap_or("target")),
    })
}

fn ensure_target() {
    let installed = Process::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(true);
    if !installed {
        eprintln!("installing the {TARGET} target (rustup target add {TARGET})");
        let _ = Process::new("rustup")
            .args(["target", "add", TARGET])
            .status();
    }
}

/// Where `cargo build` puts a project's component.
fn built_wasm(project: &Project) -> PathBuf {
    project
        .target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", project.package.replace('-', "_")))
}

async fn build(path: &Path) -> anyhow::Result<PathBuf> {
    let project = project(path)?;
    ensure_target();
    eprintln!(
        "building {} for {TARGET} (the first build of a project takes a few minutes)",
        project.package
    );
    let mut cargo = Process::new("cargo");
    cargo
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(path.join("Cargo.toml"));
    // Small, fast components unless the project says otherwise.
    for (key, value) in [
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s"),
        ("CARGO_PROFILE_RELEASE_LTO", "true"),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
        ("CARGO_PROFILE_RELEASE_STRIP", "true"),
    ] {
        if std::env::var_os(key).is_none() {
            cargo.env(key, value);
        }
    }
    let status = cargo.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let wasm = built_wasm(&project);
    let bytes =
        std::fs::read(&wasm).with_context(|| format!("cargo built no `{}`", wasm.display()))?;
    let component = LoadedComponent::inspect(&runtime().await?, Arc::new(bytes.clone())).await?;
    println!(
        "built {} {} ({}): {} ({} KiB, sha256 {})",
        component.info.name,
        component.info.version,
        kind_name(component.kind),
        wasm.display(),
        bytes.len().div_ceil(1024),
        component.digest
    );
    Ok(wasm)
}

async fn runtime() -> anyhow::Result<Arc<Runtime>> {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        max_instances: 16,
        pooling: false,
    })
}

async fn load(bytes: Vec<u8>, config: Map<String, Value>) -> anyhow::Result<LoadedComponent> {
    let runtime = runtime().await?;
    let spec = ComponentSpec {
        bytes: Arc::new(bytes),
        config,
        capabilities: Default::default(),
        limits: Limits::default(),
        services: HostServices::default(),
    };
    Ok(LoadedComponent::load(&runtime, spec).await?)
}

fn kind_name(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Step => "step",
        ComponentKind::Module => "module",
        ComponentKind::Trigger => "trigger",
    }
}

/// Whether every key of `expected` is in `actual` with a value that contains it in turn.
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev))
        }
        _ => actual == expected,
    }
}

async fn test(path: &Path, wasm: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let wasm = match wasm {
        Some(w) => w,
        None => build(path).await?,
    };
    let bytes =
        std::fs::read(&wasm).with_context(|| format!("cannot read `{}`", wasm.display()))?;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(path.join("tests"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    cases.sort();
    if cases.is_empty() {
        bail!("no test cases: add `tests/<case>.json` files (see `wf-plugin test --help`)");
    }
    let component = load(bytes, Map::new()).await?;
    let mut failed = 0;
    for case_path in &cases {
        let name = case_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(case_path)?)
            .with_context(|| format!("`{}` is not JSON", case_path.display()))?;
        let call = CallInfo {
            pipeline: "wf-plugin-test".into(),
            run_id: name.clone(),
            step: name.clone(),
            attempt: 1,
            trace_parent: None,
            config: Arc::new(case["config"].as_object().cloned().unwrap_or_default()),
            budget: None,
        };
        // Steps run; module components get `operation` invoked (after `start`); trigger
        // components get `input` as an event on source `source` (0 by default), and their
        // output is `{"starts": [{"pipeline", "data"}, ...]}`.
        let result = match case.get("operation").and_then(Value::as_str) {
            Some(operation) => match component.start_module().await {
                Ok(()) => component.invoke(&call, operation, &case["input"]).await,
                Err(e) => Err(e),
            },
            None if component.kind == ComponentKind::Trigger => {
                let source = case["source"].as_u64().unwrap_or(0) as u32;
                component
                    .on_event(source, &case["input"])
                    .await
                    .map(|starts| {
                        let starts: Vec<Value> = starts
                            .into_iter()
                            .map(|s| json!({"pipeline": s.pipeline, "data": s.data}))
                            .collect();
                        let mut out = Map::new();
                        out.insert("starts".into(), Value::Array(starts));
                        out
                    })
            }
            None => component
                .run_step(&call, &case["input"])
                .await
                .map(|outcome| match outcome {
                    StepOutcome::Next(out)
                    | StepOutcome::Stop(out)
                    | StepOutcome::Branch(_, out) => out,
                }),
        };
        let verdict = match (&result, case.get("error").and_then(Value::as_str)) {
            (Ok(out), None) => {
                let out = Value::Object(out.clone());
                let expected = case.get("expect").cloned().unwrap_or(json!({}));
                if contains(&out, &expected) {
                    Ok(())
                } else {
                    Err(format!("output {out} does not contain {expected}"))
                }
            }
            (Ok(_), Some(kind)) => Err(format!("expected a `{kind}` error, got success")),
            (Err(e), None) => Err(format!("failed: {e}")),
            (Err(e), Some(kind)) => {
                let actual = match e {
                    CallError::Guest { kind, .. } => serde_json::to_value(kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    CallError::LimitExceeded { .. } => "limit-exceeded".into(),
                    CallError::Trap { .. } => "trap".into(),
                    CallError::Host(_) | CallError::Busy(_) => "host".into(),
                };
                let needle = case
                    .get("message_contains")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if actual != kind {
                    Err(format!("expected a `{kind}` error, got `{actual}`: {e}"))
                } else if !e.to_string().contains(needle) {
                    Err(format!("the error `{e}` does not contain `{needle}`"))
                } else {
                    Ok(())
                }
            }
        };
        match verdict {
            Ok(()) => println!("ok    {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL  {name}: {why}");
            }
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn inspect(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let runtime = runtime().await?;
    let (imports, exports) = wf_wasm::component::interface_names(&runtime, &bytes).await?;
    let component = LoadedComponent::inspect(&runtime, Arc::new(bytes)).await?;
    let out = json!({
        "sources": component.sources,
        "name": component.info.name,
        "version": component.info.version,
        "description": component.info.description,
        "kind": component.kind,
        "sha256": component.digest,
        "size": component.size,
        "requested_capabilities": component.info.capabilities,
        "config_schema": component.info.config_schema,
        "input_schema": component.info.input_schema,
        "output_schema": component.info.output_schema,
        "imports": imports,
        "exports": exports,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn push(
    file: &Path,
    host: &str,
    name: Option<String>,
    token: Option<String>,
    grant: Option<String>,
    prefix: &str,
) -> anyhow::Result<ExitCode> {
    // A project folder: what `wf-plugin build` made there.
    let file = if file.is_dir() {
        let wasm = built_wasm(&project(file)?);
        if !wasm.is_file() {
            bail!(
                "`{}` has not been built: run `wf-plugin build --path {}` first",
                file.display(),
                file.display()
            );
        }
        wasm
    } else {
        file.to_path_buf()
    };
    let bytes =
        std::fs::read(&file).with_context(|| format!("cannot read `{}`", file.display()))?;
    if let Some(grant) = &grant {
        serde_json::from_str::<Value>(grant).context("--grant is not JSON")?;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut url = format!("{}{}", host.trim_end_matches('/'), prefix);
    if let Some(name) = &name {
        url.push_str(&format!("?name={name}"));
    }
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/wasm")
        .body(bytes);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(grant) = grant {
        request = request.header("x-wf-grant", grant);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        println!(
            "{} {} {} is live (revision {}, sha256 {})",
            if status.as_u16() == 201 {
                "pushed:"
            } else {
                "unchanged:"
            },
            body["name"].as_str().unwrap_or("?"),
            body["version"].as_str().unwrap_or("?"),
            body["revision"],
            body["digest"].as_str().unwrap_or("?")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {status}: {}",
            body["error"].as_str().unwrap_or("(no details)")
        );
        Ok(ExitCode::FAILURE)
    }
}
