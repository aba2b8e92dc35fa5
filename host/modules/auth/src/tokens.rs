//! Access and refresh tokens of one `auth.jwt` module: signing, checking, and the revoked
//! sessions whose tokens are refused until they would have expired anyway.
//!
//! Access tokens carry the session id (`sid`), so signing out or removing a user ends the
//! session's access tokens too, not just its refresh tokens. This host learns of revocations
//! at once; other hosts sharing the database within [`REVOCATION_POLL`].
//!
//! A token is also refused when its session no longer exists (the users were kept in memory and
//! the host restarted, the sessions were deleted): the live sessions are read at start and at
//! every poll, and a token issued before the last read whose session was not in it is refused.
//! One issued since may belong to another host's new session, not read yet.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use serde_json::{Map, Value, json};
use wf_http::jwt::{JwtSigner, JwtVerifier, TokenError};
use wf_http::middleware_auth::AuthProvider;

use crate::store::{StoreError, User, UserStore, unix_now};

/// How often the revoked sessions are re-read from the database (other hosts' sign-outs).
pub const REVOCATION_POLL: Duration = Duration::from_secs(15);

/// What tokens say and how long they last.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: Option<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

/// User metadata copied into access tokens (as the original did), for middlewares and
/// pipelines that need them without a lookup.
const CLAIMED_METADATA: &[&str] = &["role", "roles", "affiliateId", "programIds"];

pub struct TokenService {
    signer: JwtSigner,
    verifier: JwtVerifier,
    settings: TokenSettings,
    /// Revoked session ids, each with the time after which none of its tokens can be valid.
    revoked: RwLock<HashMap<String, i64>>,
    /// Live session ids, each with when its refresh tokens expire.
    live: RwLock<HashMap<String, i64>>,
    /// When the live sessions were last read in full from the store (unix seconds; 0: never).
    synced_at: std::sync::atomic::AtomicI64,
}

/// Clocks of hosts sharing a store differ by up to this much (seconds).
const CLOCK_SLACK: i64 = 5;

