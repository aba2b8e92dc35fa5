//! Password hashes. New ones are Argon2id with the `argon2` crate's defaults (19 MiB, two
//! passes: OWASP's recommendation); bcrypt hashes of imported users are accepted and replaced
//! by Argon2id at the user's next sign-in. Hashing is slow on purpose, so it runs on the
//! blocking pool, never on the threads serving requests.
//!
//! Memory is bounded: at most one hash per CPU runs at once, and each reuses an Argon2 work
//! area from a small pool instead of allocating 19 MiB per call. Allocating per call left
//! hundreds of MB resident after a burst of failed sign-ins (each blocking thread's malloc arena
//! kept its freed area), and it stayed there.

use std::sync::{LazyLock, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Shortest password accepted at sign-up, user creation and password change.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Longest password accepted: hashing megabytes of input would be a cheap way to burn CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The most memory an imported Argon2 hash may ask for (in KiB, as its `m=` says): checking a
/// hash costs that much on every sign-in.
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;

/// A hash checked when the user does not exist, so that signing in as an unknown email takes
/// as long as a wrong password (no finding out who has an account by timing).
static UNKNOWN_USER_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut memory = WorkArea::default();
    hash_now("not a real password", &mut memory).unwrap_or_default()
});

fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Hashes at once at most one per CPU: each takes 19 MiB and a core, so a flood of sign-ins
/// queues here instead of exhausting memory on the blocking pool.
static HASHING: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(hashing_slots()));

/// Work areas of hashes that finished, for the next ones (never more than [`HASHING`] allows
/// at once).
static WORK_AREAS: Mutex<Vec<WorkArea>> = Mutex::new(Vec::new());

/// Argon2's memory, sized for the default parameters and reused.
struct WorkArea(Vec<Block>);

impl Default for WorkArea {
    fn default() -> Self {
        WorkArea(vec![Block::default(); Params::DEFAULT.block_count()])
    }
}

/// Runs a hashing job on the blocking pool once a slot is free, with a reused work area.
async fn bounded<T: Send + 'static>(
    job: impl FnOnce(&mut WorkArea) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _slot = HASHING.acquire().await?;
    Ok(tokio::task::spawn_blocking(move || {
        let taken = WORK_AREAS.lock().ok().and_then(|mut pool| pool.pop());
        let mut area = taken.unwrap_or_default();
        let result = job(&mut area);
        if let Ok(mut pool) = WORK_AREAS.lock()
            && pool.len() < hashing_slots()
        {
            pool.push(area);
        }
        result
    })
    .await?)
}

fn hash_now(password: &str, area: &mut WorkArea) -> anyhow::Result<String> {
    let argon2 = Argon2::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt
        .as_salt()
        .decode_b64(&mut raw_salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, &mut area.0)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params())
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(
            Output::new(&out).map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?,
        ),
    };
    Ok(phc.to_string())
}

/// Checks `password` against an Argon2 PHC string, in `area` when it is large enough.
fn verify_argon2(password: &str, hash: &str, area: &mut WorkArea) -> Option<bool> {
    let parsed = PasswordHash::new(hash).ok()?;
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).ok()?;
    if params.m_cost() > MAX_MEMORY_KIB {
        return None;
    }
    let expected = parsed.hash?;
    let mut raw_salt = [0u8; 64];
    let raw_salt = parsed.salt?.decode_b64(&mut raw_salt).ok()?;
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let blocks = params.block_count();
    let result = if blocks <= area.0.len() {
        argon2.hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, &mut area.0)
    } else {
        // An imported hash with more memory than ours; bounded by MAX_MEMORY_KIB.
        let mut larger = vec![Block::default(); blocks];
        argon2.hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, &mut larger)
    };
    result.ok()?;
    // `Output` compares in constant time.
    Some(Output::new(&out).ok()? == expected)
}

fn verify_now(password: &str, hash: &str, area: &mut WorkArea) -> bool {
    if is_bcrypt(hash) {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    verify_argon2(password, hash, area).unwrap_or(false)
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// Whether `hash` is one wf can check: Argon2 (PHC string, at most [`MAX_MEMORY_KIB`]) or
/// bcrypt.
pub fn is_supported_hash(hash: &str) -> bool {
    is_bcrypt(hash)
        || (hash.starts_with("$argon2")
            && PasswordHash::new(hash).is_ok_and(|parsed| {
                Algorithm::try_from(parsed.algorithm).is_ok()
                    && parsed.hash.is_some()
                    && Params::try_from(&parsed).is_ok_and(|p| p.m_cost() <= MAX_MEMORY_KIB)
            }))
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
    bounded(move |area| hash_now(&password, area)).await?
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
    bounded(move |area| verify_now(&password, &hash, area) && real)
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
    async fn hashes_interoperate_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash("correct horse").await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        let salt = SaltString::generate(&mut OsRng);
        // Theirs, with other parameters (more memory than the pooled area holds).
        let params = Params::new(32 * 1024, 1, 1, None).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify("battery staple", Some(&theirs)).await);
        assert!(!verify("battery stapler", Some(&theirs)).await);
        // A hash asking for more memory than allowed is neither accepted nor checked.
        let greedy = theirs.replace("m=32768", &format!("m={}", MAX_MEMORY_KIB + 1));
        assert!(!is_supported_hash(&greedy));
        assert!(!verify("battery staple", Some(&greedy)).await);
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
