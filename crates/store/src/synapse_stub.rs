//! TEMPORARY stand-in for the attached source (branch `synsrc` replaces it).
use std::path::Path;
use std::time::Duration;

use super::{Destinations, Store, StoreError};

pub struct SynapseSettings {
    pub database: String,
    pub refresh_interval: Duration,
}

impl Store {
    pub async fn open_attached(
        own: &Path,
        _synapse: &SynapseSettings,
    ) -> Result<Store, StoreError> {
        Store::open(own).await
    }
}

impl Destinations {
    pub fn is_attached(&self) -> bool {
        false
    }
    pub async fn refresh_one(&self, _name: &str) -> Result<(), StoreError> {
        Ok(())
    }
}
