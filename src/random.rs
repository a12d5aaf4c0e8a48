//! Random numbers for tokens and splay, from the standard library alone.

/// A random number from the standard library's randomly keyed hasher (each
/// `RandomState` has its own keys, so each call differs): enough for tokens
/// and splay, no crate needed.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
