//! The commands behind the CLI, usable from tests without a process.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use wf_config::{AppConfig, Diagnostics, ProcessEnv, Vars, load_files};
use wf_engine::{
    App, BuildOptions, Kind, Registry, TypeInfo, ValidatedConfig, build_with, validate,
};

/// Exit codes: the app ran and stopped cleanly, or the config is valid.
pub const EXIT_OK: u8 = 0;
/// Something failed at run time (start-up, shutdown).
pub const EXIT_FAILURE: u8 = 1;
/// The configuration (or the command line) is invalid.
pub const EXIT_INVALID: u8 = 2;

/// An app built from valid files, ready to start.
pub struct Built {
    pub config: AppConfig,
    pub app: App,
    pub warnings: Diagnostics,
}

/// Files that did not pass, with everything found.
pub struct Rejected {
    pub config: AppConfig,
    pub diagnostics: Diagnostics,
}

impl From<wf_engine::Invalid> for Rejected {
    fn from(invalid: wf_engine::Invalid) -> Self {
        Rejected {
            config: invalid.config,
            diagnostics: invalid.diagnostics,
        }
    }
}

impl Rejected {
    pub fn render(&self) -> String {
        self.diagnostics.render(&self.config.sources)
    }
}

/// What offline preparation found.
pub enum Prepared {
    Ready(Built),
    /// Valid as far as can be told without the secrets the files reference, which are fetched
    /// only when the app runs; not built, since its modules would see the references.
    AwaitingSecrets {
        config: AppConfig,
        warnings: Diagnostics,
    },
    Invalid(Rejected),
}

/// Load → validate → build, offline: no secret is fetched, nothing binds or connects.
pub fn prepare(files: &[PathBuf], registry: &Registry, vars: &dyn Vars) -> Prepared {
    let loaded = load_files(files, vars);
    let awaits_secrets = wf_config::secret_refs::any(&loaded.config);
    let validated = match validate(loaded, registry) {
        Ok(v) => v,
        Err(invalid) => return Prepared::Invalid(Rejected::from(*invalid)),
    };
    if awaits_secrets {
        let warnings = validated.warnings().clone();
        return Prepared::AwaitingSecrets {
            config: validated.into_config(),
            warnings,
        };
    }
    match build_validated(validated, registry, &BuildOptions::default()) {
        Ok(built) => Prepared::Ready(built),
        Err(rejected) => Prepared::Invalid(*rejected),
    }
}

/// Load → fetch the secrets the files reference → validate → build: the app as it will run.
pub async fn prepare_to_run(
    files: &[PathBuf],
    registry: &Registry,
    vars: &dyn Vars,
) -> Result<Built, Box<Rejected>> {
    prepare_with(files, registry, vars, &BuildOptions::default()).await
}

/// [`prepare_to_run`] with what the host gives the app (its data directory).
pub async fn prepare_with(
    files: &[PathBuf],
    registry: &Registry,
    vars: &dyn Vars,
    options: &BuildOptions,
) -> Result<Built, Box<Rejected>> {
    let loaded = wf_engine::resolve_secrets(load_files(files, vars), registry).await;
    match validate(loaded, registry) {
        Ok(validated) => build_validated(validated, registry, options),
        Err(invalid) => Err(Box::new(Rejected::from(*invalid))),
    }
}

fn build_validated(
    validated: ValidatedConfig,
    registry: &Registry,
    options: &BuildOptions,
) -> Result<Built, Box<Rejected>> {
    match build_with(&validated, registry, options) {
        Ok(app) => {
            let warnings = validated.warnings().clone();
            Ok(Built {
                config: validated.into_config(),
                app,
                warnings,
            })
        }
        Err(diagnostics) => {
            let mut all = validated.warnings().clone();
            all.extend(diagnostics);
            Err(Box::new(Rejected {
                config: validated.into_config(),
                diagnostics: all.sorted(),
            }))
        }
    }
}

/// `wf-host validate`: (exit code, output).
pub fn validate_command(files: &[PathBuf], registry: &Registry, json_output: bool) -> (u8, String) {
    validate_with(files, registry, json_output, &ProcessEnv)
}

