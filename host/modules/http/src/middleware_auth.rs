//! `http.middleware.auth`: lets a request through when it carries a valid credential — a JWT in
//! `Authorization: <authType> <token>` (checked against this middleware's own key, then every
//! authentication provider module such as `auth.jwt`) or an API key — and, with `requireRoles`,
//! a required role. Refusals are JSON: 401 `{"error": ...}` with the original's texts, 403 for
//! a missing role. The verified claims go to the handler and to pipelines (`meta.auth`).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use http::{StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, ServiceKind,
    StartContext, async_trait,
};

use crate::jwt::{JwtAlgorithm, JwtVerifier, TokenError, check_secret, read_pem, roles_of};
use crate::{HttpMiddleware, Request, Response, RouteService, json_response, route_fn};

/// Validates bearer tokens for `http.middleware.auth` (implemented by `auth.*` modules).
pub trait AuthProvider: Send + Sync {
    /// The token's claims, or why this provider refuses it.
    fn authenticate(&self, token: &str) -> Result<Value, TokenError>;
}

impl ServiceKind for dyn AuthProvider {
    const LABEL: &'static str = "an authentication provider";
}

/// The verified claims of the request's credential, in its extensions.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthClaims(pub Value);

/// Configuration of `http.middleware.auth`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthMiddlewareConfig {
    /// The scheme expected in the `Authorization` header.
    #[serde(default = "default_auth_type", rename = "authType")]
    pub auth_type: String,
    /// The algorithm this middleware's own key checks (`HS256` with `secretKey`, `RS256` or
    /// `ES256` with `publicKey`); tokens naming any other algorithm are refused.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
    /// Secret for HS256-signed JWTs, at least 32 bytes: write `${JWT_SECRET}`, not the secret.
    /// Without a key, tokens are checked by the app's `auth.*` modules only.
    #[serde(default, rename = "secretKey")]
    pub secret_key: Option<String>,
    /// PEM public key checking RS256/ES256 tokens.
    #[serde(default, rename = "publicKey")]
    pub public_key: Option<String>,
    /// File holding `publicKey` (relative to this config file).
    #[serde(default, rename = "publicKeyFile")]
    pub public_key_file: Option<String>,
    /// Tokens checked by this middleware's key must carry this `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Tokens checked by this middleware's key must carry this `aud`.
    #[serde(default)]
    pub audience: Option<String>,
    /// API keys accepted in `apiKeyHeader`, for machine clients.
    #[serde(default, rename = "apiKeys")]
    pub api_keys: Vec<ApiKeyConfig>,
    /// The request header carrying an API key.
    #[serde(default = "default_api_key_header", rename = "apiKeyHeader")]
    pub api_key_header: String,
    /// Roles of which the caller needs at least one (from the token's `role` or `roles`, or the
    /// API key's `roles`); others get 403. Routes can require roles too (`roles:`).
    #[serde(default, rename = "requireRoles")]
    pub require_roles: Vec<String>,
}

/// One accepted API key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who the key belongs to: the `sub` pipelines see.
    pub name: String,
    /// The key itself: write `${API_KEY}`, not the key. At least 16 bytes.
    pub key: String,
    /// Roles granted to callers with this key.
    #[serde(default)]
    pub roles: Vec<String>,
}

fn default_auth_type() -> String {
    "Bearer".to_string()
}

fn default_api_key_header() -> String {
    "X-API-Key".to_string()
}

/// API keys shorter than this are refused.
const MIN_API_KEY_BYTES: usize = 16;

pub struct AuthMiddlewareType;

impl Described for AuthMiddlewareType {
    const NAME: &'static str = "http.middleware.auth";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Rejects requests without a valid JWT (its own key or an `auth.*` module's) or API key with 401, and callers without a required role with 403.";
    type Config = AuthMiddlewareConfig;
}

