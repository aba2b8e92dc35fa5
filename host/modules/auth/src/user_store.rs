//! `auth.user-store`: the users of the app's `auth.jwt` module, kept in the app's database (the
//! one named by `database`, or the app's only database module) so they survive restarts. The
//! original kept them in memory unless a module happened to be named `persistence`.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};
use wf_storage::{chosen_database, database_of};

use crate::store::UserStore;

/// Configuration of `auth.user-store`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserStoreConfig {
    /// The database module keeping the users. Default: the app's only database module; with
    /// none, users are kept in memory and lost on restart.
    #[serde(default)]
    pub database: Option<String>,
}

pub struct UserStoreType;

impl Described for UserStoreType {
    const NAME: &'static str = "auth.user-store";
    const CATEGORY: Category = Category::Auth;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Users (email, Argon2id password hash, role, profile) and their sign-in sessions, kept in the app's database.";
    type Config = UserStoreConfig;
}

impl ModuleType for UserStoreType {
    fn check(config: &UserStoreConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        database_of(config.database.as_deref(), ctx)
            .err()
            .into_iter()
            .collect()
    }

    fn references(config: &UserStoreConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        database_of(config.database.as_deref(), ctx)
            .ok()
            .flatten()
            .into_iter()
            .collect()
    }

    fn build(
        config: UserStoreConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let database = chosen_database(config.database.as_deref(), ctx)?;
        let store = Arc::new(UserStore::new(ctx.name, database)?);
        ctx.provide::<UserStore>(store.clone());
        Ok(Arc::new(UserStoreModule { store }))
    }
}

struct UserStoreModule {
    store: Arc<UserStore>,
}

#[async_trait]
impl Module for UserStoreModule {
    async fn start(&self, _ctx: &StartContext) -> anyhow::Result<()> {
        if self.store.is_ephemeral() {
            tracing::info!(store = %self.store.name(), "users are kept in memory; add a database module to keep them across restarts");
        }
        self.store.ready().await
    }
}
