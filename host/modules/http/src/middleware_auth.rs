//! `http.middleware.auth`: requires `Authorization: <authType> <token>` and accepts the token if
//! it is a valid HS256 JWT signed with `secretKey`, or if an authentication provider module (such
//! as `auth.jwt`) vouches for it. Rejections are `401` with the original's texts.

use std::sync::{Arc, OnceLock};

use http::{StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, ServiceKind,
    StartContext, async_trait,
};

use crate::{HttpMiddleware, Request, RouteService, route_fn, text_response};

/// Validates bearer tokens for `http.middleware.auth` (implemented by `auth.*` modules).
pub trait AuthProvider: Send + Sync {
    /// The token's claims, or `None` when this provider does not accept it.
    fn authenticate(&self, token: &str) -> Option<Value>;
}

impl ServiceKind for dyn AuthProvider {
    const LABEL: &'static str = "an authentication provider";
}

/// The verified claims of the request's token, in its extensions.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthClaims(pub Value);

/// Configuration of `http.middleware.auth`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthMiddlewareConfig {
    /// The scheme expected in the `Authorization` header.
    #[serde(default = "default_auth_type", rename = "authType")]
    pub auth_type: String,
    /// Secret for HS256-signed JWTs. Tokens must carry an unexpired `exp`. Use at least 32
    /// random bytes, and `${ENV_VAR}` rather than the secret itself.
    #[serde(default, rename = "secretKey")]
    pub secret_key: Option<String>,
}

fn default_auth_type() -> String {
    "Bearer".to_string()
}

pub struct AuthMiddlewareType;

impl Described for AuthMiddlewareType {
    const NAME: &'static str = "http.middleware.auth";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Rejects requests without a valid `Authorization` token (HS256 JWT or an authentication provider module) with 401.";
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
        if config.secret_key.is_none() && !providers {
            issues.push(
                ConfigIssue::warning("", "no `secretKey` and no `auth.*` module: every request through this middleware will get 401")
                    .help("set `secretKey: ${JWT_SECRET}`"),
            );
        }
        if config.auth_type.is_empty() || config.auth_type.contains(char::is_whitespace) {
            issues.push(ConfigIssue::new(
                "/authType",
                "`authType` must be one word, e.g. `Bearer`",
            ));
        }
        if let Some(secret) = &config.secret_key {
            if secret.is_empty() {
                issues.push(ConfigIssue::new("/secretKey", "`secretKey` is empty"));
            } else if secret.len() < 32 {
                issues.push(
                    ConfigIssue::warning("/secretKey", format!("`secretKey` is {} bytes; HS256 secrets shorter than 32 bytes can be guessed", secret.len()))
                        .help("use 32 or more random bytes, from the environment: `secretKey: ${JWT_SECRET}`"),
                );
            }
        }
        issues
    }

    fn build(
        config: AuthMiddlewareConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let hs256 = config.secret_key.map(|secret| {
            // Pinned to HS256: a token naming any other algorithm (or `none`) is refused.
            let mut validation = Validation::new(Algorithm::HS256);
            validation.validate_nbf = true;
            (DecodingKey::from_secret(secret.as_bytes()), validation)
        });
        let middleware = Arc::new(AuthMiddleware {
            scheme: config.auth_type,
            hs256,
            providers: OnceLock::new(),
        });
        ctx.provide::<dyn HttpMiddleware>(middleware.clone());
        Ok(middleware)
    }
}

pub struct AuthMiddleware {
    scheme: String,
    hs256: Option<(DecodingKey, Validation)>,
    /// Every authentication provider of the app, found when it starts.
    providers: OnceLock<Vec<Arc<dyn AuthProvider>>>,
}

impl AuthMiddleware {
    fn authenticate(&self, req: &Request) -> Result<Value, &'static str> {
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
            .ok_or("scheme")?;
        if let Some((key, validation)) = &self.hs256
            && let Ok(data) = decode::<Value>(token, key, validation)
        {
            return Ok(data.claims);
        }
        self.providers
            .get()
            .into_iter()
            .flatten()
            .find_map(|p| p.authenticate(token))
            .ok_or("Invalid credentials")
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
            let scheme_message = format!("{} authorization required", self.scheme);
            let scheme = self.scheme.clone();
            let inner = inner.clone();
            async move {
                match verdict {
                    Ok(claims) => {
                        req.extensions_mut().insert(AuthClaims(claims));
                        match inner.oneshot(req).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    }
                    Err(message) => {
                        let text = if message == "scheme" {
                            scheme_message.as_str()
                        } else {
                            message
                        };
                        let mut response = text_response(StatusCode::UNAUTHORIZED, text);
                        // RFC 9110: a 401 names the scheme the client should use.
                        if let Ok(challenge) = http::HeaderValue::from_str(&scheme) {
                            response
                                .headers_mut()
                                .insert(header::WWW_AUTHENTICATE, challenge);
                        }
                        response
                    }
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
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-that-is-32-bytes-long!";

    fn middleware() -> Arc<AuthMiddleware> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        let m = AuthMiddleware {
            scheme: "Bearer".into(),
            hs256: Some((DecodingKey::from_secret(SECRET.as_bytes()), validation)),
            providers: OnceLock::new(),
        };
        let _ = m.providers.set(Vec::new());
        Arc::new(m)
    }

    fn token(secret: &str, algorithm: Algorithm, exp_offset: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({"sub": "u1", "role": "admin", "exp": now + exp_offset});
        encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    async fn call(auth: Option<String>) -> (StatusCode, String) {
        let inner = route_fn(|req: Request| async move {
            let claims = req.extensions().get::<AuthClaims>().cloned().unwrap();
            http::Response::new(Body::from(claims.0["sub"].as_str().unwrap().to_string()))
        });
        let service = middleware().layer(inner);
        let mut builder = http::Request::builder().uri("/x");
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        let res = service
            .oneshot(builder.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8_lossy(&body).trim_end().to_string(),
        )
    }

    #[tokio::test]
    async fn accepts_valid_tokens_and_exposes_claims() {
        let (status, body) = call(Some(format!(
            "Bearer {}",
            token(SECRET, Algorithm::HS256, 60)
        )))
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "u1"));
    }

    #[tokio::test]
    async fn rejections_use_the_original_texts() {
        let unauthorized = |text: &str| (StatusCode::UNAUTHORIZED, text.to_string());
        assert_eq!(
            call(None).await,
            unauthorized("Authorization header required")
        );
        assert_eq!(
            call(Some("Basic abc".into())).await,
            unauthorized("Bearer authorization required")
        );
        assert_eq!(
            call(Some("Bearer garbage".into())).await,
            unauthorized("Invalid credentials")
        );
        let expired = token(SECRET, Algorithm::HS256, -3600);
        assert_eq!(
            call(Some(format!("Bearer {expired}"))).await,
            unauthorized("Invalid credentials")
        );
        let wrong_key = token("another-secret-that-is-32-bytes-long", Algorithm::HS256, 60);
        assert_eq!(
            call(Some(format!("Bearer {wrong_key}"))).await,
            unauthorized("Invalid credentials")
        );
        let wrong_alg = token(SECRET, Algorithm::HS512, 60);
        assert_eq!(
            call(Some(format!("Bearer {wrong_alg}"))).await,
            unauthorized("Invalid credentials")
        );
    }
}
