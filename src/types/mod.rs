//! Pure value types shared by every layer: digests and verifying hashers,
//! image references, platforms, manifests and media types, and redacted secrets.
//! Nothing here does I/O beyond hashing bytes it is handed, except the one
//! atomic file writer every layer shares.

pub mod atomic_file;
pub mod choice;
pub mod digest;
pub mod error_text;
pub mod interrupt;
pub mod layout;
pub mod manifest;
pub mod object_settings;
pub mod platform;
pub mod rate;
pub mod reference;
pub mod referrer;
pub mod registry_settings;
pub mod secret;
pub mod staging;
pub mod time;
pub mod verify;

pub use choice::{ChoiceError, PlatformChoice, ReferrerFilter};
pub use digest::{Digest, DigestError, Hasher};
pub use manifest::{media, Manifest, ManifestError, ParsedManifest};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
pub use referrer::ReferrerLink;
pub use registry_settings::RegistrySettings;
pub use secret::Secret;
pub use verify::{Verifier, VerifyError};

/// `n` and the noun, plural unless `n` is 1: `count(1, "image")` is
/// "1 image", `count(3, "blob")` is "3 blobs".
pub fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}
