//! Authentication: `auth.jwt` (and its original name `auth.modular`) signs users up and in,
//! issues access and refresh tokens, rotates and revokes them, and manages users;
//! `auth.user-store` keeps the users in the app's database. `http.middleware.auth` (in
//! `wf-http`) checks the tokens on routes.

use wf_engine::{Registry, RegistryError};

pub mod endpoints;
pub mod jwt_module;
pub mod password;
pub mod seed;
pub mod store;
pub mod tokens;
pub mod user_store;

pub use store::{User, UserStore};
pub use tokens::TokenService;

pub const PLUGIN: &str = "auth";

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<jwt_module::AuthJwtType>()?
        .register_module::<jwt_module::AuthModularType>()?
        .register_module::<user_store::UserStoreType>()?;
    Ok(())
}
