//! Reading application files: YAML with locations, variable expansion, `imports:` with cycle
//! detection, the application schema, and normalisation into an [`AppConfig`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::diagnostic::{Diagnostic, Diagnostics, pointer_to_path};
use crate::expand::{Vars, expand};
use crate::model::{
    AppConfig, DocId, Document, ModuleDecl, Origin, PipelineDecl, PluginRequirementDecl,
    SectionDecl,
};
use crate::schema::app_schema;
use crate::schema_check::CompiledSchema;
use crate::source::Location;
use crate::yaml::{SpanIndex, escape_pointer_segment, parse};

/// A loaded configuration and every problem found while loading it. The configuration is as
/// complete as the input allowed, so later stages can report their problems too.
#[derive(Debug)]
pub struct Loaded {
    pub config: AppConfig,
    pub diagnostics: Diagnostics,
}

/// Largest configuration file read (each file, imports included): 8 MiB.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// Loads one or more application files into one application.
pub fn load_files(paths: &[PathBuf], vars: &dyn Vars) -> Loaded {
    let mut loader = Loader::new(vars);
    for path in paths {
        loader.load_path(path, None);
    }
    loader.finish()
}

/// Loads an application from text, as if read from `path` (imports resolve next to it).
pub fn load_str(path: impl Into<PathBuf>, text: &str, vars: &dyn Vars) -> Loaded {
    let mut loader = Loader::new(vars);
    loader.load_text(path.into(), text.to_string());
    loader.finish()
}

fn compiled_app_schema() -> &'static CompiledSchema {
    static SCHEMA: OnceLock<CompiledSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        CompiledSchema::compile(&app_schema()).expect("the generated application schema compiles")
    })
}

struct Loader<'v> {
    vars: &'v dyn Vars,
    config: AppConfig,
    diagnostics: Diagnostics,
    /// Files being loaded, outermost first, to detect import cycles.
    stack: Vec<PathBuf>,
    loaded: HashSet<PathBuf>,
}

impl<'v> Loader<'v> {
    fn new(vars: &'v dyn Vars) -> Self {
        Loader {
            vars,
            config: AppConfig::default(),
            diagnostics: Diagnostics::default(),
            stack: Vec::new(),
            loaded: HashSet::new(),
        }
    }

    fn finish(mut self) -> Loaded {
        settings_from_sections(&mut self.config);
        Loaded {
            config: self.config,
            diagnostics: self.diagnostics,
        }
    }

