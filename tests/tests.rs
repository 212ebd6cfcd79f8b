//! ferry's integration tests, one binary with a module per topic. They
//! start real registries (Debian's docker-registry) and use skopeo as the
//! interop peer; images are built in code.

mod support;

mod archive_copy;
mod archives;
mod artifacts;
mod auth;
mod bad_input;
mod config_files;
mod conformance;
mod crash;
mod endpoints;
mod hostile;
mod jobs;
mod object_storage;
mod operations;
mod peers;
mod referrers;
mod referrers_bad_input;
mod rootfs;
mod round_trip;
mod serve;
mod serve_crash;
mod serve_hostile;
mod serve_limits;
mod signals;
mod store_commands;
mod stored_referrers;
mod sync_scale;
