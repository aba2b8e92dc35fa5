//! Validation: every problem of a loaded configuration at once, each located.
//!
//! Stages: (load: YAML syntax, variables, application schema) → requirements → modules (names,
//! types, config schemas, type rules) → `dependsOn` (references, cycles) → workflows → triggers →
//! pipelines. Only a configuration without errors becomes a [`ValidatedConfig`], and only a
//! `ValidatedConfig` can be built.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use wf_config::{
    AppConfig, Diagnostic, Diagnostics, Loaded, ModuleDecl, Origin, did_you_mean, pointer_to_path,
};

use crate::catalogue;
use crate::context::CheckContext;
use crate::registry::{ConfigIssue, Kind, Registered, Registry};

/// A configuration that passed validation. Warnings are kept for display.
#[derive(Debug)]
pub struct ValidatedConfig {
    config: AppConfig,
    warnings: Diagnostics,
}

impl ValidatedConfig {
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    pub fn into_config(self) -> AppConfig {
        self.config
    }
}

/// A configuration that did not pass, with everything found.
#[derive(Debug)]
pub struct Invalid {
    pub config: AppConfig,
    pub diagnostics: Diagnostics,
}

/// Validates a loaded configuration against the types in `registry`.
pub fn validate(loaded: Loaded, registry: &Registry) -> Result<ValidatedConfig, Box<Invalid>> {
    let Loaded {
        config,
        mut diagnostics,
    } = loaded;
    let found = check_loaded(&config, registry, &diagnostics);
    diagnostics.extend(found);
    let diagnostics = diagnostics.sorted();
    if diagnostics.has_errors() {
        Err(Box::new(Invalid {
            config,
            diagnostics,
        }))
    } else {
        Ok(ValidatedConfig {
            config,
            warnings: diagnostics,
        })
    }
}

/// Every problem of `config` beyond what loading found.
pub fn check(config: &AppConfig, registry: &Registry) -> Vec<Diagnostic> {
    check_loaded(config, registry, &Diagnostics::default())
}

/// The problems of the modules `wanted` picks (names, types, config schemas and type rules),
/// for work that needs a few modules right before the whole app is validated.
pub fn check_modules(
    config: &AppConfig,
    registry: &Registry,
    wanted: &dyn Fn(&ModuleDecl) -> bool,
) -> Vec<Diagnostic> {
    let mut v = Validator {
        config,
        registry,
        unexpanded: Default::default(),
        out: Vec::new(),
    };
    v.modules_where(wanted);
    v.out
}

/// Like [`check`], knowing what loading found: modules whose variables did not expand are not
/// checked against their type, because their config is not what the user meant.
fn check_loaded(config: &AppConfig, registry: &Registry, loading: &Diagnostics) -> Vec<Diagnostic> {
    let unexpanded = loading
        .iter()
        .filter(|d| {
            matches!(
                d.code,
                "missing-variable" | "unknown-provider" | "malformed-variable"
            )
        })
        .filter_map(|d| d.module.as_deref())
        .collect();
    let mut v = Validator {
        config,
        registry,
        unexpanded,
        out: Vec::new(),
    };
    v.requirements();
    v.modules();
    v.dependencies();
    for section in &config.workflows {
        v.section(Kind::Workflow, section);
    }
    for section in &config.triggers {
        v.section(Kind::Trigger, section);
    }
    v.pipelines();
    v.out
}

