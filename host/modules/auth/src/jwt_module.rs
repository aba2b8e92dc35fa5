//! `auth.jwt` (and `auth.modular`, the original's other name): signs users up and in, issues
//! access and refresh tokens, rotates and revokes them, and manages users over HTTP (see
//! [`crate::endpoints`]). It is also an authentication provider: `http.middleware.auth`
//! accepts its access tokens.
//!
//! Users live in the app's `auth.user-store`, or — without one — in a store of this module's
//! own in the app's database (in memory when the app has none).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    StopContext, async_trait,
};
use wf_http::HttpHandler;
use wf_http::jwt::{JwtAlgorithm, JwtSigner, JwtVerifier, check_secret, read_pem};
use wf_http::middleware_auth::AuthProvider;
use wf_storage::{chosen_database, database_of};

use crate::endpoints::{AuthEndpoints, ResponseFormat};
use crate::seed::{self, SeedUser};
use crate::store::UserStore;
use crate::tokens::{REVOCATION_POLL, TokenService, TokenSettings};
use crate::user_store::UserStoreType;

/// Configuration of `auth.jwt`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthJwtConfig {
    /// HS256 signing secret, at least 32 bytes: write `${JWT_SECRET}`, never the secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Signature algorithm: `HS256` (with `secret`), `RS256` or `ES256` (with `privateKey` and
    /// `publicKey`). Tokens naming another algorithm are refused.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
    /// PEM private key signing RS256/ES256 tokens.
    #[serde(default, rename = "privateKey")]
    pub private_key: Option<String>,
    /// File holding `privateKey` (relative to this config file).
    #[serde(default, rename = "privateKeyFile")]
    pub private_key_file: Option<String>,
    /// PEM public key checking RS256/ES256 tokens.
    #[serde(default, rename = "publicKey")]
    pub public_key: Option<String>,
    /// File holding `publicKey` (relative to this config file).
    #[serde(default, rename = "publicKeyFile")]
    pub public_key_file: Option<String>,
    /// How long an access token is valid, e.g. `15m` or `24h`.
    #[serde(default = "default_token_expiry", rename = "tokenExpiry")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub token_expiry: String,
    /// How long a refresh token is valid; each refresh issues a new one.
    #[serde(default = "default_refresh_expiry", rename = "refreshTokenExpiry")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub refresh_token_expiry: String,
    /// The tokens' `iss`; tokens with another issuer are refused.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The tokens' `aud`, when set; tokens for another audience are refused.
    #[serde(default)]
    pub audience: Option<String>,
    /// A JSON file of users created at start when missing (relative to this config file):
    /// `[{"id", "data": {"email", "name", "password", "role", ...}}]` or plain user objects.
    #[serde(default, rename = "seedFile")]
    pub seed_file: Option<String>,
    /// Users created at start when missing.
    #[serde(default)]
    pub users: Vec<SeedUser>,
    /// Token response shape: `standard` (`{token, refresh_token, expires_in, user}`) or `v1`
    /// (`{access_token, refresh_token, expires_in, user}`).
    #[serde(default, rename = "responseFormat")]
    pub response_format: String,
    /// Let anyone sign up at `…/auth/register`. Off, only the first user can (later users are
    /// created by an admin at `…/auth/users`).
    #[serde(default, rename = "allowRegistration")]
    pub allow_registration: bool,
    /// The `auth.user-store` keeping the users; default: the app's only one.
    #[serde(default, rename = "userStore")]
    pub user_store: Option<String>,
    /// Without a user store: the database module keeping this module's users (default: the
    /// app's only database; with none, users are kept in memory).
    #[serde(default)]
    pub database: Option<String>,
}

fn default_token_expiry() -> String {
    "24h".to_string()
}

fn default_refresh_expiry() -> String {
    "168h".to_string()
}

fn default_issuer() -> String {
    "workflow".to_string()
}

/// Where the module's users live.
enum Users {
    /// The named `auth.user-store`.
    Store(String),
    /// A store of the module's own, in this database (or in memory).
    Own(Option<String>),
}

fn users_of(config: &AuthJwtConfig, ctx: &CheckContext<'_>) -> Result<Users, ConfigIssue> {
    let stores = ctx.modules_of_type(&[UserStoreType::NAME]);
    if config.user_store.is_none() && stores.is_empty() {
        return database_of(config.database.as_deref(), ctx).map(Users::Own);
    }
    if config.database.is_some() {
        return Err(ConfigIssue::new(
            "/database",
            "`database` is for a module without a user store; this one uses an `auth.user-store`",
        )
        .help("set `database` on the `auth.user-store` module instead"));
    }
    ctx.choose(
        config.user_store.as_deref(),
        "userStore",
        "user store",
        &[UserStoreType::NAME],
    )
    .map(Users::Store)
}

