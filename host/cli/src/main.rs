use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use wf_engine::Kind;
use wf_host::commands::{
    Built, DeadLetterAction, EXIT_FAILURE, EXIT_INVALID, EXIT_OK, dead_letters_command,
    inspect_command, prepare_with, schema_command, types_command, validate_command,
};

// A run allocates many small maps and strings on every core at once; mimalloc's per-thread
// heaps serve that without the glibc allocator's lock and consolidation costs (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run wf applications: a YAML file becomes a running application.
#[derive(Parser)]
#[command(name = "wf-host", version, about, long_about = None)]
#[command(after_help = "Examples:
  wf-host run example/hello/app.yaml
  wf-host validate app.yaml other.yaml
  wf-host inspect app.yaml
  wf-host schema http.server
  wf-host types --kind module")]
struct Cli {
    /// Log filter, e.g. `debug` or `wf_http=debug,info`; without it RUST_LOG, else `info`.
    #[arg(long, global = true, env = "WF_LOG")]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WF_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Module,
    Step,
    Trigger,
    Workflow,
}

#[derive(Subcommand)]
enum Command {
    /// Run an application until SIGINT or SIGTERM; several files make one application.
    #[command(after_help = "Examples:
  wf-host run example/hello/app.yaml
  wf-host run base.yaml api.yaml --grace-period 5s

Exit codes: 0 stopped cleanly, 1 failed to start or stop, 2 invalid configuration.")]
    Run {
        /// Application files, merged into one application in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// How long shutdown may take (in-flight requests finish within it), e.g. `10s`.
        #[arg(long, default_value = "10s", value_parser = parse_grace)]
        grace_period: Duration,
        /// Where the app keeps what must survive a restart: the run journal, state machine
        /// instances, uploaded components. Default: `.wf` beside the first file.
        #[arg(long, env = "WF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check application files and print every problem with file:line:column.
    #[command(after_help = "Examples:
  wf-host validate app.yaml
  wf-host validate --format json app.yaml | jq '.diagnostics[].message'

Exit codes: 0 valid, 2 invalid.")]
    Validate {
        /// Application files, checked together as one application.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Run one pipeline of an application once and print its result as JSON.
    #[command(after_help = "Examples:
  wf-host run-pipeline app.yaml manual-sync --input '{\"source\": \"crm\"}'
  wf-host run-pipeline app.yaml nightly

The modules are built but not started: steps that need running modules (a database, a broker)
fail. Exit codes: 0 the pipeline succeeded, 1 it failed, 2 invalid configuration or input.")]
    RunPipeline {
        /// The application file.
        file: PathBuf,
        /// The pipeline's name (under `pipelines:`).
        pipeline: String,
        /// Trigger data: a JSON object.
        #[arg(long, default_value = "{}")]
        input: String,
        /// The app's data directory (see `run`); the run is recorded in its journal.
        #[arg(long, env = "WF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List, show, replay or cancel the runs recorded in an app's run journal.
    #[command(after_help = "Examples:
  wf-host runs list app.yaml --status failed --since 1h
  wf-host runs show app.yaml 6f1c2a9e-...
  wf-host runs replay app.yaml 6f1c2a9e-... --from charge --wait 30s
  wf-host runs replay-failed app.yaml --pipeline orders
  wf-host runs cancel app.yaml 6f1c2a9e-...

Replays are queued in the journal and started by the running app; cancels are asked there and
the app stops the run at its current step. Exit codes: 0 done, 1 refused (the run has ended,
cannot be replayed) or the journal is unavailable, 2 invalid configuration or no such run.")]
    Runs {
        #[command(subcommand)]
        action: RunsCommand,
    },
    /// Show modules in start order, routes, workflows, triggers and pipelines.
    #[command(after_help = "Examples:
  wf-host inspect app.yaml
  wf-host inspect --format json app.yaml")]
    Inspect {
        /// Application files, inspected together as one application.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List, replay or delete the dead letters of a `webhook.sender`.
    #[command(after_help = "Examples:
  wf-host dead-letters list app.yaml
  wf-host dead-letters replay app.yaml 6f1c2a9e-...
  wf-host dead-letters delete app.yaml 6f1c2a9e-... --sender billing-hooks

Exit codes: 0 done, 1 the replay failed again (the letter is kept), 2 invalid configuration or
no such letter.")]
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterCommand,
    },
    /// Print a JSON Schema: of the application file, or of one type's config.
    #[command(after_help = "Examples:
  wf-host schema                 # the application file
  wf-host schema http.server     # one module type's config")]
    Schema {
        /// A type name from `wf-host types`.
        r#type: Option<String>,
    },
    /// List every type this build provides, with its kind, category and description.
    #[command(after_help = "Examples:
  wf-host types
  wf-host types --kind module --format json")]
    Types {
        /// Only types of this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Every dead letter, oldest first.
    List {
        /// The application file.
        file: PathBuf,
        /// The `webhook.sender` module; optional when the app has one.
        #[arg(long)]
        sender: Option<String>,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Deliver one again (with retries); removed when delivered.
    Replay {
        file: PathBuf,
        id: String,
        #[arg(long)]
        sender: Option<String>,
    },
    /// Discard one.
    Delete {
        file: PathBuf,
        id: String,
        #[arg(long)]
        sender: Option<String>,
    },
}

/// The app and its data directory, for every `runs` subcommand.
#[derive(clap::Args)]
struct AppArgs {
    /// The application file.
    file: PathBuf,
    /// The app's data directory (see `run`).
    #[arg(long, env = "WF_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// Which runs.
#[derive(clap::Args)]
struct FilterArgs {
    /// Only runs of this pipeline.
    #[arg(long)]
    pipeline: Option<String>,
    /// Only runs with this status: queued, running, succeeded, failed, cancelled, interrupted.
    #[arg(long)]
    status: Option<String>,
    /// Only runs started within this long, e.g. `1h`.
    #[arg(long, value_parser = parse_grace)]
    since: Option<Duration>,
    /// Most runs listed (at most 500).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue a listing where the previous page ended (its `more: --cursor ...`).
    #[arg(long)]
    cursor: Option<String>,
}

impl FilterArgs {
    fn filter(self) -> wf_host::runs::RunFilter {
        wf_host::runs::RunFilter {
            pipeline: self.pipeline,
            status: self.status,
            since: self.since,
            limit: self.limit,
            cursor: self.cursor,
        }
    }
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Runs, newest first.
    List {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// One run with every step attempt.
    Show {
        #[command(flatten)]
        app: AppArgs,
        run_id: String,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// A new run with the same trigger data, linked to the original.
    Replay {
        #[command(flatten)]
        app: AppArgs,
        run_id: String,
        /// Start at this step, reusing the outputs the original recorded for the steps before.
        #[arg(long)]
        from: Option<String>,
        /// Wait up to this long for the replay to end, and show it.
        #[arg(long, value_parser = parse_grace)]
        wait: Option<Duration>,
    },
    /// Replay every failed run not replayed yet (the dead-letter view: `list --status failed`).
    ReplayFailed {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Stop a running run at its current step (its compensation runs), or a queued one.
    Cancel {
        #[command(flatten)]
        app: AppArgs,
        run_id: String,
    },
}

fn parse_grace(text: &str) -> Result<Duration, String> {
    wf_config::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref(), cli.log_format);
    let mut registry = match wf_host::registry() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match &cli.command {
        Command::Run { files, .. }
        | Command::Validate { files, .. }
        | Command::Inspect { files, .. } => wf_host::add_component_types(&mut registry, files),
        Command::RunPipeline { file, .. } => {
            wf_host::add_component_types(&mut registry, std::slice::from_ref(file))
        }
        Command::Runs { action } => {
            let (RunsCommand::List { app, .. }
            | RunsCommand::Show { app, .. }
            | RunsCommand::Replay { app, .. }
            | RunsCommand::ReplayFailed { app, .. }
            | RunsCommand::Cancel { app, .. }) = action;
            wf_host::add_component_types(&mut registry, std::slice::from_ref(&app.file))
        }
        Command::DeadLetters { action } => {
            let (DeadLetterCommand::List { file, .. }
            | DeadLetterCommand::Replay { file, .. }
            | DeadLetterCommand::Delete { file, .. }) = action;
            wf_host::add_component_types(&mut registry, std::slice::from_ref(file))
        }
        Command::Schema { .. } | Command::Types { .. } => {}
    }
    let code = match cli.command {
        Command::Run {
            files,
            grace_period,
            data_dir,
        } => {
            // Held until the process ends: one `wf-host run` per data directory.
            let dir = wf_host::data_dir::resolve(data_dir.as_deref(), &files);
            let lock = match wf_host::data_dir::lock(&dir) {
                Ok(lock) => lock,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            };
            let Some(runtime) = runtime() else {
                return ExitCode::from(EXIT_FAILURE);
            };
            runtime.block_on(run(&files, &registry, grace_period, &lock.dir))
        }
        Command::Validate { files, format } => {
            let (code, out) = validate_command(&files, &registry, format == OutputFormat::Json);
            print!("{out}");
            code
        }
        Command::RunPipeline {
            file,
            pipeline,
            input,
            data_dir,
        } => {
            let Some(runtime) = runtime() else {
                return ExitCode::from(EXIT_FAILURE);
            };
            let (code, out, err) = runtime.block_on(wf_host::commands::run_pipeline_command(
                &file,
                &pipeline,
                &input,
                &registry,
                data_dir.as_deref(),
            ));
            print!("{out}");
            eprint!("{}", wf_engine::redact::redact(&err));
            code
        }
        Command::Inspect { files, format } => {
            let Some(runtime) = runtime() else {
                return ExitCode::from(EXIT_FAILURE);
            };
            let (code, out) = runtime.block_on(inspect_command(
                &files,
                &registry,
                format == OutputFormat::Json,
            ));
            if code == EXIT_OK {
                print!("{out}")
            } else {
                eprint!("{out}")
            }
            code
        }
        Command::DeadLetters { action } => {
            let Some(runtime) = runtime() else {
                return ExitCode::from(EXIT_FAILURE);
            };
            let (file, sender, action) = match action {
                DeadLetterCommand::List {
                    file,
                    sender,
                    format,
                } => (
                    file,
                    sender,
                    DeadLetterAction::List {
                        json: format == OutputFormat::Json,
                    },
                ),
                DeadLetterCommand::Replay { file, id, sender } => {
                    (file, sender, DeadLetterAction::Replay { id })
                }
                DeadLetterCommand::Delete { file, id, sender } => {
                    (file, sender, DeadLetterAction::Delete { id })
                }
            };
            let (code, out, err) = runtime.block_on(dead_letters_command(
                &file,
                sender.as_deref(),
                action,
                &registry,
            ));
            print!("{out}");
            eprint!("{}", wf_engine::redact::redact(&err));
            code
        }
        Command::Runs { action } => {
            let Some(runtime) = runtime() else {
                return ExitCode::from(EXIT_FAILURE);
            };
            use wf_host::runs::RunsAction;
            let (app, action) = match action {
                RunsCommand::List {
                    app,
                    filter,
                    format,
                } => (
                    app,
                    RunsAction::List {
                        filter: filter.filter(),
                        json: format == OutputFormat::Json,
                    },
                ),
                RunsCommand::Show {
                    app,
                    run_id,
                    format,
                } => (
                    app,
                    RunsAction::Show {
                        run_id,
                        json: format == OutputFormat::Json,
                    },
                ),
                RunsCommand::Replay {
                    app,
                    run_id,
                    from,
                    wait,
                } => (app, RunsAction::Replay { run_id, from, wait }),
                RunsCommand::ReplayFailed { app, filter } => (
                    app,
                    RunsAction::ReplayFailed {
                        filter: filter.filter(),
                    },
                ),
                RunsCommand::Cancel { app, run_id } => (app, RunsAction::Cancel { run_id }),
            };
            let (code, out, err) = runtime.block_on(wf_host::runs::runs_command(
                std::slice::from_ref(&app.file),
                app.data_dir.as_deref(),
                action,
                &registry,
            ));
            print!("{out}");
            eprint!("{}", wf_engine::redact::redact(&err));
            code
        }
        Command::Schema { r#type } => match schema_command(&registry, r#type.as_deref()) {
            Ok(out) => {
                print!("{out}");
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_INVALID
            }
        },
        Command::Types { kind, format } => {
            let kind = kind.map(|k| match k {
                KindArg::Module => Kind::Module,
                KindArg::Step => Kind::Step,
                KindArg::Trigger => Kind::Trigger,
                KindArg::Workflow => Kind::Workflow,
            });
            print!(
                "{}",
                types_command(&registry, format == OutputFormat::Json, kind)
            );
            EXIT_OK
        }
    };
    ExitCode::from(code)
}

async fn run(
    files: &[PathBuf],
    registry: &wf_engine::Registry,
    grace: Duration,
    data_dir: &std::path::Path,
) -> u8 {
    let options = wf_engine::BuildOptions {
        data_dir: Some(data_dir.to_path_buf()),
        exclusive: true,
    };
    let Built {
        config,
        app,
        warnings,
    } = match prepare_with(files, registry, &wf_config::ProcessEnv, &options).await {
        Ok(built) => built,
        Err(rejected) => {
            eprint!("{}", rejected.render());
            return EXIT_INVALID;
        }
    };
    if !warnings.is_empty() {
        eprint!("{}", warnings.render(&config.sources));
    }
    let signal = shutdown_signal();
    let running = match app.start(grace).await {
        Ok(running) => running,
        Err(e) => {
            // A start failure may quote a setting that came from a secret.
            eprintln!("error: {}", wf_engine::redact::redact(&e.to_string()));
            return EXIT_FAILURE;
        }
    };
    // An app without a `name` is known by its file.
    let file_name = files
        .first()
        .and_then(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    tracing::info!(
        app = config
            .name
            .as_deref()
            .or(file_name.as_deref())
            .unwrap_or("-"),
        modules = config.modules.len(),
        "ready"
    );
    let signal = signal.await;
    tracing::info!(%signal, grace = ?grace, "stopping");
    let failures = running.stop(grace).await;
    if failures == 0 {
        tracing::info!("stopped");
        EXIT_OK
    } else {
        eprintln!("error: {failures} module(s) or trigger(s) did not stop cleanly");
        EXIT_FAILURE
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM and names which arrived.
/// Registers the SIGINT and SIGTERM handlers now — before the app starts, so a signal that
/// arrives while it starts is handled (after start) instead of killing the process — and
/// returns what to await for the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, interrupt) {
                (Some(mut term), Some(mut interrupt)) => tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                },
                (Some(mut term), None) => {
                    term.recv().await;
                    "SIGTERM"
                }
                (None, Some(mut interrupt)) => {
                    interrupt.recv().await;
                    "SIGINT"
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

fn init_logging(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // `--log-level` (or WF_LOG) wins; then RUST_LOG; then `info`.
    let requested = level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok());
    let filter = match requested.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => filter,
        Some(Err(e)) => {
            eprintln!("warning: ignoring the log filter {requested:?} ({e}); logging at `info`");
            EnvFilter::new("info")
        }
        None => EnvFilter::new("info"),
    };
    use std::io::IsTerminal;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let single_line = matches!(format, LogFormat::Text);
    let console = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(move || ConsoleWriter { single_line });
    // The filter is the console's own: `log.collector` keeps its own level.
    let console = match format {
        LogFormat::Text => console.with_filter(filter).boxed(),
        LogFormat::Json => console.json().with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(console)
        .with(wf_http::logs::layer())
        .init();
}

/// Standard error with resolved secrets masked ([`wf_engine::redact`]) and, in the text
/// format, one line per event: line breaks inside an event (a logged value, a component's
/// message or error) are written as `\n`, so nothing a caller or a component sends can
/// start a forged log line. The console layer writes each event whole, ending in its one
/// newline, so a secret is never split across two writes. (tracing-subscriber already escapes
/// terminal escape sequences; the JSON format escapes everything.)
struct ConsoleWriter {
    single_line: bool,
}

impl std::io::Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = wf_engine::redact::redact(&text);
        let out = if self.single_line {
            one_line(text)
        } else {
            text
        };
        std::io::stderr().write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// An event as one line: its final newline kept, line breaks before it escaped.
fn one_line(event: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    let body = event.strip_suffix('\n').unwrap_or(&event);
    if !body.contains(['\n', '\r']) {
        return event;
    }
    let mut out = body.replace('\n', "\\n").replace('\r', "\\r");
    if event.ends_with('\n') {
        out.push('\n');
    }
    std::borrow::Cow::Owned(out)
}

/// The async runtime for commands that run an application; `None` (reported) if it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}
