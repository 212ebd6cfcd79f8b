//! The distribution HTTP API client, written on reqwest: transport (TLS,
//! redirects, retries, rate limits), auth (challenges, token cache,
//! credentials), and the API calls (manifests, blobs, uploads, tags).
//! It never touches the local store: the engine joins the two.

pub mod auth;
pub mod bandwidth;
pub mod blobs;
pub mod client;
pub mod credentials;
pub mod error;
pub mod lists;
pub mod referrers;
pub mod tls;
pub mod transport;

pub use client::{Registries, RegistryClient};
pub use error::RegistryError;
pub use transport::RegistrySettings;