impl TokenService {
    pub fn new(signer: JwtSigner, verifier: JwtVerifier, settings: TokenSettings) -> TokenService {
        TokenService {
            signer,
            verifier,
            settings,
            revoked: RwLock::default(),
            live: RwLock::default(),
            synced_at: std::sync::atomic::AtomicI64::new(0),
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    fn base_claims(&self, user: &User, session: &str, ttl: Duration) -> Map<String, Value> {
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(user.id));
        claims.insert("email".into(), json!(user.email));
        claims.insert("iss".into(), json!(self.settings.issuer));
        if let Some(audience) = &self.settings.audience {
            claims.insert("aud".into(), json!(audience));
        }
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl.as_secs() as i64));
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        claims.insert("sid".into(), json!(session));
        claims
    }

    /// Signs a probe and checks it: fails when the private and public keys are not a pair.
    pub fn self_check(&self) -> anyhow::Result<()> {
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.settings.issuer));
        if let Some(audience) = &self.settings.audience {
            claims.insert("aud".into(), json!(audience));
        }
        claims.insert("exp".into(), json!(unix_now() + 60));
        let token = self.signer.sign(&Value::Object(claims))?;
        self.verifier.verify(&token).map(|_| ()).map_err(|e| {
            anyhow::anyhow!(
                "a token signed with the private key is refused by the public key ({e:?})"
            )
        })
    }

    /// An access token for `user` in `session`.
    pub fn access_token(&self, user: &User, session: &str) -> anyhow::Result<String> {
        let mut claims = self.base_claims(user, session, self.settings.access_ttl);
        claims.insert("name".into(), json!(user.name));
        for key in CLAIMED_METADATA {
            if let Some(value) = user.metadata.get(*key).filter(|v| !v.is_null()) {
                claims.insert((*key).into(), value.clone());
            }
        }
        self.signer.sign(&Value::Object(claims))
    }

    /// A refresh token for `user` in `session`: its `jti` and the token.
    pub fn refresh_token(&self, user: &User, session: &str) -> anyhow::Result<(String, String)> {
        let mut claims = self.base_claims(user, session, self.settings.refresh_ttl);
        claims.insert("type".into(), json!("refresh"));
        let jti = claims["jti"].as_str().unwrap_or_default().to_string();
        Ok((jti, self.signer.sign(&Value::Object(claims))?))
    }

    /// When a refresh token issued now expires (unix seconds).
    pub fn refresh_expiry(&self) -> i64 {
        unix_now() + self.settings.refresh_ttl.as_secs() as i64
    }

    /// The claims of a valid access token of a live session.
    pub fn verify_access(&self, token: &str) -> Result<Value, TokenError> {
        let claims = self.verifier.verify(token)?;
        if claims.get("type").and_then(Value::as_str) == Some("refresh") {
            return Err(TokenError::Invalid);
        }
        self.check_session(&claims)?;
        Ok(claims)
    }

    /// The claims of a valid refresh token of a live session.
    pub fn verify_refresh(&self, token: &str) -> Result<Value, TokenError> {
        let claims = self.verifier.verify(token)?;
        if claims.get("type").and_then(Value::as_str) != Some("refresh") {
            return Err(TokenError::Invalid);
        }
        self.check_session(&claims)?;
        Ok(claims)
    }

    fn check_session(&self, claims: &Value) -> Result<(), TokenError> {
        let Some(session) = claims.get("sid").and_then(Value::as_str) else {
            // Every token this module issues names its session.
            return Err(TokenError::Invalid);
        };
        let revoked = self
            .revoked
            .read()
            .map(|r| r.contains_key(session))
            .unwrap_or(true);
        if revoked {
            return Err(TokenError::Revoked);
        }
        if self
            .live
            .read()
            .is_ok_and(|live| live.contains_key(session))
        {
            return Ok(());
        }
        // Not among the sessions last read: too new to have been read, or gone.
        let issued_at = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
        let synced_at = self.synced_at.load(std::sync::atomic::Ordering::Relaxed);
        if issued_at >= synced_at - CLOCK_SLACK {
            Ok(())
        } else {
            Err(TokenError::Revoked)
        }
    }

    /// A session opened or extended here, whose refresh tokens now expire at `expires_at`.
    pub fn remember(&self, session: &str, expires_at: i64) {
        if let Ok(mut live) = self.live.write() {
            live.insert(session.to_string(), expires_at);
        }
    }

    /// Reads the sessions opened or extended since `since` (unix seconds; `0`: all live ones)
    /// and forgets expired ones. Sessions are opened and extended with a full refresh lifetime,
    /// so those are the ones that expire at least that long after `since`.
    pub async fn load_sessions(&self, store: &UserStore, since: i64) -> Result<(), StoreError> {
        let read_at = unix_now();
        let expiring_after = if since == 0 {
            read_at - self.settings.access_ttl.as_secs() as i64
        } else {
            since + self.settings.refresh_ttl.as_secs() as i64 - CLOCK_SLACK
        };
        let sessions = store.live_sessions(expiring_after).await?;
        if let Ok(mut live) = self.live.write() {
            // Access tokens can outlive their session's last refresh token by one lifetime.
            let alive_at = read_at - self.settings.access_ttl.as_secs() as i64;
            live.retain(|_, expires_at| *expires_at > alive_at);
            live.extend(sessions);
        }
        self.synced_at
            .store(read_at, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Refuses the session's tokens from now on. `expires_at` is when its last refresh token
    /// expires; access tokens can outlive that by one access lifetime.
    pub fn mark_revoked(&self, session: &str, expires_at: i64) {
        let until = expires_at.max(unix_now()) + self.settings.access_ttl.as_secs() as i64;
        if let Ok(mut revoked) = self.revoked.write() {
            let now = unix_now();
            revoked.retain(|_, until| *until > now);
            revoked.insert(session.to_string(), until);
        }
    }

    /// Refuses the tokens of sessions just revoked here (they cannot outlive a refresh token
    /// issued now).
    pub fn forget(&self, sessions: impl IntoIterator<Item = impl AsRef<str>>) {
        let expires_at = self.refresh_expiry();
        for session in sessions {
            self.mark_revoked(session.as_ref(), expires_at);
        }
    }

    /// Reads the sessions revoked since `since` (unix seconds; `0` for all) into memory.
    pub async fn load_revocations(&self, store: &UserStore, since: i64) -> Result<(), StoreError> {
        let alive_at = unix_now() - self.settings.access_ttl.as_secs() as i64;
        for (session, expires_at) in store.revoked_sessions(since, alive_at).await? {
            self.mark_revoked(&session, expires_at);
        }
        Ok(())
    }
}

impl AuthProvider for TokenService {
    fn authenticate(&self, token: &str) -> Result<Value, TokenError> {
        self.verify_access(token)
    }
}
