//! `dynamic.component` (the original's module type): loads one component from a file at start,
//! with its configuration, capabilities and limits. The original loaded Go source through an
//! interpreter; here the source is a WebAssembly component (`.wasm`).

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::registry::{ComponentRegistry, Expect, ExtraGrant, Grant, Origin};
use crate::step_wasm::registry_for;

/// Configuration of `dynamic.component`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamicComponentConfig {
    /// Path of the `.wasm` component, relative to this config file.
    pub source: String,
    /// The name the component must give in its `describe`; any name when unset.
    #[serde(default, rename = "componentId")]
    pub component_id: Option<String>,
    /// The component's configuration (its `config` import).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Capabilities granted to it; everything else is denied.
    #[serde(default)]
    pub capabilities: crate::Capabilities,
    /// Its limits; unset fields take the `wasm.components` defaults.
    #[serde(default)]
    pub limits: crate::LimitsConfig,
    /// The `wasm.components` module to load it into; optional when the app has one.
    #[serde(default)]
    pub components: Option<String>,
}

pub struct DynamicComponentType;

impl Described for DynamicComponentType {
    const NAME: &'static str = "dynamic.component";
    const CATEGORY: Category = Category::Wasm;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Loads a WebAssembly component from a file at start; pipelines use it by name.";
    type Config = DynamicComponentConfig;
}

fn choose_registry(
    config: &DynamicComponentConfig,
    ctx: &CheckContext<'_>,
) -> Result<String, ConfigIssue> {
    crate::step_wasm::choose_registry(config.components.as_deref(), ctx)
}

impl ModuleType for DynamicComponentType {
    fn check(config: &DynamicComponentConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        if config.source.ends_with(".go") {
            // The original interpreted Go source; wf runs WebAssembly components instead. The
            // rest of such a module's configuration is moot until it points at a component.
            return vec![
                ConfigIssue::not_implemented(
                    "/source",
                    format!(
                        "`{}` is Go source: components are WebAssembly components now",
                        config.source
                    ),
                )
                .help("port it to a component (`wf-plugin new NAME --kind step`) and point `source` at the .wasm"),
            ];
        }
        let mut issues: Vec<ConfigIssue> = choose_registry(config, ctx).err().into_iter().collect();
        if !config.source.ends_with(".wasm") {
            issues.push(
                ConfigIssue::new(
                    "/source",
                    format!("`{}` is not a `.wasm` component", config.source),
                )
                .help("build one with `wf-plugin build`"),
            );
        }
        if let Some(id) = &config.component_id
            && let Err(message) = crate::component::check_name(id)
        {
            issues.push(ConfigIssue::new("/componentId", message));
        }
        issues
    }

    fn references(config: &DynamicComponentConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        choose_registry(config, ctx).ok().into_iter().collect()
    }

    fn build(
        config: DynamicComponentConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        Ok(Arc::new(DynamicComponent {
            registry: registry_for(config.components.as_deref(), ctx)?,
            path: ctx.base_dir.join(&config.source),
            component_id: config.component_id,
            grant: Grant {
                config: config.config,
                capabilities: config.capabilities,
                limits: config.limits,
            },
        }))
    }
}

struct DynamicComponent {
    registry: Arc<ComponentRegistry>,
    path: PathBuf,
    component_id: Option<String>,
    grant: Grant,
}

#[async_trait]
impl Module for DynamicComponent {
    async fn start(&self, _ctx: &StartContext) -> anyhow::Result<()> {
        let bytes = crate::component::read_file(&self.path, crate::component::MAX_FILE_BYTES)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read component `{}`: {e}", self.path.display()))?;
        let expect = match &self.component_id {
            Some(id) => Expect::Name(id),
            None => Expect::Any,
        };
        let spec = self
            .registry
            .spec(&expect, Arc::new(bytes), ExtraGrant::Config(&self.grant))?;
        let origin = Origin::File {
            path: self.path.display().to_string(),
        };
        self.registry
            .install(&expect, spec, origin)
            .await
            .map_err(|e| anyhow::anyhow!("component `{}`: {e}", self.path.display()))?;
        Ok(())
    }
}
