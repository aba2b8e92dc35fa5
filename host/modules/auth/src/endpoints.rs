//! The HTTP endpoints of `auth.jwt`, found by path suffix as in the original, so they work
//! under any prefix (`/api/auth/login`, `/api/v1/auth/login`, ...):
//!
//! | request | what it does |
//! |---|---|
//! | `POST …/auth/register` | sign up (`{email, password, name}`); only the first user unless `allowRegistration` |
//! | `POST …/auth/login` | sign in (`{email, password}`) |
//! | `POST …/auth/refresh` | swap a refresh token for new tokens (`{refresh_token}`); the old one is used up |
//! | `POST …/auth/logout` | end the session of the bearer token and/or `{refresh_token}` |
//! | `GET, PUT …/auth/me` (and `…/auth/profile`) | the caller's profile; `PUT` changes `name`, or `password` with `currentPassword` |
//! | `GET …/auth/setup-status`, `POST …/auth/setup` | create the first user, as `admin` |
//! | `GET, POST …/auth/users`, `DELETE …/auth/users/{id}`, `PUT …/auth/users/{id}/role` | user management, `admin` only |
//!
//! Errors are JSON `{"error": ...}`: 400 for bad input, 401 for bad credentials or tokens, 403
//! for missing rights, 404, 409 for a taken email. Failures of wf itself are a generic 500.

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use wf_http::jwt::TokenError;
use wf_http::{HttpHandler, Request, Response, RouteService, json_response, route_fn};

use crate::password;
use crate::store::{NewUser, Rotation, StoreError, User, UserStore};
use crate::tokens::TokenService;

/// Request bodies of these endpoints are small; anything larger is refused.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The shape of token responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `{token, refresh_token, expires_in, user}` (the original's default, plus the refresh
    /// token).
    Standard,
    /// `{access_token, refresh_token, expires_in, user}`.
    V1,
}

pub struct AuthEndpoints {
    pub tokens: Arc<TokenService>,
    pub store: Arc<UserStore>,
    pub format: ResponseFormat,
    pub allow_registration: bool,
    /// Held across a check of who the users are and the change it allows (the first user's
    /// sign-up, removing or demoting an admin), so two concurrent requests cannot both pass
    /// it: two first users, or no admin left.
    membership: tokio::sync::Mutex<()>,
}

/// A refusal: status and the message the client sees.
struct Refusal(StatusCode, String);

type Answer = Result<(StatusCode, Value), Refusal>;

fn refuse<T>(status: StatusCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(status, message.into()))
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::EmailTaken => Refusal(StatusCode::CONFLICT, e.to_string()),
            other => internal(other),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "authentication endpoint failed");
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Deserialize)]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ProfileUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "currentPassword")]
    current_password: Option<String>,
}

#[derive(Deserialize)]
struct RoleUpdate {
    #[serde(default)]
    role: String,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn claim<'a>(claims: &'a Value, key: &str) -> &'a str {
    claims.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn token_refusal(e: TokenError) -> Refusal {
    Refusal(StatusCode::UNAUTHORIZED, e.message().to_string())
}

fn check_new_credentials(email: &str, password: &str) -> Result<(), Refusal> {
    if email.trim().is_empty() || password.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "email and password are required");
    }
    if !email.contains('@') || email.len() > 320 {
        return refuse(StatusCode::BAD_REQUEST, "email is not an email address");
    }
    match password::policy_violation(password) {
        Some(problem) => refuse(StatusCode::BAD_REQUEST, problem),
        None => Ok(()),
    }
}

impl AuthEndpoints {
    pub fn new(
        tokens: Arc<TokenService>,
        store: Arc<UserStore>,
        format: ResponseFormat,
        allow_registration: bool,
    ) -> AuthEndpoints {
        AuthEndpoints {
            tokens,
            store,
            format,
            allow_registration,
            membership: tokio::sync::Mutex::new(()),
        }
    }

