//! The one verifier: bytes are checked against the digest and size they
//! claim as they pass, and content is accepted only by `finish`. Every
//! endpoint (registry downloads, the store's writer and reads, archive
//! blobs) checks through it, so the check is written — and can be wrong —
//! once. Errors read "expected …, calculated …".

use super::digest::{Digest, Hasher};

/// Content is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    #[error("expected {expected}, calculated {actual} ({size} bytes)")]
    Digest {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
}

/// Checks a stream of bytes against an expected digest and (when known) size.
pub struct Verifier {
    expected: Digest,
    size: Option<u64>,
    seen: u64,
    /// `None` when only the size is checked (the consumer hashes itself).
    hasher: Option<Hasher>,
}

impl Verifier {
    /// Check digest and size.
    pub fn new(expected: &Digest, size: Option<u64>) -> Verifier {
        Verifier {
            expected: expected.clone(),
            size,
            seen: 0,
            hasher: Some(expected.hasher()),
        }
    }

    /// Check the size only (for a consumer that verifies the digest itself).
    pub fn size_only(expected: &Digest, size: u64) -> Verifier {
        Verifier {
            expected: expected.clone(),
            size: Some(size),
            seen: 0,
            hasher: None,
        }
    }

    /// Feed bytes; fails as soon as more bytes than expected came.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), VerifyError> {
        self.seen += bytes.len() as u64;
        if let Some(expected) = self.size.filter(|&s| self.seen > s) {
            return Err(VerifyError::Size {
                expected,
                actual: self.seen,
            });
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(bytes);
        }
        Ok(())
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The expected digest.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Accept the content, or say why not.
    pub fn finish(self) -> Result<(), VerifyError> {
        if let Some(expected) = self.size.filter(|&s| s != self.seen) {
            return Err(VerifyError::Size {
                expected,
                actual: self.seen,
            });
        }
        match self.hasher.map(Hasher::finish) {
            Some(actual) if actual != self.expected => Err(VerifyError::Digest {
                expected: self.expected,
                actual,
                size: self.seen,
            }),
            _ => Ok(()),
        }
    }

    /// Check bytes held in memory.
    pub fn check(expected: &Digest, bytes: &[u8]) -> Result<(), VerifyError> {
        let mut verifier = Verifier::new(expected, Some(bytes.len() as u64));
        verifier.update(bytes)?;
        verifier.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_right_bytes() {
        let digest = Digest::sha256_of(b"hello");
        assert!(Verifier::check(&digest, b"hello").is_ok());
        assert!(matches!(
            Verifier::check(&digest, b"hellO"),
            Err(VerifyError::Digest { .. })
        ));
        let mut long = Verifier::new(&digest, Some(5));
        assert!(matches!(
            long.update(b"hello!"),
            Err(VerifyError::Size {
                expected: 5,
                actual: 6
            })
        ));
        let mut short = Verifier::new(&digest, Some(5));
        short.update(b"hell").unwrap();
        assert!(matches!(short.finish(), Err(VerifyError::Size { .. })));
        let mut sized = Verifier::size_only(&digest, 5);
        sized.update(b"xxxxx").unwrap();
        assert!(sized.finish().is_ok());
    }
}
