//! ferry: a config-driven registry sync and backup tool.
//!
//! Data flows one way: `cli → engine → {registry, store} → types`, with
//! `config` and `progress` beside the chain. Only `cli` prints.

pub mod archive;
pub mod cli;
pub mod config;
pub mod engine;
pub mod jobs;
pub mod metrics;
pub mod objects;
pub mod policy;
pub mod progress;
pub mod registry;
pub mod serve;
pub mod store;
pub mod types;