    async fn handle(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = match wf_http::exchange::read_body(
            body,
            MAX_BODY_BYTES,
            "the fixed limit of `auth.jwt` endpoints",
        )
        .await
        {
            Ok(body) => body,
            Err(response) => return response,
        };
        let path = parts.uri.path().trim_end_matches('/');
        let action = path
            .rfind("/auth/")
            .map(|i| &path[i + "/auth/".len()..])
            .unwrap_or_default();
        let segments: Vec<&str> = action.split('/').collect();
        let headers = &parts.headers;
        let answer = match (&parts.method, segments.as_slice()) {
            (&Method::POST, ["register"]) => self.register(&body).await,
            (&Method::POST, ["login"]) => self.login(&body).await,
            (&Method::POST, ["refresh"]) => self.refresh(&body).await,
            (&Method::POST, ["logout"]) => self.logout(headers, &body).await,
            (&Method::GET, ["me" | "profile"]) => self.profile(headers).await,
            (&Method::PUT, ["me" | "profile"]) => self.update_profile(headers, &body).await,
            (&Method::GET, ["setup-status"]) => self.setup_status().await,
            (&Method::POST, ["setup"]) => self.setup(&body).await,
            (&Method::GET, ["users"]) => self.list_users(headers).await,
            (&Method::POST, ["users"]) => self.create_user(headers, &body).await,
            (&Method::DELETE, ["users", id]) => self.delete_user(headers, id).await,
            (&Method::PUT, ["users", id, "role"]) => self.set_role(headers, id, &body).await,
            _ => refuse(StatusCode::NOT_FOUND, "not found"),
        };
        match answer {
            Ok((StatusCode::NO_CONTENT, _)) => {
                let mut response = Response::new(axum::body::Body::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            Ok((status, value)) => json_response(status, &value),
            Err(Refusal(status, message)) => json_response(status, &json!({"error": message})),
        }
    }

    fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
        serde_json::from_slice(body)
            .or_else(|_| refuse(StatusCode::BAD_REQUEST, "invalid request body"))
    }

    /// Opens a session for `user` and answers with its tokens.
    async fn signed_in(&self, user: &User, status: StatusCode) -> Answer {
        let session = uuid::Uuid::new_v4().to_string();
        let (jti, refresh) = self
            .tokens
            .refresh_token(user, &session)
            .map_err(internal)?;
        let expires_at = self.tokens.refresh_expiry();
        self.store
            .open_session(&session, &user.id, &jti, expires_at)
            .await?;
        self.tokens.remember(&session, expires_at);
        let access = self.tokens.access_token(user, &session).map_err(internal)?;
        let mut out = self.token_fields(access, refresh);
        out.insert("user".into(), user.public_json());
        Ok((status, Value::Object(out)))
    }

    fn token_fields(&self, access: String, refresh: String) -> Map<String, Value> {
        let access_key = match self.format {
            ResponseFormat::Standard => "token",
            ResponseFormat::V1 => "access_token",
        };
        let mut out = Map::new();
        out.insert(access_key.into(), json!(access));
        out.insert("refresh_token".into(), json!(refresh));
        out.insert(
            "expires_in".into(),
            json!(self.tokens.settings().access_ttl.as_secs()),
        );
        out
    }

    async fn create(
        &self,
        credentials: Credentials,
        role: Option<String>,
    ) -> Result<User, Refusal> {
        check_new_credentials(&credentials.email, &credentials.password)?;
        let password_hash = password::hash(&credentials.password)
            .await
            .map_err(internal)?;
        let mut metadata = Map::new();
        if let Some(role) = role {
            metadata.insert("role".into(), json!(role));
        }
        Ok(self
            .store
            .create(NewUser {
                id: None,
                email: credentials.email,
                name: credentials.name,
                password_hash,
                metadata,
            })
            .await?)
    }

    async fn register(&self, body: &[u8]) -> Answer {
        let credentials: Credentials = Self::parse(body)?;
        let user = if self.allow_registration {
            self.create(credentials, None).await?
        } else {
            let _membership = self.membership.lock().await;
            if self.store.count().await? > 0 {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "registration is disabled; contact an administrator",
                );
            }
            // The only user there will be until an admin adds more: it must be able to.
            self.create(credentials, Some("admin".into())).await?
        };
        self.signed_in(&user, StatusCode::CREATED).await
    }

    async fn setup(&self, body: &[u8]) -> Answer {
        let credentials: Credentials = Self::parse(body)?;
        let membership = self.membership.lock().await;
        if self.store.count().await? > 0 {
            return refuse(StatusCode::FORBIDDEN, "setup already completed");
        }
        let user = self.create(credentials, Some("admin".into())).await?;
        drop(membership);
        self.signed_in(&user, StatusCode::CREATED).await
    }

    async fn setup_status(&self) -> Answer {
        let count = self.store.count().await?;
        Ok((
            StatusCode::OK,
            json!({"needsSetup": count == 0, "userCount": count}),
        ))
    }

