//! Pure decisions, no I/O: which tags a job selects (regexes, semver
//! ranges, keep-latest), which semver aliases should point where, and the
//! cron schedule arithmetic the daemon runs on.

pub mod aliases;
pub mod cron;
pub mod shard;
pub mod tags;
pub mod version;

pub use aliases::{compute_aliases, AliasKind};
pub use cron::Schedule;
pub use tags::TagFilter;
pub use version::TagVersion;
