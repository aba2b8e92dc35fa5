//! JWT keys, shared by `http.middleware.auth` (verifies) and `auth.jwt` (signs and verifies).
//!
//! Every key is pinned to one algorithm: a token whose header names another one — `none`, or
//! `HS256` over an RSA public key (algorithm confusion) — is refused before any signature check.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wf_engine::ConfigIssue;

/// HMAC secrets shorter than this are refused: they can be brute-forced offline from any token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The signature algorithms wf accepts.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret of at least 32 bytes.
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256: signed with a private key, checked with the public key.
    RS256,
    /// ECDSA on P-256 with SHA-256: signed with a private key, checked with the public key.
    ES256,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        }
    }

    pub fn is_hmac(self) -> bool {
        self == JwtAlgorithm::HS256
    }
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Signed correctly, but past its `exp`.
    Expired,
    /// Signed correctly, but revoked (signed out, or the user was removed).
    Revoked,
    /// Anything else: malformed, wrong key, wrong algorithm, wrong issuer or audience.
    Invalid,
}

impl TokenError {
    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Expired => "token expired",
            TokenError::Revoked => "token revoked",
            TokenError::Invalid => "Invalid credentials",
        }
    }
}

/// Checks the secret of an HMAC algorithm: present and long enough.
pub fn check_secret(pointer: &str, secret: Option<&str>) -> Option<ConfigIssue> {
    let help = "use 32 or more random bytes from the environment, e.g. `${JWT_SECRET}` (generate one with `openssl rand -base64 48`)";
    match secret {
        None | Some("") => Some(
            ConfigIssue::new(pointer, "HS256 needs a secret, and none is set").help(help),
        ),
        Some(s) if s.len() < MIN_SECRET_BYTES => Some(
            ConfigIssue::new(
                pointer,
                format!(
                    "the secret is {} bytes; HS256 secrets must be at least {MIN_SECRET_BYTES} bytes",
                    s.len()
                ),
            )
            .help(help),
        ),
        Some(_) => None,
    }
}

