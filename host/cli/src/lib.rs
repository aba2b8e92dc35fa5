//! `wf-host`: the one place where every type category is registered, and the commands that load,
//! validate, inspect and run applications.

pub mod commands;

use wf_engine::{Registry, RegistryError};

/// Every type this build of wf provides.
pub fn registry() -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    wf_http::register(&mut registry)?;
    wf_messaging::register(&mut registry)?;
    Ok(registry)
}
