//! `persistence.store`: the resource store on a database module. `api.handler` resources are
//! written through to it, so they survive a restart. The original only used it when the module
//! was literally named `persistence`; here every `api.handler` of the app uses it.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::database::Database;
use crate::resource_store::ResourceStore;

/// Configuration of `persistence.store`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    /// The database module to keep resources in; optional when the application has one.
    #[serde(default)]
    pub database: Option<String>,
}

pub struct PersistenceStoreType;

impl Described for PersistenceStoreType {
    const NAME: &'static str = "persistence.store";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Keeps `api.handler` resources in a database (write-through), so they survive restarts.";
    type Config = PersistenceConfig;
}

impl ModuleType for PersistenceStoreType {
    fn check(config: &PersistenceConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        ctx.choose(
            config.database.as_deref(),
            "database",
            "database",
            crate::DATABASE_TYPES,
        )
        .err()
        .into_iter()
        .collect()
    }

    fn references(config: &PersistenceConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        ctx.choose(
            config.database.as_deref(),
            "database",
            "database",
            crate::DATABASE_TYPES,
        )
        .into_iter()
        .collect()
    }

    fn build(
        config: PersistenceConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let database =
            ctx.named_or_only::<Database>(config.database.as_deref(), "there is no database")?;
        let store = Arc::new(ResourceStore::new((*database).clone()));
        ctx.provide::<ResourceStore>(store.clone());
        Ok(Arc::new(Persistence { store }))
    }
}

struct Persistence {
    store: Arc<ResourceStore>,
}

#[async_trait]
impl Module for Persistence {
    async fn start(&self, _ctx: &StartContext) -> anyhow::Result<()> {
        self.store.ready().await
    }
}