impl ModuleType for AuthMiddlewareType {
    fn check(config: &AuthMiddlewareConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let providers = ctx
            .config
            .modules
            .iter()
            .any(|m| m.type_name.starts_with("auth."));
        let own_key = config.secret_key.is_some()
            || config.public_key.is_some()
            || config.public_key_file.is_some();
        if !own_key && !providers && config.api_keys.is_empty() {
            issues.push(
                ConfigIssue::warning("", "no `secretKey`, no `apiKeys` and no `auth.*` module: every request through this middleware will get 401")
                    .help("set `secretKey: ${JWT_SECRET}`, or add an `auth.jwt` module"),
            );
        }
        if config.auth_type.is_empty() || config.auth_type.contains(char::is_whitespace) {
            issues.push(ConfigIssue::new(
                "/authType",
                "`authType` must be one word, e.g. `Bearer`",
            ));
        }
        if config.algorithm.is_hmac() {
            // The original ignored `secretKey`, so its examples carry short ones: a warning
            // here (`auth.jwt`, which signs, refuses them).
            if config.secret_key.is_some()
                && let Some(mut issue) = check_secret("/secretKey", config.secret_key.as_deref())
            {
                if config.secret_key.as_deref() != Some("") {
                    issue.warning = true;
                    issue
                        .message
                        .push_str("; tokens signed with it can be forged");
                }
                issues.push(issue);
            }
            if config.public_key.is_some() || config.public_key_file.is_some() {
                issues.push(ConfigIssue::new("/algorithm", "a public key checks RS256 or ES256 tokens; set `algorithm` to match the key").help("HS256 tokens are checked with `secretKey`"));
            }
        } else {
            if config.secret_key.is_some() {
                issues.push(
                    ConfigIssue::new(
                        "/secretKey",
                        format!(
                            "`{:?}` tokens are checked with a public key, not `secretKey`",
                            config.algorithm
                        ),
                    )
                    .help("set `publicKey` or `publicKeyFile`"),
                );
            }
            if config.public_key.is_none() && config.public_key_file.is_none() {
                issues.push(ConfigIssue::new(
                    "/algorithm",
                    format!(
                        "`{:?}` needs `publicKey` or `publicKeyFile`",
                        config.algorithm
                    ),
                ));
            }
        }
        if http::HeaderName::from_bytes(config.api_key_header.as_bytes()).is_err() {
            issues.push(ConfigIssue::new(
                "/apiKeyHeader",
                "`apiKeyHeader` is not a valid header name",
            ));
        }
        for (i, key) in config.api_keys.iter().enumerate() {
            if key.key.len() < MIN_API_KEY_BYTES {
                issues.push(
                    ConfigIssue::new(format!("/apiKeys/{i}/key"), format!("API keys must be at least {MIN_API_KEY_BYTES} bytes"))
                        .help("generate one with `openssl rand -hex 24` and pass it in from the environment"),
                );
            }
        }
        issues
    }

    fn build(
        config: AuthMiddlewareConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let middleware = Arc::new(AuthMiddleware::new(config, ctx.base_dir)?);
        ctx.provide::<dyn HttpMiddleware>(middleware.clone());
        Ok(middleware)
    }
}

/// An API key, kept as its SHA-256 so that comparing does not leak the key through timing.
struct ApiKey {
    digest: [u8; 32],
    claims: Value,
}

pub struct AuthMiddleware {
    scheme: String,
    verifier: Option<JwtVerifier>,
    api_key_header: http::HeaderName,
    api_keys: Vec<ApiKey>,
    required_roles: Vec<String>,
    /// Every authentication provider of the app, found when it starts.
    providers: OnceLock<Vec<Arc<dyn AuthProvider>>>,
}

/// Why a request is refused.
enum Refusal {
    Unauthenticated(String),
    Forbidden(String),
}

impl AuthMiddleware {
    fn new(config: AuthMiddlewareConfig, base_dir: &Path) -> anyhow::Result<AuthMiddleware> {
        let public_pem = read_pem(
            config.public_key.as_deref(),
            config.public_key_file.as_deref(),
            base_dir,
            "publicKey",
        )?;
        let verifier = if config.secret_key.is_some() || public_pem.is_some() {
            Some(JwtVerifier::new(
                config.algorithm,
                config.secret_key.as_deref(),
                public_pem.as_deref(),
                config.issuer.as_deref(),
                config.audience.as_deref(),
            )?)
        } else {
            None
        };
        let api_keys = config
            .api_keys
            .into_iter()
            .map(|k| ApiKey {
                digest: Sha256::digest(k.key.as_bytes()).into(),
                claims: json!({"sub": k.name, "auth": "api_key", "roles": k.roles}),
            })
            .collect();
        Ok(AuthMiddleware {
            scheme: config.auth_type,
            verifier,
            api_key_header: http::HeaderName::from_bytes(config.api_key_header.as_bytes())?,
            api_keys,
            required_roles: config.require_roles,
            providers: OnceLock::new(),
        })
    }