struct Validator<'a> {
    config: &'a AppConfig,
    registry: &'a Registry,
    unexpanded: std::collections::HashSet<&'a str>,
    out: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn at(&self, d: Diagnostic, origin: &Origin) -> Diagnostic {
        self.config.diagnostic_at(d, origin)
    }

    fn requirements(&mut self) {
        let version = semver::Version::parse(env!("CARGO_PKG_VERSION")).ok();
        for required in &self.config.required_plugins {
            let name_origin = required.origin.child("/name");
            if self.registry.resolve_plugin(&required.name).is_none() {
                let known = self.registry.plugin_names_and_aliases();
                let (code, message) = if catalogue::PLUGIN_GROUPS.contains(&required.name.as_str())
                {
                    (
                        "not-implemented",
                        format!("plugin group `{}` is not in this build yet", required.name),
                    )
                } else {
                    (
                        "unknown-plugin",
                        format!("unknown plugin group `{}`", required.name),
                    )
                };
                let help = match did_you_mean(&required.name, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("this build has: {}", known.join(", ")),
                };
                self.out
                    .push(self.at(Diagnostic::error(code, message).help(help), &name_origin));
                continue;
            }
            if let (Some(req), Some(version)) = (&required.version, &version) {
                match semver::VersionReq::parse(req) {
                    Ok(r) if r.matches(version) => {}
                    Ok(_) => self.out.push(self.at(
                        Diagnostic::error(
                            "plugin-version",
                            format!("plugin group `{}` is version {version}, which does not satisfy `{req}`", required.name),
                        )
                        .help("relax the version requirement or upgrade wf"),
                        &required.origin.child("/version"),
                    )),
                    Err(e) => self.out.push(self.at(
                        Diagnostic::error("invalid-value", format!("`{req}` is not a version requirement: {e}"))
                            .help("write a semantic-version requirement such as `>=0.1`"),
                        &required.origin.child("/version"),
                    )),
                }
            }
        }
        for (capability, origin) in &self.config.required_capabilities {
            let known = self.registry.resolve_plugin(capability).is_some()
                || self.registry.find_type(capability).is_some();
            if !known {
                self.out.push(
                    self.at(
                        Diagnostic::error(
                            "unknown-capability",
                            format!("no type or plugin group provides capability `{capability}`"),
                        )
                        .help("name a type or plugin group listed by `wf-host types`"),
                        origin,
                    ),
                );
            }
        }
    }

    fn modules(&mut self) {
        self.modules_where(&|_| true);
    }

    fn modules_where(&mut self, wanted: &dyn Fn(&ModuleDecl) -> bool) {
        let mut first_seen: HashMap<&str, &Origin> = HashMap::new();
        for module in self.config.modules.iter().filter(|m| wanted(m)) {
            if let Some(first) = first_seen.get(module.name.as_str()) {
                let first_at = self
                    .config
                    .locate(first)
                    .map(|l| self.config.sources.display(l).to_string())
                    .unwrap_or_else(|| pointer_to_path(&first.pointer));
                self.out.push(
                    self.at(
                        Diagnostic::error(
                            "duplicate-name",
                            format!("module name `{}` is already used", module.name),
                        )
                        .module(&module.name)
                        .help(format!("rename one of them; the first is at {first_at}")),
                        &module.origin.child("/name"),
                    ),
                );
                continue;
            }
            first_seen.insert(&module.name, &module.origin);

            let type_origin = module.origin.child("/type");
            let Some(registered) = self.registry.module(&module.type_name) else {
                let d = self
                    .unknown_type(Kind::Module, &module.type_name)
                    .module(&module.name);
                self.out.push(self.at(d, &type_origin));
                continue;
            };
            if self.unexpanded.contains(module.name.as_str()) {
                continue; // its config still holds `${...}` text; checking it would mislead
            }
            let subject = format!("`{}` config", module.type_name);
            self.typed_config(
                registered,
                &module.config,
                &module.config_origin,
                &subject,
                Some(&module.name),
            );
        }
    }

    /// Schema, then the type's own rules (only when the schema passed, so they see valid data).
    fn typed_config<F>(
        &mut self,
        registered: &Registered<F>,
        config: &Value,
        origin: &Origin,
        subject: &str,
        module: Option<&str>,
    ) {
        let Some(spans) = self.config.spans(origin.doc) else {
            return;
        };
        let schema_errors =
            registered
                .schema
                .check(config, &origin.pointer, spans, subject, module);
        let schema_failed = !schema_errors.is_empty();
        self.out.extend(schema_errors);
        let ctx = CheckContext {
            config: self.config,
            registry: self.registry,
            module,
        };
        // Secrets are fetched at start: until then the type's rules would judge the
        // reference's text, not the value.
        if wf_config::secret_refs::holds_reference(config) {
            return;
        }
        // The type's own rules run whenever the config still deserializes (a value of the wrong
        // form, say), so that one mistake does not hide the others.
        match (registered.check)(config, &ctx) {
            Ok(issues) => {
                for issue in issues {
                    let d = self.issue(issue, origin, module);
                    self.out.push(d);
                }
            }
            Err(_) if schema_failed => {} // the schema errors already say what is wrong
            Err(e) => {
                let mut d = self.at(
                    Diagnostic::error("invalid-config", format!("{e:#}")),
                    origin,
                );
                if let Some(m) = module {
                    d = d.module(m);
                }
                self.out.push(d);
            }
        }
    }

    fn issue(&self, issue: ConfigIssue, base: &Origin, module: Option<&str>) -> Diagnostic {
        issue_diagnostic(self.config, issue, base, module)
    }

    fn unknown_type(&self, kind: Kind, name: &str) -> Diagnostic {
        let (catalogue, other_kind_hint): (&[&str], Option<&str>) = match kind {
            Kind::Module => (
                catalogue::MODULE_TYPES,
                name.starts_with("step.")
                    .then_some("it is a step type: use it in a pipeline's `steps:`"),
            ),
            Kind::Step => (catalogue::STEP_TYPES, None),
            Kind::Trigger => (catalogue::TRIGGER_TYPES, None),
            Kind::Workflow => (catalogue::WORKFLOW_TYPES, None),
        };
        if let Some(hint) = other_kind_hint
            .filter(|_| self.registry.step(name).is_some() || catalogue::STEP_TYPES.contains(&name))
        {
            return Diagnostic::error("wrong-kind", format!("`{name}` is not a module type"))
                .help(hint);
        }
        let registered = self.registry.names(kind);
        if catalogue.contains(&name) {
            return Diagnostic::error(
                "not-implemented",
                format!("{kind} type `{name}` is not implemented in this build yet"),
            )
            .help(format!(
                "`wf-host types` lists the {kind} types this build has"
            ));
        }
        let suggestion = did_you_mean(name, registered.iter().copied())
            .or_else(|| did_you_mean(name, catalogue.iter().copied()));
        let d = Diagnostic::error("unknown-type", format!("unknown {kind} type `{name}`"));
        match suggestion {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!("`wf-host types` lists the {kind} types")),
        }
    }

    fn dependencies(&mut self) {
        let names: Vec<&str> = self
            .config
            .modules
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        for module in &self.config.modules {
            for (j, dep) in module.depends_on.iter().enumerate() {
                let origin = module.origin.child(&format!("/dependsOn/{j}"));
                if dep == &module.name {
                    self.out.push(
                        self.at(
                            Diagnostic::error(
                                "dependency-cycle",
                                format!("module `{}` depends on itself", module.name),
                            )
                            .module(&module.name)
                            .help("remove it from its own `dependsOn`"),
                            &origin,
                        ),
                    );
                } else if self.config.module(dep).is_none() {
                    let d = Diagnostic::error(
                        "unknown-module",
                        format!("`dependsOn` names `{dep}`, which is not a module"),
                    )
                    .module(&module.name);
                    let d = match did_you_mean(dep, names.iter().copied()) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help("list modules declared under `modules:`"),
                    };
                    self.out.push(self.at(d, &origin));
                }
            }
        }
        let edges = crate::graph::dependency_edges(self.config, self.registry);
        for cycle in crate::graph::cycles(&edges) {
            let first = &self.config.modules[cycle[0]];
            let path: Vec<&str> = cycle
                .iter()
                .chain(std::iter::once(&cycle[0]))
                .map(|&i| self.config.modules[i].name.as_str())
                .collect();
            let next = &self.config.modules[cycle[1 % cycle.len()]].name;
            let pointer = match first.depends_on.iter().position(|d| d == next) {
                Some(j) => format!("/dependsOn/{j}"),
                None => "/config".to_string(), // an implicit reference from the config
            };
            self.out.push(
                self.at(
                    Diagnostic::error(
                        "dependency-cycle",
                        format!("dependency cycle: {}", path.join(" → ")),
                    )
                    .module(&first.name)
                    .help(if pointer.starts_with("/dependsOn") {
                        "remove one of these `dependsOn` entries"
                    } else {
                        "a module's config refers to another in this cycle; break it by naming a different module"
                    }),
                    &first.origin.child(&pointer),
                ),
            );
        }
    }

    fn section(&mut self, kind: Kind, section: &wf_config::SectionDecl) {
        let origin = &section.origin;
        let key_diag = |d: Diagnostic| {
            self.config
                .diagnostic_at(d, origin)
                .at(self.config.locate_key(origin))
        };
        match kind {
            Kind::Workflow => match self.registry.workflow(&section.kind) {
                Some(entry) => {
                    let subject = format!("`{}` workflow", section.kind);
                    self.typed_config(&entry.registered, &section.config, origin, &subject, None);
                    let label = format!("{} workflow", section.label());
                    self.embedded_steps(&section.config, origin, &label);
                }
                None => {
                    let d = key_diag(self.unknown_type(Kind::Workflow, &section.kind));
                    self.out.push(d);
                }
            },
            _ => match self.registry.trigger(&section.kind) {
                Some(registered) => {
                    let subject = format!("`{}` trigger", section.kind);
                    self.typed_config(registered, &section.config, origin, &subject, None);
                }
                None => {
                    let d = key_diag(self.unknown_type(Kind::Trigger, &section.kind));
                    self.out.push(d);
                }
            },
        }
    }

    fn pipelines(&mut self) {
        for pipeline in &self.config.pipelines {
            let steps = pipeline.value.get("steps").and_then(Value::as_array);
            if steps.is_some_and(|s| s.is_empty()) {
                self.out.push(self.at(
                    Diagnostic::warning(
                        "empty-pipeline",
                        format!("pipeline `{}` has no steps", pipeline.name),
                    ),
                    &pipeline.origin.child("/steps"),
                ));
            }
            let trigger_type = pipeline
                .value
                .pointer("/trigger/type")
                .and_then(Value::as_str);
            if let Some(kind) = trigger_type {
                match self.registry.trigger(kind) {
                    None => {
                        let d = self.unknown_type(Kind::Trigger, kind);
                        self.out
                            .push(self.at(d, &pipeline.origin.child("/trigger/type")));
                    }
                    Some(registered) => {
                        // The inline trigger in the form its type checks, reported at `config`.
                        let config = pipeline
                            .value
                            .pointer("/trigger/config")
                            .cloned()
                            .unwrap_or(Value::Null);
                        if let Some(full) =
                            self.registry.inline_trigger(kind, &pipeline.name, config)
                        {
                            let origin = pipeline.origin.child("/trigger/config");
                            let subject =
                                format!("inline `{kind}` trigger of pipeline `{}`", pipeline.name);
                            let before = self.out.len();
                            self.typed_config(registered, &full, &origin, &subject, None);
                            // Pointers into the converted form do not exist in the file: point at
                            // the trigger's config.
                            let at = self.config.locate(&origin);
                            for d in &mut self.out[before..] {
                                d.location = at;
                            }
                        }
                    }
                }
            }
            // Compensation runs after the main steps failed: it may read any of them.
            let main: Vec<String> = steps
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            for (list, earlier) in [("steps", Vec::new()), ("compensation", main)] {
                if let Some(entries) = pipeline.value.get(list).and_then(Value::as_array) {
                    let origin = pipeline.origin.child(&format!("/{list}"));
                    self.step_list(entries, &origin, &pipeline.name, &earlier);
                }
            }
        }
    }

    /// Names unique within the list, types known, each config valid for its type.
    fn step_list(
        &mut self,
        entries: &[Value],
        origin: &Origin,
        pipeline: &str,
        earlier: &[String],
    ) {
        let mut seen: BTreeMap<&str, ()> = BTreeMap::new();
        for (i, step) in entries.iter().enumerate() {
            let origin = origin.child(&format!("/{i}"));
            let (Some(name), Some(type_name)) = (
                step.get("name").and_then(Value::as_str),
                step.get("type").and_then(Value::as_str),
            ) else {
                continue; // reported by the schema
            };
            for (referenced, at) in step_references(step.get("config").unwrap_or(&Value::Null)) {
                if seen.contains_key(referenced.as_str()) || earlier.contains(&referenced) {
                    continue;
                }
                let later = entries
                    .iter()
                    .any(|s| s.get("name").and_then(Value::as_str) == Some(referenced.as_str()));
                let message = if referenced == name {
                    format!(
                        "step `{name}` reads its own output `steps.{referenced}`, which does not exist yet when it runs"
                    )
                } else if later {
                    format!(
                        "step `{name}` reads `steps.{referenced}`, but `{referenced}` runs after it"
                    )
                } else {
                    format!(
                        "step `{name}` reads `steps.{referenced}`, but pipeline `{pipeline}` has no step `{referenced}`"
                    )
                };
                self.out.push(self.at(
                    Diagnostic::warning("step-reference", message)
                        .help("a template can read only steps that ran before it; rendering will fail when the value is missing"),
                    &origin.child(&format!("/config{at}")),
                ));
            }
            if seen.insert(name, ()).is_some() {
                self.out.push(self.at(
                    Diagnostic::error("duplicate-name", format!("step name `{name}` is used twice in pipeline `{pipeline}`"))
                        .help("step names must be unique within a pipeline; later steps read `steps.<name>`"),
                    &origin.child("/name"),
                ));
            }
            match self.registry.step(type_name) {
                Some(registered) => {
                    let config = step
                        .get("config")
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Default::default()));
                    let subject = format!("`{type_name}` step");
                    self.typed_config(
                        registered,
                        &config,
                        &origin.child("/config"),
                        &subject,
                        None,
                    );
                }
                None => {
                    let d = self.unknown_type(Kind::Step, type_name);
                    self.out.push(self.at(d, &origin.child("/type")));
                }
            }
        }
    }

    /// Step lists inside a workflow's config (a route's `steps:` or `pipeline: {steps}`).
    fn embedded_steps(&mut self, value: &Value, origin: &Origin, label: &str) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let child_origin = origin.child(&format!(
                        "/{}",
                        wf_config::yaml::escape_pointer_segment(key)
                    ));
                    let is_step_list = (key == "steps" || key == "compensation")
                        && child.as_array().is_some_and(|items| {
                            !items.is_empty()
                                && items
                                    .iter()
                                    .all(|s| s.get("name").is_some() && s.get("type").is_some())
                        });
                    if is_step_list {
                        if let Some(items) = child.as_array() {
                            self.step_list(items, &child_origin, label, &[]);
                        }
                    } else {
                        self.embedded_steps(child, &child_origin, label);
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.embedded_steps(item, &origin.child(&format!("/{i}")), label);
                }
            }
            _ => {}
        }
    }
}

