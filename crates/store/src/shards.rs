//! How destinations are split between Herald instances sharing a database:
//! [`SHARDS`] shards, a destination's shard fixed by its name
//! ([`shard_of`]: the first two bytes of SHA-256 of the name, big-endian,
//! modulo 256 — stable across versions and machines), and [`ShardSet`], a
//! set of shards as 256 bits.

use sha2::{Digest, Sha256};

/// How many shards destinations are split into.
pub const SHARDS: u16 = 256;

/// The shard of `destination`: `u16::from_be_bytes(sha256(name)[0..2]) % 256`.
pub fn shard_of(destination: &str) -> u16 {
    let digest = Sha256::digest(destination.as_bytes());
    u16::from_be_bytes([digest[0], digest[1]]) % SHARDS
}

/// A set of shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSet([u64; 4]);

impl ShardSet {
    /// Every shard.
    pub fn all() -> ShardSet {
        ShardSet([u64::MAX; 4])
    }

    pub fn contains(&self, shard: u16) -> bool {
        let shard = usize::from(shard % SHARDS);
        self.0[shard / 64] & (1 << (shard % 64)) != 0
    }

    pub fn insert(&mut self, shard: u16) {
        let shard = usize::from(shard % SHARDS);
        self.0[shard / 64] |= 1 << (shard % 64);
    }

    pub fn remove(&mut self, shard: u16) {
        let shard = usize::from(shard % SHARDS);
        self.0[shard / 64] &= !(1 << (shard % 64));
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The shards in `self` and not in `other`.
    pub fn union(&self, other: &ShardSet) -> ShardSet {
        let mut out = *self;
        for (w, o) in out.0.iter_mut().zip(other.0) {
            *w |= o;
        }
        out
    }

    pub fn minus(&self, other: &ShardSet) -> ShardSet {
        let mut out = *self;
        for (w, o) in out.0.iter_mut().zip(other.0) {
            *w &= !o;
        }
        out
    }

    /// The shards, ascending.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u16> + '_ {
        (0..SHARDS).filter(|s| self.contains(*s))
    }

    /// Whether `destination`'s shard is in the set.
    pub fn holds(&self, destination: &str) -> bool {
        self.contains(shard_of(destination))
    }
}

impl FromIterator<u16> for ShardSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> ShardSet {
        let mut set = ShardSet::default();
        for shard in iter {
            set.insert(shard);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed vectors (from `printf %s NAME | sha256sum`): the function
    /// must never change, instances of two versions on one database must
    /// agree.
    #[test]
    fn shards_are_fixed() {
        // sha256("example.org") = bfab…, ("matrix.org") = bb42…, ("") = e3b0…
        assert_eq!(shard_of("example.org"), 0xab);
        assert_eq!(shard_of("matrix.org"), 0x42);
        assert_eq!(shard_of(""), 0xb0);
    }

    #[test]
    fn shards_spread_names() {
        let mut counts = [0u32; 256];
        for i in 0..25_600 {
            counts[usize::from(shard_of(&format!("hs{i}.example")))] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50 && c < 160), "{counts:?}");
    }

    #[test]
    fn sets_hold_what_is_put_in() {
        let mut set: ShardSet = [0, 63, 64, 255].into_iter().collect();
        assert_eq!(set.len(), 4);
        assert!(set.contains(63) && set.contains(64) && !set.contains(1));
        set.remove(63);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 64, 255]);
        assert_eq!(ShardSet::all().len(), 256);
        assert_eq!(ShardSet::all().minus(&set).len(), 253);
        assert!(ShardSet::default().is_empty());
    }
}