    fn authenticate(&self, req: &Request) -> Result<Value, Refusal> {
        let claims = self.credential(req).map_err(Refusal::Unauthenticated)?;
        check_roles(&self.required_roles, &claims).map_err(Refusal::Forbidden)?;
        Ok(claims)
    }

    fn credential(&self, req: &Request) -> Result<Value, String> {
        if !self.api_keys.is_empty()
            && let Some(key) = req.headers().get(&self.api_key_header)
        {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            return self
                .api_keys
                .iter()
                .find(|k| constant_time_eq(&k.digest, &digest))
                .map(|k| k.claims.clone())
                .ok_or_else(|| "Invalid credentials".to_string());
        }
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or("Authorization header required")?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(&self.scheme))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| format!("{} authorization required", self.scheme))?;
        // The app's `auth.*` modules first: they know revoked sessions. A token one of them
        // calls revoked stays refused even if this middleware's own key (often the same
        // secret) would accept it.
        let mut refusal = TokenError::Invalid;
        for provider in self.providers.get().into_iter().flatten() {
            match provider.authenticate(token) {
                Ok(claims) if !is_refresh(&claims) => return Ok(claims),
                Ok(_) => {}
                Err(TokenError::Revoked) => return Err(TokenError::Revoked.message().to_string()),
                Err(e) if e != TokenError::Invalid => refusal = e,
                Err(_) => {}
            }
        }
        if let Some(verifier) = &self.verifier {
            match verifier.verify(token) {
                Ok(claims) if !is_refresh(&claims) => return Ok(claims),
                Ok(_) => {}
                Err(e) if e != TokenError::Invalid => refusal = e,
                Err(_) => {}
            }
        }
        Err(refusal.message().to_string())
    }
}

/// A refresh token proves a sign-in, not a request: it only buys new tokens.
fn is_refresh(claims: &Value) -> bool {
    claims.get("type").and_then(Value::as_str) == Some("refresh")
}

/// Compares two digests in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Ok` when `required` is empty or the claims grant one of its roles; else the 403 message.
pub fn check_roles(required: &[String], claims: &Value) -> Result<(), String> {
    if required.is_empty() || roles_of(claims).any(|r| required.iter().any(|q| q == r)) {
        return Ok(());
    }
    Err(match required {
        [one] => format!("forbidden: requires role {one}"),
        many => format!("forbidden: requires one of the roles {}", many.join(", ")),
    })
}

/// Wraps a route's handler so that only callers with one of `roles` reach it. It sits inside
/// the route's middlewares, so an authentication middleware has already run; a request without
/// claims (no authentication middleware ran) is refused with 401.
pub fn require_roles(roles: Vec<String>, inner: RouteService) -> RouteService {
    if roles.is_empty() {
        return inner;
    }
    let roles = Arc::new(roles);
    route_fn(move |req: Request| {
        let verdict = match req.extensions().get::<AuthClaims>() {
            Some(claims) => check_roles(&roles, &claims.0).map_err(Refusal::Forbidden),
            None => Err(Refusal::Unauthenticated(
                "Authorization header required".to_string(),
            )),
        };
        let inner = inner.clone();
        async move {
            match verdict {
                Ok(()) => crate::call(inner, req).await,
                Err(refusal) => refusal_response(refusal, None),
            }
        }
    })
}

fn refusal_response(refusal: Refusal, scheme: Option<&str>) -> Response {
    match refusal {
        Refusal::Forbidden(message) => {
            json_response(StatusCode::FORBIDDEN, &json!({"error": message}))
        }
        Refusal::Unauthenticated(message) => {
            let mut response = json_response(StatusCode::UNAUTHORIZED, &json!({"error": message}));
            // RFC 9110: a 401 names the scheme the client should use.
            if let Some(challenge) = scheme.and_then(|s| http::HeaderValue::from_str(s).ok()) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
    }
}

#[async_trait]
impl Module for AuthMiddleware {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let providers = ctx
            .app
            .services()
            .map(|s| {
                s.all::<dyn AuthProvider>()
                    .into_iter()
                    .map(|(_, p)| p)
                    .collect()
            })
            .unwrap_or_default();
        let _ = self.providers.set(providers);
        Ok(())
    }
}