    async fn login(&self, body: &[u8]) -> Answer {
        let credentials: Credentials = Self::parse(body)?;
        let user = self.store.by_email(&credentials.email).await?;
        let hash = user.as_ref().map(|u| u.password_hash.as_str());
        if !password::verify(&credentials.password, hash).await {
            return refuse(StatusCode::UNAUTHORIZED, "invalid credentials");
        }
        let Some(mut user) = user else {
            return refuse(StatusCode::UNAUTHORIZED, "invalid credentials");
        };
        if password::needs_rehash(&user.password_hash) {
            // An imported bcrypt hash: replace it while the password is at hand.
            match password::hash(&credentials.password).await {
                Ok(hash) => {
                    let upgraded = self
                        .store
                        .set_password_hash(&user.id, &hash, Some(&user.password_hash))
                        .await;
                    if let Err(e) = upgraded {
                        tracing::warn!(user = %user.id, error = %e, "could not upgrade a bcrypt password hash");
                    }
                    user.password_hash = hash;
                }
                Err(e) => tracing::warn!(error = %e, "could not rehash a password"),
            }
        }
        self.signed_in(&user, StatusCode::OK).await
    }

    async fn refresh(&self, body: &[u8]) -> Answer {
        let request: RefreshBody = Self::parse(body)?;
        let Some(token) = request.refresh_token.filter(|t| !t.is_empty()) else {
            return refuse(StatusCode::BAD_REQUEST, "refresh_token is required");
        };
        let claims = self.tokens.verify_refresh(&token).map_err(|e| match e {
            TokenError::Invalid => {
                Refusal(StatusCode::UNAUTHORIZED, "invalid refresh token".into())
            }
            other => token_refusal(other),
        })?;
        let Some(user) = self.store.by_id(claim(&claims, "sub")).await? else {
            return refuse(StatusCode::UNAUTHORIZED, "user not found");
        };
        let session = claim(&claims, "sid");
        let (next_jti, next_refresh) = self
            .tokens
            .refresh_token(&user, session)
            .map_err(internal)?;
        let expires_at = self.tokens.refresh_expiry();
        match self
            .store
            .rotate(claim(&claims, "jti"), &next_jti, expires_at)
            .await?
        {
            Rotation::Rotated { .. } => {
                self.tokens.remember(session, expires_at);
                let access = self.tokens.access_token(&user, session).map_err(internal)?;
                Ok((
                    StatusCode::OK,
                    Value::Object(self.token_fields(access, next_refresh)),
                ))
            }
            Rotation::Reused { session } => {
                tracing::warn!(user = %user.id, session = %session, "a refresh token was used twice; the session is revoked");
                self.tokens.forget([&session]);
                refuse(
                    StatusCode::UNAUTHORIZED,
                    "refresh token already used; the session is revoked, sign in again",
                )
            }
            Rotation::Refused => refuse(StatusCode::UNAUTHORIZED, "invalid refresh token"),
        }
    }

