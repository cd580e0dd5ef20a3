//! Fast hashing for keys that are small numbers (frame numbers, page
//! addresses, ids) or hashes already: splitmix64's finalizer instead of
//! SipHash, for the checkers' and the explorer's maps. Not for keys an
//! adversary chooses.

use std::collections::{HashMap, HashSet};

/// splitmix64's finalizer: a well-mixed 64-bit hash of a 64-bit value.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hasher for keys that are hashes or small numbers already.
#[derive(Default, Clone, Copy)]
pub struct MixHasher(u64);

impl std::hash::Hasher for MixHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix(self.0 ^ v);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
}

/// A `HashMap` hashed by [`MixHasher`].
pub type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<MixHasher>>;
/// A `HashSet` hashed by [`MixHasher`].
pub type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<MixHasher>>;
