//! Seed users: from the config (`users:`) and from a JSON file (`seedFile`, the original's
//! `[{"id": ..., "data": {"email", "name", "password", ...}}]`, or plain user objects).
//! A seed user is created at start when no user has its email; an existing user is left as
//! it is, so a password changed since is not reset.

use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::password;
use crate::store::{NewUser, StoreError, UserStore};

/// A user created at start when missing.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    /// Kept as the user's id; a UUID when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The sign-in email (compared without case).
    pub email: String,
    /// The display name.
    #[serde(default)]
    pub name: String,
    /// The password, hashed at start: write `${ADMIN_PASSWORD}`, not the password.
    #[serde(default)]
    pub password: Option<String>,
    /// An Argon2 (`$argon2id$...`) or bcrypt (`$2b$...`) hash, for users imported from
    /// elsewhere; bcrypt hashes are replaced by Argon2id at the user's first sign-in.
    #[serde(default, rename = "passwordHash")]
    pub password_hash: Option<String>,
    /// The user's role, e.g. `admin` (checked by routes' `roles` and user management).
    #[serde(default)]
    pub role: Option<String>,
    /// Further fields kept with the user and shown by `/auth/me` (`affiliateId`, ...).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl SeedUser {
    /// What is wrong with this seed, if anything.
    pub fn problem(&self) -> Option<String> {
        if !self.email.contains('@') {
            return Some(format!("`{}` is not an email address", self.email));
        }
        match (&self.password, &self.password_hash) {
            (None, None) => Some(format!(
                "seed user {} has neither `password` nor `passwordHash`",
                self.email
            )),
            (Some(_), Some(_)) => Some(format!(
                "seed user {} has both `password` and `passwordHash`; give one",
                self.email
            )),
            (None, Some(hash)) if !password::is_supported_hash(hash) => Some(format!(
                "the `passwordHash` of seed user {} is neither an Argon2 nor a bcrypt hash",
                self.email
            )),
            _ => None,
        }
    }
}

/// Reads a seed file: a JSON array of `{"id", "data": {...}}` entries (the original's format)
/// or of user objects.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<SeedUser>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read seed file {}: {e}", path.display()))?;
    let entries: Vec<Value> = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("seed file {} is not a JSON array: {e}", path.display()))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            from_entry(entry)
                .map_err(|e| anyhow::anyhow!("seed file {}, entry {i}: {e}", path.display()))
        })
        .collect()
}

fn from_entry(entry: Value) -> anyhow::Result<SeedUser> {
    let Value::Object(mut entry) = entry else {
        anyhow::bail!("not an object");
    };
    let id = entry.remove("id").and_then(|v| match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let mut fields = match entry.remove("data") {
        Some(Value::Object(data)) => data,
        Some(_) => anyhow::bail!("`data` is not an object"),
        None => entry,
    };
    let mut take = |key: &str| match fields.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let email = take("email").ok_or_else(|| anyhow::anyhow!("no `email`"))?;
    let name = take("name").unwrap_or_default();
    let password = take("password");
    let password_hash = take("passwordHash");
    let role = take("role");
    fields.remove("state");
    let seed = SeedUser {
        id,
        email,
        name,
        password,
        password_hash,
        role,
        metadata: fields,
    };
    match seed.problem() {
        Some(problem) => anyhow::bail!(problem),
        None => Ok(seed),
    }
}

/// Creates the seed users that do not exist yet; returns how many were created.
pub async fn apply(store: &UserStore, seeds: &[SeedUser]) -> anyhow::Result<usize> {
    let mut created = 0;
    for seed in seeds {
        if store.by_email(&seed.email).await?.is_some() {
            continue;
        }
        let password_hash = match (&seed.password, &seed.password_hash) {
            (_, Some(hash)) => hash.clone(),
            (Some(password), None) => password::hash(password).await?,
            (None, None) => anyhow::bail!("seed user {} has no password", seed.email),
        };
        let mut metadata = seed.metadata.clone();
        if let Some(role) = &seed.role {
            metadata.insert("role".into(), Value::String(role.clone()));
        }
        let user = NewUser {
            id: seed.id.clone(),
            email: seed.email.clone(),
            name: seed.name.clone(),
            password_hash,
            metadata,
        };
        match store.create(user).await {
            Ok(_) => created += 1,
            // Another host seeded it meanwhile.
            Err(StoreError::EmailTaken) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_original_format_and_plain_objects() {
        let original = from_entry(json!({"id": "user-001", "data": {"email": "a@x.io", "name": "A", "role": "responder", "affiliateId": "aff-1", "password": "demo123"}, "state": "active"})).unwrap();
        assert_eq!(original.id.as_deref(), Some("user-001"));
        assert_eq!(original.role.as_deref(), Some("responder"));
        assert_eq!(
            original.metadata,
            json!({"affiliateId": "aff-1"}).as_object().unwrap().clone()
        );
        let plain = from_entry(json!({"email": "b@x.io", "passwordHash": "$2b$04$abcdefghijklmnopqrstuu1234567890123456789012345678901"})).unwrap();
        assert_eq!(plain.email, "b@x.io");
        assert!(
            from_entry(json!({"data": {"email": "c@x.io"}}))
                .unwrap_err()
                .to_string()
                .contains("neither `password`")
        );
        assert!(from_entry(json!({"email": "nope", "password": "p"})).is_err());
        assert!(from_entry(json!({"email": "d@x.io", "passwordHash": "plain"})).is_err());
    }
}