    async fn logout(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        let mut sessions = Vec::new();
        if let Some(token) = bearer(headers) {
            let claims = self.tokens.verify_access(token).map_err(token_refusal)?;
            sessions.push(claim(&claims, "sid").to_string());
        }
        if !body.is_empty() {
            let request: RefreshBody = Self::parse(body)?;
            if let Some(token) = request.refresh_token.filter(|t| !t.is_empty()) {
                let claims = self.tokens.verify_refresh(&token).map_err(token_refusal)?;
                sessions.push(claim(&claims, "sid").to_string());
            }
        }
        if sessions.is_empty() {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "send the access token (Authorization: Bearer) or the refresh_token to sign out",
            );
        }
        sessions.dedup();
        for session in &sessions {
            self.store.revoke_session(session).await?;
        }
        self.tokens.forget(&sessions);
        Ok((StatusCode::OK, json!({"status": "ok"})))
    }

    /// The user the bearer token belongs to.
    async fn caller(&self, headers: &HeaderMap) -> Result<User, Refusal> {
        let Some(token) = bearer(headers) else {
            return refuse(StatusCode::UNAUTHORIZED, "authorization header required");
        };
        let claims = self.tokens.verify_access(token).map_err(token_refusal)?;
        match self.store.by_id(claim(&claims, "sub")).await? {
            Some(user) => Ok(user),
            None => refuse(StatusCode::UNAUTHORIZED, "user not found"),
        }
    }

    async fn admin(&self, headers: &HeaderMap) -> Result<User, Refusal> {
        let user = self.caller(headers).await?;
        if user.is_admin() {
            Ok(user)
        } else {
            refuse(StatusCode::FORBIDDEN, "admin role required")
        }
    }

    async fn profile(&self, headers: &HeaderMap) -> Answer {
        let user = self.caller(headers).await?;
        Ok((StatusCode::OK, user.public_json()))
    }

    async fn update_profile(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        let mut user = self.caller(headers).await?;
        let update: ProfileUpdate = Self::parse(body)?;
        if let Some(new_password) = update.password {
            let current = update.current_password.unwrap_or_default();
            if !password::verify(&current, Some(&user.password_hash)).await {
                return refuse(StatusCode::FORBIDDEN, "currentPassword is wrong");
            }
            if let Some(problem) = password::policy_violation(&new_password) {
                return refuse(StatusCode::BAD_REQUEST, problem);
            }
            let hash = password::hash(&new_password).await.map_err(internal)?;
            if !self.store.set_password_hash(&user.id, &hash, None).await? {
                return refuse(StatusCode::UNAUTHORIZED, "user not found");
            }
            // Whoever knew the old password must not stay signed in.
            self.revoke_all(&user.id).await?;
        }
        if let Some(name) = update.name.filter(|n| !n.is_empty()) {
            if !self.store.set_name(&user.id, &name).await? {
                return refuse(StatusCode::UNAUTHORIZED, "user not found");
            }
            user.name = name;
        }
        Ok((StatusCode::OK, user.public_json()))
    }

    async fn revoke_all(&self, user_id: &str) -> Result<(), Refusal> {
        let sessions = self.store.revoke_user_sessions(user_id).await?;
        self.tokens.forget(&sessions);
        Ok(())
    }

    async fn list_users(&self, headers: &HeaderMap) -> Answer {
        self.admin(headers).await?;
        let users: Vec<Value> = self
            .store
            .list()
            .await?
            .iter()
            .map(User::public_json)
            .collect();
        Ok((StatusCode::OK, Value::Array(users)))
    }

    async fn create_user(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        self.admin(headers).await?;
        let mut credentials: Credentials = Self::parse(body)?;
        let role = credentials
            .role
            .take()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "user".into());
        let user = self.create(credentials, Some(role)).await?;
        Ok((StatusCode::CREATED, user.public_json()))
    }

    async fn admins(&self) -> Result<usize, Refusal> {
        Ok(self
            .store
            .list()
            .await?
            .iter()
            .filter(|u| u.is_admin())
            .count())
    }

    async fn delete_user(&self, headers: &HeaderMap, id: &str) -> Answer {
        let caller = self.admin(headers).await?;
        if caller.id == id {
            return refuse(StatusCode::BAD_REQUEST, "cannot delete yourself");
        }
        let _membership = self.membership.lock().await;
        let Some(target) = self.store.by_id(id).await? else {
            return refuse(StatusCode::NOT_FOUND, "user not found");
        };
        if target.is_admin() && self.admins().await? <= 1 {
            return refuse(StatusCode::BAD_REQUEST, "cannot delete the last admin");
        }
        match self.store.delete(id).await? {
            Some(sessions) => {
                self.tokens.forget(&sessions);
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            None => refuse(StatusCode::NOT_FOUND, "user not found"),
        }
    }

    async fn set_role(&self, headers: &HeaderMap, id: &str, body: &[u8]) -> Answer {
        self.admin(headers).await?;
        let update: RoleUpdate = Self::parse(body)?;
        if update.role.trim().is_empty() {
            return refuse(StatusCode::BAD_REQUEST, "role is required");
        }
        let _membership = self.membership.lock().await;
        let Some(mut target) = self.store.by_id(id).await? else {
            return refuse(StatusCode::NOT_FOUND, "user not found");
        };
        if target.is_admin() && update.role != "admin" && self.admins().await? <= 1 {
            return refuse(StatusCode::BAD_REQUEST, "cannot demote the last admin");
        }
        // `role` replaces any `roles` list: the tokens grant the union of both.
        target.metadata.remove("roles");
        target.metadata.insert("role".into(), json!(update.role));
        self.store
            .set_metadata(&target.id, &target.metadata)
            .await?;
        // Tokens carry the role: the user's current ones would keep the old one.
        self.revoke_all(&target.id).await?;
        Ok((StatusCode::OK, target.public_json()))
    }
}

impl HttpHandler for AuthEndpoints {
    fn service(self: Arc<Self>) -> RouteService {
        route_fn(move |req: Request| {
            let this = self.clone();
            async move { this.handle(req).await }
        })
    }
}