    fn load_path(&mut self, path: &Path, imported_at: Option<Location>) {
        let canonical = match path.canonicalize() {
            Ok(p) => p,
            Err(e) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        "unreadable-file",
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                    .at(imported_at)
                    .help("check the path; imports are relative to the importing file"),
                );
                return;
            }
        };
        if let Some(i) = self.stack.iter().position(|p| p == &canonical) {
            let cycle: Vec<String> = self.stack[i..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| file_name(p))
                .collect();
            self.diagnostics.push(
                Diagnostic::error(
                    "import-cycle",
                    format!("import cycle: {}", cycle.join(" → ")),
                )
                .at(imported_at)
                .help("remove one of these imports"),
            );
            return;
        }
        if !self.loaded.insert(canonical.clone()) {
            return; // already merged through another import
        }
        let bytes = match crate::files::read_regular(&canonical, MAX_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                let help = match e {
                    crate::files::ReadError::TooLarge { .. } => {
                        "split the application into files joined with `imports:`"
                    }
                    _ => "name a YAML file",
                };
                self.diagnostics.push(
                    Diagnostic::error(
                        "unreadable-file",
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                    .at(imported_at)
                    .help(help),
                );
                return;
            }
        };
        match String::from_utf8(bytes) {
            Ok(text) => {
                self.stack.push(canonical);
                self.load_text(path.to_path_buf(), text);
                self.stack.pop();
            }
            Err(e) => {
                // Locate the first bad byte in the valid text before it.
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
                let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let column = String::from_utf8_lossy(&valid[line_start..])
                    .chars()
                    .count()
                    + 1;
                let source = self.config.sources.add(
                    path.to_path_buf(),
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                );
                self.diagnostics.push(
                    Diagnostic::error(
                        "not-utf8",
                        format!("`{}` is not UTF-8 text", path.display()),
                    )
                    .at(Some(Location {
                        source,
                        line: u32::try_from(line).unwrap_or(u32::MAX),
                        column: u32::try_from(column).unwrap_or(u32::MAX),
                    }))
                    .help("save the file as UTF-8"),
                );
            }
        }
    }

    fn load_text(&mut self, path: PathBuf, text: String) {
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let source = self.config.sources.add(path.clone(), text);
        let text = self
            .config
            .sources
            .get(source)
            .map(|f| f.text.clone())
            .unwrap_or_default();
        let (mut value, mut spans) = match parse(&text, source) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.diagnostics.push(
                    Diagnostic::error("yaml-syntax", format!("invalid YAML: {}", e.message)).at(e
                        .location
                        .or(Some(Location {
                            source,
                            line: 1,
                            column: 1,
                        }))),
                );
                return;
            }
        };
        if !value.is_object() {
            let message = if value.is_null() {
                format!("`{}` is empty", path.display())
            } else {
                format!(
                    "`{}` must be a mapping with `modules:` and friends",
                    path.display()
                )
            };
            self.diagnostics.push(
                Diagnostic::error("not-an-app", message)
                    .at(Some(Location {
                        source,
                        line: 1,
                        column: 1,
                    }))
                    .help("start from `example/hello/app.yaml`"),
            );
            return;
        }

        self.expand_variables(&mut value, &mut spans);
        self.diagnostics.extend(compiled_app_schema().check(
            &value,
            "",
            &spans,
            "the application file",
            None,
        ));

        let doc = DocId(self.config.documents.len());
        let imports: Vec<(String, Option<Location>)> = value
            .get("imports")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let loc = spans.get(&format!("/imports/{i}")).map(|s| s.value);
                        v.as_str().map(|s| (s.to_string(), loc))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.config.documents.push(Document {
            source,
            value,
            spans,
            base_dir: base_dir.clone(),
        });
        // Imported files first: what this file builds on starts before it.
        for (import, location) in imports {
            self.load_path(&base_dir.join(import), location);
        }
        self.normalise(doc);
    }

    /// Expands `${...}` in module configuration, import paths and the `integration` workflows'
    /// connector settings (URLs and credentials), reporting each failure where it is written.
    /// Other workflow, trigger and pipeline values are left alone: the `integration` steps and
    /// the platform templates use `${...}` as their own run-time placeholders.
    fn expand_variables(&mut self, value: &mut Value, spans: &mut SpanIndex) {
        if let Some(Value::Object(workflows)) = value.get_mut("workflows") {
            for (kind, workflow) in workflows.iter_mut() {
                if kind != "integration" && !kind.starts_with("integration-") {
                    continue;
                }
                if let Some(Value::Array(connectors)) = workflow.get_mut("connectors") {
                    for (i, connector) in connectors.iter_mut().enumerate() {
                        if let Some(config) = connector.get_mut("config") {
                            let pointer = format!("/workflows/{kind}/connectors/{i}/config");
                            self.expand_in(config, pointer, spans, None);
                        }
                    }
                }
            }
        }
        if let Some(Value::Array(modules)) = value.get_mut("modules") {
            for (i, module) in modules.iter_mut().enumerate() {
                let name = module
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(config) = module.get_mut("config") {
                    let pointer = format!("/modules/{i}/config");
                    self.expand_in(config, pointer, spans, name.as_deref());
                }
            }
        }
        if let Some(imports) = value.get_mut("imports") {
            self.expand_in(imports, "/imports".to_string(), spans, None);
        }
    }

    fn expand_in(
        &mut self,
        value: &mut Value,
        pointer: String,
        spans: &mut SpanIndex,
        module: Option<&str>,
    ) {
        match value {
            Value::String(text) => match expand(text, self.vars) {
                None => {}
                Some(Ok(expanded)) => {
                    *text = expanded;
                    // It may be a secret: diagnostics must not quote it.
                    spans.mark_expanded(&pointer);
                }
                Some(Err(errors)) => {
                    for error in errors {
                        let code = match error {
                            crate::expand::ExpandError::Missing { .. } => "missing-variable",
                            crate::expand::ExpandError::UnknownProvider { .. } => {
                                "unknown-provider"
                            }
                            _ => "malformed-variable",
                        };
                        let mut d = Diagnostic::error(code, error.to_string())
                            .at(spans.nearest(&pointer).map(|s| s.value))
                            .path(pointer_to_path(&pointer))
                            .help(error.help());
                        if let Some(module) = module {
                            d = d.module(module);
                        }
                        self.diagnostics.push(d);
                    }
                }
            },
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.expand_in(item, format!("{pointer}/{i}"), spans, module);
                }
            }
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    let child = format!("{pointer}/{}", escape_pointer_segment(key));
                    self.expand_in(item, child, spans, module);
                }
            }
            _ => {}
        }
    }

    /// Copies what this document declares into the application model. Malformed entries were
    /// already reported by the schema and are skipped here.
    fn normalise(&mut self, doc: DocId) {
        let document = &self.config.documents[doc.0];
        let value = &document.value;
        let base_dir = document.base_dir.clone();
        let origin = |pointer: String| Origin { doc, pointer };
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);

        let mut modules = Vec::new();
        for (i, m) in value
            .get("modules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (Some(name), Some(type_name)) = (text(m, "name"), text(m, "type")) else {
                continue;
            };
            let mut config = match m.get("config") {
                Some(c @ Value::Object(_)) => c.clone(),
                _ => Value::Object(Default::default()),
            };
            // Many of the original's configs describe modules inside `config`; it is metadata,
            // not a setting of the type.
            let description = match config.as_object_mut().and_then(|c| c.remove("description")) {
                Some(Value::String(d)) => Some(d),
                _ => None,
            };
            let depends_on = m
                .get("dependsOn")
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            modules.push(ModuleDecl {
                name,
                type_name,
                config,
                depends_on,
                description,
                origin: origin(format!("/modules/{i}")),
                config_origin: origin(format!("/modules/{i}/config")),
                base_dir: base_dir.clone(),
            });
        }

        let workflows = sections(value.get("workflows"), "/workflows", doc);
        let triggers = sections(value.get("triggers"), "/triggers", doc);

        let pipelines: Vec<PipelineDecl> = value
            .get("pipelines")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, v)| PipelineDecl {
                name: name.clone(),
                value: v.clone(),
                origin: origin(format!("/pipelines/{}", escape_pointer_segment(name))),
            })
            .collect();

        let requires = value.get("requires");
        let plugins: Vec<PluginRequirementDecl> = requires
            .and_then(|r| r.get("plugins"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| {
                Some(PluginRequirementDecl {
                    name: text(p, "name")?,
                    version: text(p, "version"),
                    origin: origin(format!("/requires/plugins/{i}")),
                })
            })
            .collect();
        let capabilities: Vec<(String, Origin)> = requires
            .and_then(|r| r.get("capabilities"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, c)| {
                Some((
                    c.as_str()?.to_string(),
                    origin(format!("/requires/capabilities/{i}")),
                ))
            })
            .collect();
        let named_sections: Vec<(String, Value, Origin)> =
            ["platform", "reverseproxy", "scheduler", "runs"]
                .into_iter()
                .filter_map(|key| {
                    Some((
                        key.to_string(),
                        value.get(key)?.clone(),
                        origin(format!("/{key}")),
                    ))
                })
                .collect();
        let (name, version, description) = (
            text(value, "name"),
            text(value, "version"),
            text(value, "description"),
        );

        let config = &mut self.config;
        config.name = config.name.take().or(name);
        config.version = config.version.take().or(version);
        config.description = config.description.take().or(description);
        config.modules.extend(modules);
        config.workflows.extend(workflows);
        config.triggers.extend(triggers);
        config.pipelines.extend(pipelines);
        config.required_plugins.extend(plugins);
        config.required_capabilities.extend(capabilities);
        config.sections.extend(named_sections);
    }
}