impl HttpMiddleware for AuthMiddleware {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |mut req: Request| {
            let verdict = self.authenticate(&req);
            let this = self.clone();
            let inner = inner.clone();
            async move {
                match verdict {
                    Ok(claims) => {
                        req.extensions_mut().insert(AuthClaims(claims));
                        crate::call(inner, req).await
                    }
                    Err(refusal) => refusal_response(refusal, Some(&this.scheme)),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const SECRET: &str = "a-test-secret-that-is-32-bytes-long!";
    const API_KEY: &str = "k-0123456789abcdef0123";

    fn config(extra: Value) -> AuthMiddlewareConfig {
        let mut base = json!({"secretKey": SECRET});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn middleware(extra: Value) -> Arc<AuthMiddleware> {
        let m = AuthMiddleware::new(config(extra), Path::new(".")).unwrap();
        let _ = m.providers.set(Vec::new());
        Arc::new(m)
    }

    fn token(secret: &str, algorithm: Algorithm, exp_offset: i64, extra: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({"sub": "u1", "role": "editor", "exp": now + exp_offset});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn valid() -> String {
        format!("Bearer {}", token(SECRET, Algorithm::HS256, 60, json!({})))
    }

    async fn call(m: Arc<AuthMiddleware>, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let inner = route_fn(|req: Request| async move {
            let claims = req.extensions().get::<AuthClaims>().cloned().unwrap();
            json_response(StatusCode::OK, &claims.0)
        });
        let service = m.layer(inner);
        let mut builder = http::Request::builder().uri("/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let res = crate::call(service, builder.body(Body::empty()).unwrap()).await;
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn accepts_valid_tokens_and_exposes_claims() {
        let (status, claims) = call(middleware(json!({})), &[("authorization", &valid())]).await;
        assert_eq!(
            (status, claims["sub"].as_str()),
            (StatusCode::OK, Some("u1"))
        );
    }

    #[tokio::test]
    async fn refusals_are_json_with_the_original_texts() {
        let refused = |text: &str| (StatusCode::UNAUTHORIZED, json!({"error": text}));
        let m = || middleware(json!({}));
        assert_eq!(
            call(m(), &[]).await,
            refused("Authorization header required")
        );
        assert_eq!(
            call(m(), &[("authorization", "Basic abc")]).await,
            refused("Bearer authorization required")
        );
        assert_eq!(
            call(m(), &[("authorization", "Bearer garbage")]).await,
            refused("Invalid credentials")
        );
        let expired = token(SECRET, Algorithm::HS256, -3600, json!({}));
        assert_eq!(
            call(m(), &[("authorization", &format!("Bearer {expired}"))]).await,
            refused("token expired")
        );
        let wrong_key = token(
            "another-secret-that-is-32-bytes-long",
            Algorithm::HS256,
            60,
            json!({}),
        );
        assert_eq!(
            call(m(), &[("authorization", &format!("Bearer {wrong_key}"))]).await,
            refused("Invalid credentials")
        );
        let wrong_alg = token(SECRET, Algorithm::HS512, 60, json!({}));
        assert_eq!(
            call(m(), &[("authorization", &format!("Bearer {wrong_alg}"))]).await,
            refused("Invalid credentials")
        );
        let refresh = token(SECRET, Algorithm::HS256, 60, json!({"type": "refresh"}));
        assert_eq!(
            call(m(), &[("authorization", &format!("Bearer {refresh}"))]).await,
            refused("Invalid credentials")
        );
    }

    #[tokio::test]
    async fn required_roles_are_enforced_with_403() {
        let m = || middleware(json!({"requireRoles": ["admin"]}));
        let (status, body) = call(m(), &[("authorization", &valid())]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "forbidden: requires role admin");
        let admin = token(SECRET, Algorithm::HS256, 60, json!({"roles": ["admin"]}));
        let (status, _) = call(m(), &[("authorization", &format!("Bearer {admin}"))]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn api_keys_authenticate_machine_clients() {
        let m = || {
            middleware(json!({"apiKeys": [{"name": "ci", "key": API_KEY, "roles": ["deployer"]}]}))
        };
        let (status, claims) = call(m(), &[("x-api-key", API_KEY)]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            claims,
            json!({"sub": "ci", "auth": "api_key", "roles": ["deployer"]})
        );
        let (status, body) = call(m(), &[("x-api-key", "k-0123456789abcdef0124")]).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::UNAUTHORIZED,
                json!({"error": "Invalid credentials"})
            )
        );
    }
}
