//! `wf-host`: the one place where every type category is registered, and the commands that load,
//! validate, inspect and run applications.

pub mod commands;
pub mod data_dir;
pub mod runs;

use wf_engine::{Registry, RegistryError};

/// Every type this build of wf provides.
pub fn registry() -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    wf_http::register(&mut registry)?;
    wf_messaging::register(&mut registry)?;
    wf_objects::register(&mut registry)?;
    wf_scheduler::register(&mut registry)?;
    wf_secrets::register(&mut registry)?;
    wf_outbound::register(&mut registry)?;
    wf_steps::register(&mut registry)?;
    wf_storage::register(&mut registry)?;
    wf_state::register(&mut registry)?;
    wf_auth::register(&mut registry)?;
    wf_cache::register(&mut registry)?;
    wf_wasm::register(&mut registry)?;
    Ok(registry)
}

/// Adds a step type for each WebAssembly step component the configuration in `files` points
/// at, so pipelines can name components as types (`type: sentiment`). Problems are logged as
/// warnings; the configuration's own errors are reported by the command that follows.
pub fn add_component_types(registry: &mut Registry, files: &[std::path::PathBuf]) {
    let loaded = wf_config::load_files(files, &wf_config::ProcessEnv);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("component step types are not available: {e}");
            return;
        }
    };
    let warnings = runtime.block_on(wf_wasm::component_types::register_component_types(
        &loaded.config,
        registry,
    ));
    for warning in warnings {
        tracing::warn!("component not registered as a step type: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every property of every schema has a description: they are the user documentation, the
    /// `wf-host schema` output and the builder UI's help text.
    fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
        match schema {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (name, prop) in props {
                        let described = prop
                            .get("description")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.trim().is_empty());
                        if !described {
                            out.push(format!("{path}.{name}"));
                        }
                    }
                }
                for (key, value) in map {
                    undocumented(value, &format!("{path}/{key}"), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| undocumented(v, path, out)),
            _ => {}
        }
    }

    #[test]
    fn every_config_field_is_documented() {
        let registry = super::registry().unwrap();
        let mut missing = Vec::new();
        undocumented(
            &wf_config::schema::app_schema(),
            "application",
            &mut missing,
        );
        for t in registry.types() {
            undocumented(&t.schema, t.name, &mut missing);
            assert!(!t.description.is_empty(), "{} has no description", t.name);
        }
        assert!(
            missing.is_empty(),
            "properties without a description:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_registry_builds_and_lists_the_foundation_types() {
        let registry = super::registry().unwrap();
        for name in [
            "http.server",
            "http.router",
            "http.handler",
            "health.checker",
            "api.schemas",
            "http.middleware.auth",
            "messaging.broker",
            "messaging.handler",
        ] {
            assert!(registry.module(name).is_some(), "{name} is not registered");
        }
        assert!(registry.workflow("http-admin").is_some());
        assert_eq!(
            registry.resolve_plugin("workflow-plugin-http"),
            Some("http")
        );
    }
}