/// A PEM key given inline or as a file (relative to the config file's directory).
pub fn read_pem(
    inline: Option<&str>,
    file: Option<&str>,
    base_dir: &Path,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (inline, file) {
        (Some(_), Some(_)) => anyhow::bail!("give `{what}` or `{what}File`, not both"),
        (Some(pem), None) => Ok(Some(pem.as_bytes().to_vec())),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            std::fs::read(&path)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("cannot read `{what}File` {}: {e}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// Verifies tokens signed with one key and algorithm.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// `secret` for HS256, a PEM public key for RS256/ES256. With `issuer` or `audience`, tokens
    /// must carry that `iss` / `aud`.
    pub fn new(
        algorithm: JwtAlgorithm,
        secret: Option<&str>,
        public_pem: Option<&[u8]>,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> anyhow::Result<JwtVerifier> {
        let key = match algorithm {
            // Length is checked by the modules' validation (an error where wf signs, a
            // warning where it only checks tokens signed elsewhere).
            JwtAlgorithm::HS256 => match secret {
                Some(secret) if !secret.is_empty() => DecodingKey::from_secret(secret.as_bytes()),
                _ => anyhow::bail!("HS256 needs a secret, and none is set"),
            },
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let pem = public_pem.ok_or_else(|| {
                    anyhow::anyhow!(
                        "{algorithm:?} needs a public key (`publicKey` or `publicKeyFile`)"
                    )
                })?;
                let key = if algorithm == JwtAlgorithm::RS256 {
                    DecodingKey::from_rsa_pem(pem)
                } else {
                    DecodingKey::from_ec_pem(pem)
                };
                key.map_err(|e| anyhow::anyhow!("the {algorithm:?} public key is not usable: {e}"))?
            }
        };
        let mut validation = Validation::new(algorithm.algorithm());
        validation.validate_nbf = true;
        validation.leeway = 30;
        // A configured claim is required, not only checked when present: jsonwebtoken
        // compares `iss`/`aud` only if the token has them unless they are listed here.
        let mut required = vec!["exp"];
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier { key, validation })
    }

    /// The token's claims when its signature, algorithm, expiry, issuer and audience hold.
    pub fn verify(&self, token: &str) -> Result<Value, TokenError> {
        match jsonwebtoken::decode::<Value>(token, &self.key, &self.validation) {
            Ok(data) if data.claims.is_object() => Ok(data.claims),
            Ok(_) => Err(TokenError::Invalid),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

/// Signs tokens with one key and algorithm.
pub struct JwtSigner {
    key: EncodingKey,
    header: Header,
}

impl JwtSigner {
    /// `secret` for HS256, a PEM private key for RS256/ES256.
    pub fn new(
        algorithm: JwtAlgorithm,
        secret: Option<&str>,
        private_pem: Option<&[u8]>,
    ) -> anyhow::Result<JwtSigner> {
        let key = match algorithm {
            JwtAlgorithm::HS256 => {
                if let Some(issue) = check_secret("", secret) {
                    anyhow::bail!("{}", issue.message);
                }
                EncodingKey::from_secret(secret.unwrap_or_default().as_bytes())
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let pem = private_pem.ok_or_else(|| {
                    anyhow::anyhow!(
                        "{algorithm:?} needs a private key to sign (`privateKey` or `privateKeyFile`)"
                    )
                })?;
                let key = if algorithm == JwtAlgorithm::RS256 {
                    EncodingKey::from_rsa_pem(pem)
                } else {
                    EncodingKey::from_ec_pem(pem)
                };
                key.map_err(|e| {
                    anyhow::anyhow!("the {algorithm:?} private key is not usable: {e}")
                })?
            }
        };
        Ok(JwtSigner {
            key,
            header: Header::new(algorithm.algorithm()),
        })
    }

    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(&self.header, claims, &self.key)?)
    }
}

/// The roles a token grants: its `role` (a string) and `roles` (a list of strings, or one
/// space- or comma-separated string).
pub fn roles_of(claims: &Value) -> impl Iterator<Item = &str> {
    let single = claims.get("role").and_then(Value::as_str).into_iter();
    let many: Box<dyn Iterator<Item = &str>> = match claims.get("roles") {
        Some(Value::Array(items)) => Box::new(items.iter().filter_map(Value::as_str)),
        Some(Value::String(s)) => {
            Box::new(s.split([' ', ',']).map(str::trim).filter(|r| !r.is_empty()))
        }
        _ => Box::new(std::iter::empty()),
    };
    single.chain(many)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "a-test-secret-that-is-32-bytes-long!";

    fn exp(offset: i64) -> i64 {
        chrono::Utc::now().timestamp() + offset
    }

    #[test]
    fn short_and_missing_secrets_are_refused() {
        assert!(check_secret("/secret", Some("short")).is_some());
        assert!(check_secret("/secret", None).is_some());
        assert!(check_secret("/secret", Some(SECRET)).is_none());
        assert!(JwtSigner::new(JwtAlgorithm::HS256, Some("short"), None).is_err());
    }

    #[test]
    fn signs_and_verifies_with_issuer_and_audience() {
        let signer = JwtSigner::new(JwtAlgorithm::HS256, Some(SECRET), None).unwrap();
        let verifier = JwtVerifier::new(
            JwtAlgorithm::HS256,
            Some(SECRET),
            None,
            Some("wf"),
            Some("api"),
        )
        .unwrap();
        let good = signer
            .sign(&json!({"sub": "u", "iss": "wf", "aud": "api", "exp": exp(60)}))
            .unwrap();
        assert_eq!(verifier.verify(&good).unwrap()["sub"], "u");
        let other_issuer = signer
            .sign(&json!({"sub": "u", "iss": "x", "aud": "api", "exp": exp(60)}))
            .unwrap();
        assert_eq!(verifier.verify(&other_issuer), Err(TokenError::Invalid));
        let expired = signer
            .sign(&json!({"sub": "u", "iss": "wf", "aud": "api", "exp": exp(-3600)}))
            .unwrap();
        assert_eq!(verifier.verify(&expired), Err(TokenError::Expired));
        let no_exp = signer
            .sign(&json!({"sub": "u", "iss": "wf", "aud": "api"}))
            .unwrap();
        assert_eq!(verifier.verify(&no_exp), Err(TokenError::Invalid));
        // A token that leaves out a configured claim is refused, not waved through.
        for claims in [
            json!({"sub": "u", "aud": "api", "exp": exp(60)}),
            json!({"sub": "u", "iss": "wf", "exp": exp(60)}),
        ] {
            let token = signer.sign(&claims).unwrap();
            assert_eq!(
                verifier.verify(&token),
                Err(TokenError::Invalid),
                "{claims}"
            );
        }
        // Without configured ones, neither claim is needed.
        let plain = JwtVerifier::new(JwtAlgorithm::HS256, Some(SECRET), None, None, None).unwrap();
        let bare = signer.sign(&json!({"sub": "u", "exp": exp(60)})).unwrap();
        assert_eq!(plain.verify(&bare).unwrap()["sub"], "u");
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"sub": "u", "exp": exp(60)}))
        );
        let verifier =
            JwtVerifier::new(JwtAlgorithm::HS256, Some(SECRET), None, None, None).unwrap();
        assert_eq!(verifier.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn roles_come_from_role_and_roles() {
        let claims = json!({"role": "admin", "roles": ["editor", 3, "viewer"]});
        assert_eq!(
            roles_of(&claims).collect::<Vec<_>>(),
            ["admin", "editor", "viewer"]
        );
        let claims = json!({"roles": "read write,admin"});
        assert_eq!(
            roles_of(&claims).collect::<Vec<_>>(),
            ["read", "write", "admin"]
        );
        assert_eq!(roles_of(&json!({})).count(), 0);
    }
}