fn duration(pointer: &str, text: &str) -> Result<Duration, ConfigIssue> {
    match parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(ConfigIssue::new(pointer, "must be at least one second")),
        Err(e) => Err(ConfigIssue::new(pointer, e)),
    }
}

fn response_format(text: &str) -> Option<ResponseFormat> {
    match text {
        "" | "standard" => Some(ResponseFormat::Standard),
        "v1" => Some(ResponseFormat::V1),
        _ => None,
    }
}

fn check(config: &AuthJwtConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let has_private = config.private_key.is_some() || config.private_key_file.is_some();
    let has_public = config.public_key.is_some() || config.public_key_file.is_some();
    if config.algorithm.is_hmac() {
        issues.extend(check_secret("/secret", config.secret.as_deref()));
        if has_private || has_public {
            issues.push(ConfigIssue::new(
                "/algorithm",
                "keys are for RS256 or ES256; set `algorithm` to match them, or remove them",
            ));
        }
    } else {
        if config.secret.is_some() {
            issues.push(ConfigIssue::new(
                "/secret",
                format!(
                    "`{:?}` signs with `privateKey`, not `secret`",
                    config.algorithm
                ),
            ));
        }
        if !has_private || !has_public {
            issues.push(
                ConfigIssue::new(
                    "/algorithm",
                    format!(
                        "`{:?}` needs `privateKey` (to sign) and `publicKey` (to check)",
                        config.algorithm
                    ),
                )
                .help(
                    "give each inline as PEM, or as a file with `privateKeyFile` / `publicKeyFile`",
                ),
            );
        }
    }
    for (pointer, text) in [
        ("/tokenExpiry", &config.token_expiry),
        ("/refreshTokenExpiry", &config.refresh_token_expiry),
    ] {
        issues.extend(duration(pointer, text).err());
    }
    if response_format(&config.response_format).is_none() {
        issues.push(ConfigIssue::new(
            "/responseFormat",
            format!(
                "unknown response format `{}`; use `standard` or `v1`",
                config.response_format
            ),
        ));
    }
    for (i, user) in config.users.iter().enumerate() {
        if let Some(problem) = user.problem() {
            issues.push(ConfigIssue::new(format!("/users/{i}"), problem));
        }
    }
    issues.extend(users_of(config, ctx).err());
    issues
}

fn references(config: &AuthJwtConfig, ctx: &CheckContext<'_>) -> Vec<String> {
    match users_of(config, ctx) {
        Ok(Users::Store(name)) | Ok(Users::Own(Some(name))) => vec![name],
        _ => Vec::new(),
    }
}

fn build(config: AuthJwtConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
    let private_pem = read_pem(
        config.private_key.as_deref(),
        config.private_key_file.as_deref(),
        ctx.base_dir,
        "privateKey",
    )?;
    let public_pem = read_pem(
        config.public_key.as_deref(),
        config.public_key_file.as_deref(),
        ctx.base_dir,
        "publicKey",
    )?;
    let signer = JwtSigner::new(
        config.algorithm,
        config.secret.as_deref(),
        private_pem.as_deref(),
    )?;
    let verifier = JwtVerifier::new(
        config.algorithm,
        config.secret.as_deref(),
        public_pem.as_deref(),
        Some(&config.issuer),
        config.audience.as_deref(),
    )?;
    let settings = TokenSettings {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        access_ttl: duration("", &config.token_expiry)
            .map_err(|e| anyhow::anyhow!("`tokenExpiry`: {}", e.message))?,
        refresh_ttl: duration("", &config.refresh_token_expiry)
            .map_err(|e| anyhow::anyhow!("`refreshTokenExpiry`: {}", e.message))?,
    };
    let tokens = Arc::new(TokenService::new(signer, verifier, settings));
    // The key pair must belong together, or every token would be refused after sign-in.
    tokens
        .self_check()
        .map_err(|e| anyhow::anyhow!("the signing and checking keys do not match: {e}"))?;

    // As validation chose (`users_of`): the named store, the only one, or a store of its own.
    let only_store = ctx.all::<UserStore>().first().map(|(_, s)| s.clone());
    let store = match (&config.user_store, only_store) {
        (Some(name), _) => ctx.service::<UserStore>(name)?,
        (None, Some(store)) => store,
        (None, None) => Arc::new(UserStore::new(
            ctx.name,
            chosen_database(config.database.as_deref(), ctx)?,
        )?),
    };
    let mut seeds = config.users;
    if let Some(file) = &config.seed_file {
        seeds.extend(seed::read_file(&ctx.base_dir.join(file))?);
    }
    let format = response_format(&config.response_format).unwrap_or(ResponseFormat::Standard);
    let endpoints = Arc::new(AuthEndpoints::new(
        tokens.clone(),
        store.clone(),
        format,
        config.allow_registration,
    ));
    ctx.provide::<dyn AuthProvider>(tokens.clone());
    ctx.provide::<dyn HttpHandler>(endpoints);
    Ok(Arc::new(AuthJwtModule {
        name: ctx.name.to_string(),
        tokens,
        store,
        seeds,
        poller: Mutex::new(None),
    }))
}

