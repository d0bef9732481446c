//! Settings of the rollout driver: where rollouts and the shared layers are.

use super::env::{Env, SettingsError};
use crate::routing::KeyRouter;

/// Settings of the rollout-driver function.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    pub table_name: String,
    pub parameter_root: String,
    pub router: KeyRouter,
}

impl DriverSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = Env { lookup };
        let (parameter_root, router) = env.root_and_router()?;
        Ok(Self {
            table_name: env.required("CONFIG_TABLE_NAME")?,
            parameter_root,
            router,
        })
    }
}
