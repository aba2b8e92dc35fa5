//! Password hashes. New ones are Argon2id with the `argon2` crate's defaults (19 MiB, two
//! passes: OWASP's recommendation); bcrypt hashes of imported users are accepted and replaced
//! by Argon2id at the user's next sign-in. Hashing is slow on purpose, so it runs on the
//! blocking pool, never on the threads serving requests.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Shortest password accepted at sign-up, user creation and password change.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Longest password accepted: hashing megabytes of input would be a cheap way to burn CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A hash checked when the user does not exist, so that signing in as an unknown email takes
/// as long as a wrong password (no finding out who has an account by timing).
static UNKNOWN_USER_HASH: LazyLock<String> =
    LazyLock::new(|| hash_now("not a real password").unwrap_or_default());

/// Hashes at once at most one per CPU: each takes 19 MiB and a core, so a flood of sign-ins
/// queues here instead of exhausting memory on the blocking pool.
static HASHING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::sync::Semaphore::new(cpus)
});

/// Runs a hashing job on the blocking pool once a slot is free.
async fn bounded<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let _slot = HASHING.acquire().await?;
    Ok(tokio::task::spawn_blocking(job).await?)
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

fn verify_now(password: &str, hash: &str) -> bool {
    if is_bcrypt(hash) {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// Whether `hash` is one wf can check: Argon2 (PHC string) or bcrypt.
pub fn is_supported_hash(hash: &str) -> bool {
    is_bcrypt(hash) || (hash.starts_with("$argon2") && PasswordHash::new(hash).is_ok())
}

/// Whether a hash should be replaced by a fresh Argon2id one after a successful sign-in.
pub fn needs_rehash(hash: &str) -> bool {
    is_bcrypt(hash)
}

/// Why a new password is refused, if it is.
pub fn policy_violation(password: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        Some(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        ))
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        ))
    } else {
        None
    }
}

/// Hashes a password with Argon2id.
pub async fn hash(password: &str) -> anyhow::Result<String> {
    let password = password.to_string();
    bounded(move || hash_now(&password)).await?
}

/// Checks a password against a user's hash — or, with no user, against a stand-in hash, so
/// the answer (always `false`) takes as long.
pub async fn verify(password: &str, hash: Option<&str>) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let password = password.to_string();
    let (hash, real) = match hash {
        Some(h) => (h.to_string(), true),
        None => (UNKNOWN_USER_HASH.clone(), false),
    };
    bounded(move || verify_now(&password, &hash) && real)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2_hashes_verify_and_are_salted() {
        let a = hash("correct horse").await.unwrap();
        let b = hash("correct horse").await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse", Some(&a)).await);
        assert!(!verify("wrong horse", Some(&a)).await);
        assert!(!verify("correct horse", None).await);
        assert!(is_supported_hash(&a) && !needs_rehash(&a));
    }

    #[tokio::test]
    async fn bcrypt_hashes_are_accepted_and_marked_for_rehash() {
        let legacy = bcrypt::hash("imported-pass", 4).unwrap();
        assert!(verify("imported-pass", Some(&legacy)).await);
        assert!(!verify("other-pass", Some(&legacy)).await);
        assert!(is_supported_hash(&legacy) && needs_rehash(&legacy));
        assert!(!is_supported_hash("plaintext"));
        assert!(!verify("x", Some("garbage")).await);
    }

    #[test]
    fn policy() {
        assert!(policy_violation("short").is_some());
        assert!(policy_violation("long enough").is_none());
        assert!(policy_violation(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_some());
    }
}