/// A type's [`ConfigIssue`] (pointer relative to `base`) as a located diagnostic.
pub(crate) fn issue_diagnostic(
    config: &AppConfig,
    issue: ConfigIssue,
    base: &Origin,
    module: Option<&str>,
) -> Diagnostic {
    let origin = base.child(&issue.pointer);
    let d = if issue.warning {
        Diagnostic::warning("config-warning", issue.message)
    } else if issue.not_implemented {
        Diagnostic::error("not-implemented", issue.message)
    } else {
        Diagnostic::error("invalid-config", issue.message)
    };
    let mut d = config.diagnostic_at(d, &origin);
    if issue.pointer.is_empty() {
        // About the whole entry: point at its key (`http:`), not at its first line.
        d = d.at(config.locate_key(&origin));
    }
    if let Some(help) = issue.help {
        d = d.help(help);
    }
    if let Some(m) = module {
        d = d.module(m);
    }
    d
}

/// Step names a config's templates read: `steps.NAME`, `.steps.NAME`, `steps["NAME"]` and
/// `index .steps "NAME"`. Only strings containing `{{` or `{%` are templates.
/// Each with the JSON pointer (within the config) of the string that reads it.
fn step_references(config: &Value) -> Vec<(String, String)> {
    fn scan(value: &Value, pointer: String, out: &mut Vec<(String, String)>) {
        match value {
            Value::String(s) if s.contains("{{") || s.contains("{%") => {
                let name_char = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
                for (i, _) in s.match_indices("steps") {
                    let before = s[..i].chars().next_back();
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue; // part of a longer word
                    }
                    let rest = &s[i + "steps".len()..];
                    let name: String = if let Some(r) = rest.strip_prefix('.') {
                        r.chars().take_while(|c| name_char(*c)).collect()
                    } else if let Some(r) = rest.strip_prefix("[\"") {
                        r.chars().take_while(|c| *c != '"').collect()
                    } else if let Some(r) = rest
                        .trim_start()
                        .strip_prefix('"')
                        .filter(|_| s[..i].ends_with('.'))
                    {
                        // `index .steps "NAME"`
                        r.chars().take_while(|c| *c != '"').collect()
                    } else {
                        String::new()
                    };
                    if !name.is_empty() && !out.iter().any(|(n, _)| *n == name) {
                        out.push((name, pointer.clone()));
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    scan(v, format!("{pointer}/{i}"), out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    scan(
                        v,
                        format!("{pointer}/{}", wf_config::yaml::escape_pointer_segment(k)),
                        out,
                    );
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    scan(config, String::new(), &mut out);
    out
}

#[cfg(test)]
mod reference_tests {
    use super::step_references;
    use serde_json::json;

    #[test]
    fn finds_step_references_in_both_dialects() {
        let config = json!({
            "a": "{{ .steps.parse.body }}",
            "b": "{{ index .steps \"parse-request\" \"body\" }}",
            "c": ["x {{ steps.load-user.id }}", "{{ steps[\"fetch\"].x }}"],
            "d": "plain steps.not-a-template",
            "e": "{{ .mysteps.x }}"
        });
        let names: Vec<String> = step_references(&config)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["parse", "parse-request", "load-user", "fetch"]);
        assert_eq!(step_references(&config)[2].1, "/c/0");
    }
}