pub fn validate_with(
    files: &[PathBuf],
    registry: &Registry,
    json_output: bool,
    vars: &dyn Vars,
) -> (u8, String) {
    let (config, diagnostics, valid, awaits_secrets) = match prepare(files, registry, vars) {
        Prepared::Ready(built) => (built.config, built.warnings, true, false),
        Prepared::AwaitingSecrets { config, warnings } => (config, warnings, true, true),
        Prepared::Invalid(rejected) => (rejected.config, rejected.diagnostics, false, false),
    };
    let code = if valid { EXIT_OK } else { EXIT_INVALID };
    if json_output {
        let out = json!({
            "valid": valid,
            "secretsFetchedAtStart": awaits_secrets,
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "summary": summary(&config),
            "errors": diagnostics.error_count(),
            "warnings": diagnostics.warning_count(),
            "diagnostics": diagnostics.to_json(&config.sources),
        });
        return (
            code,
            format!(
                "{}\n",
                serde_json::to_string_pretty(&out).unwrap_or_default()
            ),
        );
    }
    let mut out = String::new();
    if !diagnostics.is_empty() {
        out.push_str(&diagnostics.render(&config.sources));
    }
    if valid {
        let s = summary(&config);
        let _ = writeln!(
            out,
            "ok: {} ({} modules, {} workflows, {} triggers, {} pipelines)",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            s["modules"],
            s["workflows"],
            s["triggers"],
            s["pipelines"]
        );
        if awaits_secrets {
            out.push_str(
                "note: the files reference secrets, which are fetched when the app starts; \
                 the rules of the modules and steps that use them, and the build, are checked then\n",
            );
        }
    }
    (code, out)
}

fn summary(config: &AppConfig) -> Value {
    json!({
        "modules": config.modules.len(),
        "workflows": config.workflows.len(),
        "triggers": config.triggers.len(),
        "pipelines": config.pipelines.len(),
    })
}

/// `wf-host inspect`: modules in start order, routes, workflows, triggers, pipelines.
///
/// The app is built as it will run, so the secrets it references are fetched; any that shows
/// (a pipeline trigger's parameters) is masked.
pub async fn inspect_command(
    files: &[PathBuf],
    registry: &Registry,
    json_output: bool,
) -> (u8, String) {
    let (code, out) = inspect(files, registry, json_output).await;
    // Pipeline triggers are shown as declared: a value from a secret is masked.
    (code, wf_engine::redact::redact(&out).into_owned())
}

