//! Components as step types of their own. Before the app's config is validated, every
//! component it points at (a `wasm.components` directory and the uploads kept in its data dir,
//! `dynamic.component` sources) is described, and each registers a step type under its name, so
//! a pipeline says `type: sentiment` as it says `type: step.set`, with the component's config
//! schema checked like a built-in's.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use wf_config::AppConfig;
use wf_engine::{Category, ExternalStep, Registry};

use crate::component::{ComponentKind, LoadedComponent};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::step_wasm::{WasmStep, registry_for};

/// The `.wasm` files a configuration points at, with the code cache each belongs to.
fn component_files(config: &AppConfig) -> Vec<(PathBuf, Option<PathBuf>)> {
    let mut files = Vec::new();
    let list =
        |dir: PathBuf, cache: &Option<PathBuf>, files: &mut Vec<(PathBuf, Option<PathBuf>)>| {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            found.retain(|p| crate::watch::is_component_file(p));
            found.sort();
            files.extend(found.into_iter().map(|p| (p, cache.clone())));
        };
    for module in &config.modules {
        match module.type_name.as_str() {
            "wasm.components" => {
                let data_dir = module.config["data_dir"].as_str().unwrap_or(".wf/wasm");
                let data_dir = module.base_dir.join(data_dir);
                let cache = Some(data_dir.join("cache"));
                if let Some(dir) = module.config["dir"].as_str() {
                    list(module.base_dir.join(dir), &cache, &mut files);
                }
                list(data_dir.join("components"), &cache, &mut files);
            }
            "dynamic.component" => {
                if let Some(source) = module.config["source"]
                    .as_str()
                    .filter(|s| s.ends_with(".wasm"))
                {
                    files.push((module.base_dir.join(source), None));
                }
            }
            _ => {}
        }
    }
    files
}

/// Registers a step type for every step component `config` points at. Problems (an unreadable
/// or broken file, a name a built-in already has) are returned as warnings: the component
/// itself is still reported when the app loads it, and `step.wasm` still reaches it by name.
pub async fn register_component_types(config: &AppConfig, registry: &mut Registry) -> Vec<String> {
    let mut warnings = Vec::new();
    let files = component_files(config);
    if files.is_empty() {
        return warnings;
    }
    let mut runtimes: Vec<(Option<PathBuf>, Arc<Runtime>)> = Vec::new();
    for (path, cache) in files {
        let runtime = match runtimes.iter().find(|(c, _)| *c == cache) {
            Some((_, rt)) => rt.clone(),
            None => match Runtime::new(RuntimeConfig {
                cache_dir: cache.clone(),
                max_instances: 4,
                pooling: false,
            }) {
                Ok(rt) => {
                    runtimes.push((cache, rt.clone()));
                    rt
                }
                Err(e) => {
                    warnings.push(format!("the wasm runtime cannot start: {e:#}"));
                    return warnings;
                }
            },
        };
        let bytes = match crate::component::read_file(&path, crate::component::MAX_FILE_BYTES).await
        {
            Ok(b) => Arc::new(b),
            Err(e) => {
                warnings.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let info = match LoadedComponent::inspect(&runtime, bytes).await {
            Ok(component) if component.kind == ComponentKind::Step => component.info,
            // Modules and triggers are not step types.
            Ok(_) => continue,
            Err(e) => {
                warnings.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        if let Some(existing) = registry.step(&info.name) {
            // A second file of the same component (an upload of a directory component, say)
            // is not an error; a built-in's name is.
            let built_in = existing.info.plugin != crate::PLUGIN || info.name == "step.wasm";
            if built_in {
                warnings.push(format!(
                    "{}: component `{}` has the name of a built-in step type; use it with `type: step.wasm`",
                    path.display(),
                    info.name
                ));
            }
            continue;
        }
        let component = info.name.clone();
        let schema = info
            .config_schema
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        let step = ExternalStep {
            name: info.name.clone(),
            description: format!(
                "{} (WebAssembly component {})",
                info.description, info.version
            ),
            category: Category::Wasm,
            plugin: crate::PLUGIN,
            schema,
            factory: Box::new(move |value: &Value, ctx| {
                let registry = registry_for(None, ctx)?;
                let config = value.as_object().cloned().unwrap_or_default();
                Ok(Arc::new(WasmStep::new(
                    &registry, &component, ctx.name, config, None,
                )))
            }),
        };
        if let Err(e) = registry.register_external_step(step) {
            warnings.push(format!("{}: {e}", path.display()));
        }
    }
    warnings
}
