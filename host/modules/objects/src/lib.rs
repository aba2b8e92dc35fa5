//! Object storage: named stores of byte objects under `/`-separated keys. `storage.local`
//! keeps them in a directory; `step.storage_put`, `step.storage_get`, `step.storage_list`
//! and `step.storage_delete` use any store through [`ObjectStore`].

use bytes::Bytes;
use wf_engine::{Registry, RegistryError, ServiceKind, async_trait};

pub mod gcs_auth;
pub mod key;
pub mod sigv4;
pub mod storage_delete;
pub mod storage_gcs;
pub mod storage_get;
pub mod storage_list;
pub mod storage_local;
pub mod storage_put;
pub mod storage_s3;

pub const PLUGIN: &str = "storage";

/// Module types that provide an [`ObjectStore`].
pub const STORE_TYPES: &[&str] = &["storage.local", "storage.s3", "storage.gcs"];

/// What a store says of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A store of byte objects by key. Keys are checked with [`key::check`] before they reach a
/// store.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()>;
    /// `None` when there is no such object; [`Refused::TooLarge`] when it is larger than
    /// `max_bytes` (nothing of it is held in memory then).
    async fn get(&self, key: &str, max_bytes: u64) -> anyhow::Result<Option<Bytes>>;
    /// Objects whose key starts with `prefix`, in key order, at most `limit`.
    async fn list(&self, prefix: &str, limit: usize) -> anyhow::Result<Vec<ObjectInfo>>;
    /// Whether the object was there.
    async fn delete(&self, key: &str) -> anyhow::Result<bool>;
}

/// A request a store refuses because of what the caller asked (a `400`, not a store failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The key leads outside the store (through a symbolic link).
    OutsideStore(String),
    /// The object is larger than the caller accepts.
    TooLarge { key: String, max_bytes: u64 },
    /// The key cannot name an object in this store: it names a directory, runs through an
    /// object as if it were a directory, or has a segment longer than the file system allows.
    Unusable { key: String, why: &'static str },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::OutsideStore(key) => write!(f, "object key `{key}` leads outside the store"),
            Refused::TooLarge { key, max_bytes } => {
                write!(
                    f,
                    "object `{key}` is larger than {max_bytes} bytes (`max_bytes`)"
                )
            }
            Refused::Unusable { key, why } => write!(f, "object key `{key}` {why}"),
        }
    }
}

impl std::error::Error for Refused {}

/// A store error as a step error: refusals are the caller's mistake, the rest `unavailable`.
pub(crate) fn step_error(doing: &str, key: &str, error: anyhow::Error) -> wf_engine::StepError {
    match error.downcast_ref::<Refused>() {
        Some(refused) => wf_engine::StepError::invalid_input(refused.to_string()),
        None => wf_engine::StepError::unavailable(format!("{doing} `{key}` failed: {error:#}")),
    }
}

/// The client the cloud stores (and the AWS and Vault secret sources) share: no redirects
/// followed, a time limit per request.
pub fn client(timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default TLS backend; ring is ours. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// A response body of at most `max_bytes` (checked against the length header first, then
/// while reading), or [`Refused::TooLarge`].
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    key: &str,
    max_bytes: u64,
) -> anyhow::Result<Bytes> {
    let too_large = || Refused::TooLarge {
        key: key.to_string(),
        max_bytes,
    };
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(too_large().into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > max_bytes {
            return Err(too_large().into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

impl ServiceKind for dyn ObjectStore {
    const LABEL: &'static str = "an object store";
}

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<storage_local::LocalStorageType>()?
        .register_module::<storage_s3::S3StorageType>()?
        .register_module::<storage_gcs::GcsStorageType>()?
        .register_step::<storage_put::StoragePutType>()?
        .register_step::<storage_get::StorageGetType>()?
        .register_step::<storage_list::StorageListType>()?
        .register_step::<storage_delete::StorageDeleteType>()?;
    Ok(())
}

/// The store a step uses: the named one, else the application's only one.
pub(crate) fn choose_store(
    configured: Option<&str>,
    ctx: &wf_engine::CheckContext<'_>,
) -> Result<String, wf_engine::ConfigIssue> {
    ctx.choose(configured, "store", "object store", STORE_TYPES)
}
