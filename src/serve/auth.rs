//! Basic auth from an htpasswd file with bcrypt hashes (`htpasswd -B`), the
//! scheme docker uses for basic-auth registries (no token service). A
//! checked pair is remembered by a salted hash of the header, so bcrypt's
//! deliberate cost is paid once per client, not once per request.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: BTreeMap<String, String>,
    salt: [u8; 16],
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// Names the users only: hashes and remembered credentials stay out of logs.
impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Most remembered credentials (a client that tries many is checked each time).
const MAX_REMEMBERED: usize = 1024;

impl Htpasswd {
    /// Read an htpasswd file; only bcrypt (`$2y$`, `$2b$`, `$2a$`) lines are accepted.
    pub fn read(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut users = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("{}:{}: not `user:hash`", path.display(), number + 1))?;
            if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "{}:{}: the hash for {user} is not bcrypt; create it with `htpasswd -B`",
                    path.display(),
                    number + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err(format!("{} has no users", path.display()));
        }
        Ok(Htpasswd {
            users,
            salt: rand::random(),
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether an `Authorization` header carries a valid user and password.
    pub fn check(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(self.salt)
            .chain_update(encoded.trim().as_bytes())
            .finalize()
            .into();
        if self.verified.lock().expect("auth cache").contains(&key) {
            return true;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        let valid = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if valid {
            let mut verified = self.verified.lock().expect("auth cache");
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            verified.insert(key);
        }
        valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_users_are_checked_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let file = Htpasswd::read(&path).unwrap();
        let header = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert!(file.check(Some(&header("alice:s3cret"))));
        assert!(file.check(Some(&header("alice:s3cret"))), "remembered");
        assert!(!file.check(Some(&header("alice:wrong"))));
        assert!(!file.check(Some(&header("bob:s3cret"))));
        assert!(!file.check(None));
        std::fs::write(&path, "alice:{SHA}abc\n").unwrap();
        assert!(Htpasswd::read(&path).unwrap_err().contains("htpasswd -B"));
    }
}
