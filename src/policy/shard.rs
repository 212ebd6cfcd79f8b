//! Sharding jobs over workers by rendezvous (highest random weight)
//! hashing: each job goes to the shard that scores highest for it, so every
//! job has exactly one shard, and changing the number of shards from N to
//! N+1 moves only the jobs the new shard wins — about 1/(N+1) of them.

use sha2::{Digest as _, Sha256};

/// This worker's place: shard `index` of `count` (`I/N`, from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parse `I/N` (`0 <= I < N`).
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not I/N (e.g. 0/4)"))?;
        let index: u32 = index
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: I is not a number"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: N is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("{text:?}: I must be 0 to N-1 and N at least 1"));
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard takes `key` (a job name, or a repository).
    pub fn takes(&self, key: &str) -> bool {
        owner(key, self.count) == self.index
    }
}

/// The shard (of `count`) that owns `key`.
pub fn owner(key: &str, count: u32) -> u32 {
    (0..count.max(1))
        .max_by_key(|shard| {
            let digest = Sha256::new()
                .chain_update(key.as_bytes())
                .chain_update([0])
                .chain_update(shard.to_be_bytes())
                .finalize();
            u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_shard_and_growing_moves_few() {
        let keys: Vec<String> = (0..1000).map(|i| format!("job-{i}")).collect();
        for key in &keys {
            let takers = (0..4)
                .filter(|i| {
                    Shard {
                        index: *i,
                        count: 4,
                    }
                    .takes(key)
                })
                .count();
            assert_eq!(takers, 1, "{key}");
        }
        let moved = keys.iter().filter(|k| owner(k, 4) != owner(k, 5)).count();
        // About 1/5 of the keys move to the new shard; none move elsewhere.
        assert!((120..=280).contains(&moved), "{moved} of 1000 moved");
        assert!(keys
            .iter()
            .all(|k| owner(k, 4) == owner(k, 5) || owner(k, 5) == 4));
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert!(Shard::parse("4/4").is_err() && Shard::parse("x").is_err());
    }
}