async fn inspect(files: &[PathBuf], registry: &Registry, json_output: bool) -> (u8, String) {
    let (config, app) = match prepare_to_run(files, registry, &ProcessEnv).await {
        Ok(built) => (built.config, built.app),
        Err(rejected) => return (EXIT_INVALID, rejected.render()),
    };
    let modules: Vec<Value> = app
        .start_order()
        .iter()
        .map(|(name, type_name)| {
            let decl = config.module(name);
            json!({
                "name": name,
                "type": type_name,
                "dependsOn": decl.map(|d| d.depends_on.clone()).unwrap_or_default(),
                "description": decl.and_then(|d| d.description.clone()),
            })
        })
        .collect();
    let routes = app.state().routes();
    let schedules = app.state().schedules();
    let workflows: Vec<Value> = config
        .workflows
        .iter()
        .map(|w| json!({"type": w.kind, "name": w.name}))
        .collect();
    let triggers: Vec<Value> = config
        .triggers
        .iter()
        .map(|t| json!({"type": t.kind, "name": t.name}))
        .collect();
    let pipelines: Vec<Value> = config
        .pipelines
        .iter()
        .map(|p| {
            let steps: Vec<Value> = p
                .value
                .get("steps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|s| json!({"name": s.get("name"), "type": s.get("type")}))
                .collect();
            json!({"name": p.name, "trigger": p.value.get("trigger"), "steps": steps})
        })
        .collect();
    if json_output {
        let out = json!({
            "name": config.name,
            "modules": modules,
            "routes": routes,
            "workflows": workflows,
            "triggers": triggers,
            "pipelines": pipelines,
            "schedules": schedules,
        });
        return (
            EXIT_OK,
            format!(
                "{}\n",
                serde_json::to_string_pretty(&out).unwrap_or_default()
            ),
        );
    }
    let mut out = String::new();
    if let Some(name) = &config.name {
        let _ = writeln!(out, "application: {name}\n");
    }
    let _ = writeln!(out, "modules (start order):");
    for (i, m) in modules.iter().enumerate() {
        let deps = m["dependsOn"]
            .as_array()
            .filter(|d| !d.is_empty())
            .map(|d| {
                format!(
                    "  after {}",
                    d.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        let _ = writeln!(
            out,
            "  {:>2}. {:<28} {}{}",
            i + 1,
            m["name"].as_str().unwrap_or(""),
            m["type"].as_str().unwrap_or(""),
            deps.unwrap_or_default()
        );
    }
    let _ = writeln!(out, "\nroutes:");
    if routes.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for r in &routes {
        let chain = if r.middlewares.is_empty() {
            String::new()
        } else {
            format!(" via {}", r.middlewares.join(" → "))
        };
        let _ = writeln!(
            out,
            "  {:<7} {:<32} → {}{}  [{} / {}]",
            r.method,
            r.path,
            r.handler,
            chain,
            r.server.as_deref().unwrap_or("-"),
            r.router
        );
    }
    for (title, items) in [("workflows", &workflows), ("triggers", &triggers)] {
        let _ = writeln!(out, "\n{title}:");
        if items.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for item in items {
            let _ = writeln!(
                out,
                "  {}{}",
                item["type"].as_str().unwrap_or(""),
                item["name"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
    }
    if !schedules.is_empty() {
        let _ = writeln!(out, "\nschedules:");
    }
    for s in &schedules {
        let _ = writeln!(
            out,
            "  {:<28} {:<16} {} ({}, overlap {}) → {}\n    next: {}",
            s.job,
            s.scheduler,
            s.cron,
            s.timezone,
            s.overlap,
            s.target,
            s.next_runs.join(", ")
        );
    }
    let _ = writeln!(out, "\npipelines:");
    if pipelines.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for p in &pipelines {
        let steps: Vec<&str> = p["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .collect();
        let _ = writeln!(
            out,
            "  {}: {}",
            p["name"].as_str().unwrap_or(""),
            steps.join(" → ")
        );
    }
    (EXIT_OK, out)
}

/// `wf-host types`.
pub fn types_command(registry: &Registry, json_output: bool, kind: Option<Kind>) -> String {
    let types: Vec<_> = registry
        .types()
        .into_iter()
        .filter(|t| kind.is_none_or(|k| t.kind == k))
        .collect();
    if json_output {
        let list: Vec<Value> = types
            .iter()
            .map(|t| json!({"type": t.name, "kind": t.kind, "category": t.category, "plugin": t.plugin, "description": t.description}))
            .collect();
        return format!(
            "{}\n",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    }
    // Columns as wide as their longest entry, so every row lines up.
    let width = |column: &dyn Fn(&TypeInfo) -> usize, header: &str| {
        types
            .iter()
            .map(|t| column(t))
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let kind_width = width(&|t| t.kind.as_str().len(), "kind");
    let type_width = width(&|t| t.name.len(), "type");
    let category_width = width(&|t| t.category.as_str().len(), "category");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<kind_width$}  {:<type_width$}  {:<category_width$}  description",
        "kind", "type", "category"
    );
    for t in types {
        let _ = writeln!(
            out,
            "{:<kind_width$}  {:<type_width$}  {:<category_width$}  {}",
            t.kind.as_str(),
            t.name,
            t.category.as_str(),
            t.description
        );
    }
    out
}

/// `wf-host schema [TYPE]`: the application schema, or one type's config schema.
pub fn schema_command(registry: &Registry, type_name: Option<&str>) -> Result<String, String> {
    let schema = match type_name {
        None => wf_config::schema::app_schema(),
        Some(name) => {
            let matches: Vec<_> = registry
                .types()
                .into_iter()
                .filter(|t| t.name == name)
                .collect();
            match matches.as_slice() {
                [] => {
                    let names: Vec<&str> = registry.types().iter().map(|t| t.name).collect();
                    let hint = wf_config::did_you_mean(name, names.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_else(|| "; `wf-host types` lists them".to_string());
                    return Err(format!("no type named `{name}`{hint}"));
                }
                [only] => only.schema.clone(),
                several => Value::Object(
                    several
                        .iter()
                        .map(|t| (t.kind.as_str().to_string(), t.schema.clone()))
                        .collect(),
                ),
            }
        }
    };
    Ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    ))
}

/// `wf-host run-pipeline`: (exit code, stdout, stderr).
pub async fn run_pipeline_command(
    file: &std::path::Path,
    pipeline: &str,
    input: &str,
    registry: &Registry,
    data_dir: Option<&std::path::Path>,
) -> (u8, String, String) {
    let data = match serde_json::from_str::<Value>(input) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return (
                EXIT_INVALID,
                String::new(),
                "error: `--input` must be a JSON object\n".to_string(),
            );
        }
        Err(e) => {
            return (
                EXIT_INVALID,
                String::new(),
                format!("error: `--input` is not valid JSON: {e}\n"),
            );
        }
    };
    // Runs are recorded in the app's journal beside those of a running app (the data
    // directory is shared, not locked: this process resumes nothing).
    let options = BuildOptions {
        data_dir: Some(crate::data_dir::resolve(data_dir, &[file.to_path_buf()])),
        exclusive: false,
    };
    if let Some(dir) = &options.data_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return (
            EXIT_FAILURE,
            String::new(),
            format!(
                "error: cannot create the data directory {}: {e}
",
                dir.display()
            ),
        );
    }
    let app = match prepare_with(&[file.to_path_buf()], registry, &ProcessEnv, &options).await {
        Ok(built) => built.app,
        Err(rejected) => return (EXIT_INVALID, String::new(), rejected.render()),
    };
    let pipelines = app.state().pipelines();
    let Some(found) = pipelines.get(pipeline) else {
        let names = pipelines.names();
        let hint = wf_config::did_you_mean(pipeline, names.iter().copied())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_else(|| format!("; pipelines: {}", names.join(", ")));
        return (
            EXIT_INVALID,
            String::new(),
            format!("error: no pipeline named `{pipeline}`{hint}\n"),
        );
    };
    // Modules that prepare state (components, brokers) start; servers and triggers do not.
    let running = match app.start_offline(Duration::from_secs(10)).await {
        Ok(running) => running,
        Err(e) => return (EXIT_FAILURE, String::new(), format!("error: {e}\n")),
    };
    let mut extensions = wf_engine::Extensions::default();
    extensions.insert(wf_engine::journal::RunTrigger {
        kind: "cli".into(),
        source: "wf-host run-pipeline".into(),
        request: None,
    });
    let result = found.run(data, extensions).await;
    running.stop(Duration::from_secs(10)).await;
    match result {
        Ok(outcome) => {
            let result = Value::Object(outcome.context.current);
            (
                EXIT_OK,
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                ),
                String::new(),
            )
        }
        Err(e) => (
            EXIT_FAILURE,
            String::new(),
            format!("error: pipeline `{}` failed: {}\n", e.pipeline, e.full()),
        ),
    }
}

/// What `wf-host dead-letters` does.
pub enum DeadLetterAction {
    List { json: bool },
    Replay { id: String },
    Delete { id: String },
}

/// Lists, replays or deletes the dead letters of the app's `webhook.sender` modules (the one
/// named `sender`, or the only one). Returns (exit code, stdout, stderr).
pub async fn dead_letters_command(
    file: &std::path::Path,
    sender: Option<&str>,
    action: DeadLetterAction,
    registry: &Registry,
) -> (u8, String, String) {
    let (config, app) = match prepare_to_run(&[file.to_path_buf()], registry, &ProcessEnv).await {
        Ok(built) => (built.config, built.app),
        Err(rejected) => return (EXIT_INVALID, String::new(), rejected.render()),
    };
    let senders = app
        .services()
        .all::<wf_outbound::webhook_sender::WebhookSender>();
    let chosen = match (sender, senders.as_slice()) {
        (Some(name), all) => all.iter().find(|(n, _)| *n == name),
        (None, [only]) => Some(only),
        (None, _) => None,
    };
    let Some((_, sender)) = chosen else {
        let names: Vec<String> = senders.iter().map(|(n, _)| format!("`{n}`")).collect();
        let message = match (sender, names.is_empty()) {
            (_, true) => format!("{} has no `webhook.sender` module", file.display()),
            (Some(name), false) => format!(
                "no `webhook.sender` named `{name}`; there are {}",
                names.join(", ")
            ),
            (None, false) => format!(
                "several senders ({}): say which with --sender",
                names.join(", ")
            ),
        };
        let _ = config;
        return (EXIT_INVALID, String::new(), format!("error: {message}\n"));
    };
    let failed = |e: anyhow::Error| (EXIT_FAILURE, String::new(), format!("error: {e:#}\n"));
    match action {
        DeadLetterAction::List { json } => match sender.dead_letters().list() {
            Err(e) => failed(e),
            Ok(letters) if json => (
                EXIT_OK,
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&letters).unwrap_or_default()
                ),
                String::new(),
            ),
            Ok(letters) => {
                let mut out = String::new();
                if letters.is_empty() {
                    let _ = writeln!(
                        out,
                        "no dead letters in {}",
                        sender.dead_letters().dir().display()
                    );
                }
                for l in &letters {
                    let _ = writeln!(
                        out,
                        "{}  {:<10}  {}  {} {}  attempts {}  {}",
                        l.id, l.status, l.failed_at, l.method, l.url, l.attempts, l.error
                    );
                }
                (EXIT_OK, out, String::new())
            }
        },
        DeadLetterAction::Replay { id }
            if sender
                .dead_letters()
                .get(&id)
                .ok()
                .flatten()
                .is_some_and(|l| l.status == "delivering") =>
        {
            (
                EXIT_INVALID,
                String::new(),
                format!(
                    "error: `{id}` is being delivered by a running app (or was interrupted: starting the app marks it failed); replay it over the app's HTTP API, or delete it\n"
                ),
            )
        }
        DeadLetterAction::Replay { id } => match sender.replay(&id).await {
            Err(e) => failed(e),
            Ok(None) => (
                EXIT_INVALID,
                String::new(),
                format!("error: no dead letter `{id}`\n"),
            ),
            Ok(Some(Ok(attempts))) => (
                EXIT_OK,
                format!("delivered {id} ({attempts} attempts); the dead letter is removed\n"),
                String::new(),
            ),
            Ok(Some(Err(error))) => (
                EXIT_FAILURE,
                String::new(),
                format!("error: {id} still fails: {error} (the dead letter is kept)\n"),
            ),
        },
        DeadLetterAction::Delete { id } => match sender.dead_letters().remove(&id) {
            Err(e) => failed(e),
            Ok(true) => (EXIT_OK, format!("deleted {id}\n"), String::new()),
            Ok(false) => (
                EXIT_INVALID,
                String::new(),
                format!("error: no dead letter `{id}`\n"),
            ),
        },
    }
}

/// The type reference under `docs/modules/`: one page per kind, each type with its
/// description, plugin group and config keys (from the schema the doc comments become).
/// `(file name, markdown)` pairs; `tests/reference.rs` keeps the files current. A type's
/// hand-written example, `examples/<type>.yaml` under `dir`, is shown with it.
pub fn reference_pages(registry: &Registry, dir: &std::path::Path) -> Vec<(String, String)> {
    let kinds = [
        (Kind::Module, "modules.md", "Module types"),
        (Kind::Step, "steps.md", "Step types"),
        (Kind::Trigger, "triggers.md", "Trigger types"),
        (Kind::Workflow, "workflows.md", "Workflow types"),
    ];
    let mut pages = Vec::new();
    let mut index = String::from(
        "# Type reference\n\nGenerated from this build's registry (`BLESS=1 cargo test -p wf-host --test reference`\nrewrites it); each module type has an example in `examples/` (checked to validate), and the\narea pages in `docs/` explain the types at length. `wf-host schema <type>`\nprints a type's full JSON Schema.\n\n",
    );
    for (kind, file, title) in kinds {
        let mut types: Vec<_> = registry
            .types()
            .into_iter()
            .filter(|t| t.kind == kind)
            .collect();
        types.sort_by(|a, b| (a.category.as_str(), a.name).cmp(&(b.category.as_str(), b.name)));
        let _ = writeln!(index, "- [{title}]({file}): {} types", types.len());
        let mut page = format!("# {title}\n\nGenerated; see [the index](README.md).\n");
        let mut category = "";
        for t in types {
            if t.category.as_str() != category {
                category = t.category.as_str();
                let _ = write!(page, "\n## {category}\n");
            }
            let _ = write!(
                page,
                "\n### `{}`\n\n{}\n\nPlugin group: `{}`.\n",
                t.name, t.description, t.plugin
            );
            page.push_str(&config_table(&t.schema));
            let example = format!("examples/{}.yaml", t.name);
            if let Ok(text) = std::fs::read_to_string(dir.join(&example)) {
                let _ = write!(
                    page,
                    "\nExample ([`{example}`]({example})):\n\n```yaml\n{}\n```\n",
                    text.trim_end()
                );
            }
        }
        pages.push((file.to_string(), page));
    }
    pages.push(("README.md".to_string(), index));
    pages
}

/// The `config` keys of a schema as a table: key, type, default, description.
fn config_table(schema: &Value) -> String {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return "\nNo `config` keys.\n".to_string();
    };
    if properties.is_empty() {
        return "\nNo `config` keys.\n".to_string();
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("\n| key | type | default | description |\n|---|---|---|---|\n");
    for (key, property) in properties {
        let kind = match property.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect::<Vec<_>>()
                .join(" or "),
            _ if property.get("$ref").is_some() || property.get("anyOf").is_some() => {
                "object".to_string()
            }
            _ => "any".to_string(),
        };
        let default = if required.contains(&key.as_str()) {
            "required".to_string()
        } else {
            match property.get("default") {
                None | Some(Value::Null) => "—".to_string(),
                Some(v) => format!("`{v}`"),
            }
        };
        let description = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        let _ = writeln!(out, "| `{key}` | {kind} | {default} | {description} |");
    }
    out
}
