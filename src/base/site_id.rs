//! The identity of an instance: a random UUID given at `init`, how changes
//! are attributed and ties broken. The table of instances heard of lives in
//! [`crate::catalog::site`].

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The identity of an instance: a random UUID assigned at `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SiteId(pub Uuid);

impl SiteId {
    /// A new random id.
    pub fn random() -> SiteId {
        SiteId(Uuid::new_v4())
    }

    /// From its 16 bytes.
    pub fn from_bytes(b: [u8; 16]) -> SiteId {
        SiteId(Uuid::from_bytes(b))
    }

    /// Its 16 bytes (how it is stored and compared).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// From a stored blob.
    pub fn from_slice(b: &[u8]) -> Option<SiteId> {
        Uuid::from_slice(b).ok().map(SiteId)
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}