pub struct AuthJwtType;

impl Described for AuthJwtType {
    const NAME: &'static str = "auth.jwt";
    const CATEGORY: Category = Category::Auth;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "JWT sign-up, sign-in, refresh-token rotation, sign-out and user management over HTTP; `http.middleware.auth` accepts its tokens.";
    type Config = AuthJwtConfig;
}

impl ModuleType for AuthJwtType {
    fn check(config: &AuthJwtConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check(config, ctx)
    }

    fn references(config: &AuthJwtConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        references(config, ctx)
    }

    fn build(config: AuthJwtConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        build(config, ctx)
    }
}

/// `auth.modular`: the original's documented name for the same module.
pub struct AuthModularType;

impl Described for AuthModularType {
    const NAME: &'static str = "auth.modular";
    const CATEGORY: Category = Category::Auth;
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str = "The original's name for `auth.jwt`: JWT sign-up, sign-in, token rotation and user management.";
    type Config = AuthJwtConfig;
}

impl ModuleType for AuthModularType {
    fn check(config: &AuthJwtConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check(config, ctx)
    }

    fn references(config: &AuthJwtConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        references(config, ctx)
    }

    fn build(config: AuthJwtConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        build(config, ctx)
    }
}

/// Polls between prunings of expired sessions: about an hour.
const PRUNE_EVERY_POLLS: u64 = 3600 / REVOCATION_POLL.as_secs();

struct AuthJwtModule {
    name: String,
    tokens: Arc<TokenService>,
    store: Arc<UserStore>,
    seeds: Vec<SeedUser>,
    /// Re-reads revocations made by other hosts sharing the database.
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[async_trait]
impl Module for AuthJwtModule {
    async fn start(&self, _ctx: &StartContext) -> anyhow::Result<()> {
        if self.store.is_ephemeral() {
            tracing::info!(module = %self.name, "users are kept in memory; add a database module to keep them across restarts");
        }
        self.store.ready().await?;
        let created = seed::apply(&self.store, &self.seeds).await?;
        if created > 0 {
            tracing::info!(module = %self.name, created, "seed users created");
        }
        let started = chrono::Utc::now().timestamp();
        self.tokens.load_revocations(&self.store, 0).await?;
        self.tokens.load_sessions(&self.store, 0).await?;
        if let Err(e) = self.store.prune(started - 86_400).await {
            tracing::warn!(module = %self.name, error = %e, "could not prune expired sessions");
        }
        let (tokens, store, name) = (self.tokens.clone(), self.store.clone(), self.name.clone());
        let poller = tokio::spawn(async move {
            let mut since = started;
            let mut polls: u64 = 0;
            loop {
                tokio::time::sleep(REVOCATION_POLL).await;
                polls += 1;
                // Sessions expired for a day are forgotten hourly, not only at start.
                if polls.is_multiple_of(PRUNE_EVERY_POLLS)
                    && let Err(e) = store.prune(chrono::Utc::now().timestamp() - 86_400).await
                {
                    tracing::warn!(module = %name, error = %e, "could not prune expired sessions");
                }
                // Overlap the windows a little: clocks of hosts differ.
                let now = chrono::Utc::now().timestamp();
                let read = match tokens.load_revocations(&store, since - 5).await {
                    Ok(()) => tokens.load_sessions(&store, since).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(()) => since = now,
                    Err(e) => {
                        tracing::warn!(module = %name, error = %e, "could not read revoked sessions")
                    }
                }
            }
        });
        if let Ok(mut slot) = self.poller.lock() {
            *slot = Some(poller);
        }
        Ok(())
    }

    async fn stop(&self, _ctx: &StopContext) -> anyhow::Result<()> {
        if let Some(poller) = self.poller.lock().ok().and_then(|mut p| p.take()) {
            poller.abort();
        }
        Ok(())
    }
}