/// A module written without `config` whose type reads a top-level section (the original's
/// modular convention: `reverseproxy:` configures the `reverseproxy` module) takes that section
/// as its config, and its problems are reported in the section.
fn settings_from_sections(config: &mut AppConfig) {
    for module in &mut config.modules {
        let key = match module.type_name.as_str() {
            "reverseproxy" | "http.proxy" => "reverseproxy",
            _ => continue,
        };
        let written = module.config.as_object().is_some_and(|c| !c.is_empty());
        if written {
            continue;
        }
        if let Some((_, value, origin)) = config.sections.iter().find(|(k, _, _)| k == key)
            && value.is_object()
        {
            module.config = value.clone();
            module.config_origin = origin.clone();
        }
    }
}

/// Both forms of `workflows:` / `triggers:` as one list.
fn sections(value: Option<&Value>, base: &str, doc: DocId) -> Vec<SectionDecl> {
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(kind, config)| SectionDecl {
                kind: kind.clone(),
                name: None,
                config: config.clone(),
                origin: Origin {
                    doc,
                    pointer: format!("{base}/{}", escape_pointer_segment(kind)),
                },
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let kind = item.get("type")?.as_str()?.to_string();
                Some(SectionDecl {
                    kind,
                    name: item.get("name").and_then(Value::as_str).map(str::to_string),
                    config: item.get("config").cloned().unwrap_or(Value::Null),
                    origin: Origin {
                        doc,
                        pointer: format!("{base}/{i}/config"),
                    },
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_vars() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn keyed_and_list_forms_normalise_alike() {
        let keyed = load_str(
            "a.yaml",
            "modules: []\nworkflows:\n  http:\n    routes: []\ntriggers:\n  http:\n    routes: []\n",
            &no_vars(),
        );
        let listed = load_str(
            "b.yaml",
            "modules: []\nworkflows:\n  - name: main\n    type: http\n    config:\n      routes: []\ntriggers:\n  - type: http\n    config: {routes: []}\n",
            &no_vars(),
        );
        assert!(keyed.diagnostics.is_empty(), "{:?}", keyed.diagnostics);
        assert!(listed.diagnostics.is_empty(), "{:?}", listed.diagnostics);
        assert_eq!(keyed.config.workflows[0].kind, "http");
        assert_eq!(listed.config.workflows[0].kind, "http");
        assert_eq!(listed.config.workflows[0].name.as_deref(), Some("main"));
        assert_eq!(
            keyed.config.workflows[0].config,
            listed.config.workflows[0].config
        );
        assert_eq!(listed.config.triggers.len(), 1);
    }

    #[test]
    fn variables_expand_in_module_config_at_any_depth() {
        let vars: HashMap<String, String> = [("PORT".to_string(), "9090".to_string())].into();
        let loaded = load_str(
            "a.yaml",
            "modules:\n  - name: s\n    type: http.server\n    config:\n      address: \":${PORT}\"\n      list: [{deep: \"${HOST:-localhost}\"}]\n",
            &vars,
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let config = &loaded.config.modules[0].config;
        assert_eq!(config["address"], ":9090");
        assert_eq!(config["list"][0]["deep"], "localhost");
    }

    #[test]
    fn a_missing_variable_names_itself_and_its_place() {
        let loaded = load_str(
            "a.yaml",
            "modules:\n  - name: auth\n    type: auth.jwt\n    config:\n      secret: \"${JWT_SECRET}\"\n",
            &no_vars(),
        );
        let d: Vec<_> = loaded.diagnostics.iter().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, "missing-variable");
        assert!(d[0].message.contains("`JWT_SECRET`"));
        assert_eq!(d[0].location.map(|l| (l.line, l.column)), Some((5, 15)));
        assert_eq!(d[0].path.as_deref(), Some("modules[0].config.secret"));
        assert_eq!(d[0].module.as_deref(), Some("auth"));
    }

    #[test]
    fn expanded_values_are_never_quoted_in_diagnostics() {
        let vars: HashMap<String, String> =
            [("SECRET".to_string(), "hunter2-very-secret".to_string())].into();
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"modules": {"type": "array", "items": {"type": "object", "properties": {"config": {"type": "object", "properties": {"port": {"type": "integer"}}}}}}}
        });
        let loaded = load_str(
            "a.yaml",
            "modules:\n  - name: m\n    type: t\n    config:\n      port: \"${SECRET}\"\n",
            &vars,
        );
        let spans = &loaded.config.documents[0].spans;
        let d = CompiledSchema::compile(&schema).unwrap().check(
            &loaded.config.documents[0].value,
            "",
            spans,
            "x",
            None,
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(!d[0].message.contains("hunter2"), "{}", d[0].message);
        assert!(
            d[0].message.contains("environment variable"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn pipeline_and_workflow_placeholders_are_not_expanded() {
        let loaded = load_str(
            "a.yaml",
            "modules: []\nworkflows:\n  integration:\n    steps:\n      - input: {id: \"${data.id}\"}\n",
            &no_vars(),
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(
            loaded.config.workflows[0].config["steps"][0]["input"]["id"],
            "${data.id}"
        );
    }

    #[test]
    fn mistakes_in_list_form_entries_are_reported_where_they_are() {
        let loaded = load_str(
            "a.yaml",
            "modules: []\nworkflows:\n  - name: main\n    confg: {}\n",
            &no_vars(),
        );
        let codes: Vec<_> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.code, d.location.map(|l| l.line)))
            .collect();
        assert!(codes.contains(&("missing-key", Some(3))), "{codes:?}");
        assert!(codes.contains(&("unknown-key", Some(4))), "{codes:?}");
    }

    #[test]
    fn unknown_top_level_keys_are_reported() {
        let loaded = load_str("a.yaml", "modules: []\nmodule: []\n", &no_vars());
        let d: Vec<_> = loaded.diagnostics.iter().collect();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "unknown-key");
        assert_eq!(d[0].help.as_deref(), Some("did you mean `modules`?"));
    }

    #[test]
    fn imports_merge_in_dependency_order_and_cycles_are_errors() {
        let dir = std::env::temp_dir().join(format!("wf-config-imports-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("main.yaml"),
            "imports: [sub/base.yaml]\nmodules:\n  - {name: app, type: http.router}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sub/base.yaml"),
            "imports: [../main.yaml]\nmodules:\n  - {name: base, type: http.server, config: {address: ':0'}}\n",
        )
        .unwrap();
        let loaded = load_files(&[dir.join("main.yaml")], &no_vars());
        let names: Vec<_> = loaded
            .config
            .modules
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["base", "app"]);
        let cycle: Vec<_> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.code == "import-cycle")
            .collect();
        assert_eq!(cycle.len(), 1, "{:?}", loaded.diagnostics);
        assert_eq!(
            cycle[0].message,
            "import cycle: main.yaml → base.yaml → main.yaml"
        );
        assert_eq!(cycle[0].location.map(|l| l.line), Some(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn imports_that_are_not_regular_small_utf8_files_are_located_errors() {
        let dir =
            std::env::temp_dir().join(format!("wf-config-bad-imports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO would block the loader forever; a link to /dev/zero would fill memory.
        let fifo_made = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo.yaml"))
            .status()
            .is_ok_and(|s| s.success());
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.yaml")).unwrap();
        let huge = std::fs::File::create(dir.join("huge.yaml")).unwrap();
        huge.set_len(MAX_FILE_BYTES + 1).unwrap();
        std::fs::write(dir.join("latin1.yaml"), b"modules: []\n# caf\xe9\n").unwrap();
        let imports = if fifo_made {
            "[fifo.yaml, zero.yaml, huge.yaml, latin1.yaml]"
        } else {
            "[zero.yaml, huge.yaml, latin1.yaml]"
        };
        std::fs::write(
            dir.join("main.yaml"),
            format!("imports: {imports}\nmodules: []\n"),
        )
        .unwrap();
        let loaded = load_files(&[dir.join("main.yaml")], &no_vars());
        let messages: Vec<String> = loaded
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{} {} {:?}",
                    d.code,
                    d.message,
                    d.location.map(|l| (l.line, l.column))
                )
            })
            .collect();
        let find = |needle: &str| {
            messages
                .iter()
                .find(|m| m.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {messages:?}"))
                .clone()
        };
        if fifo_made {
            assert!(find("fifo.yaml").contains("not a regular file (it is a FIFO)"));
        }
        assert!(find("zero.yaml").contains("(it is a device)"));
        assert!(find("huge.yaml").contains("larger than the 8388608-byte limit"));
        // Imports are located at the import list; the bad byte at its own line and column.
        assert!(find("zero.yaml").contains("Some((1, "), "{messages:?}");
        let not_utf8 = find("not-utf8");
        assert!(
            not_utf8.contains("latin1.yaml` is not UTF-8 text"),
            "{not_utf8}"
        );
        assert!(not_utf8.ends_with("Some((2, 6))"), "{not_utf8}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_yaml_and_non_mappings() {
        let loaded = load_str("a.yaml", "modules: [\n", &no_vars());
        assert_eq!(
            loaded.diagnostics.iter().next().unwrap().code,
            "yaml-syntax"
        );
        let loaded = load_str("a.yaml", "- just\n- a list\n", &no_vars());
        assert_eq!(loaded.diagnostics.iter().next().unwrap().code, "not-an-app");
    }
}
