//! API token material: generation and the one-way hash that is all the hub stores.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// JupyterHub's format: `uuid4().hex`, 32 lowercase hex characters (128 random bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a token. Tokens are high-entropy secrets, so one unsalted hash
/// keeps them unrecoverable while allowing lookup in one step.
pub fn hash_token(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"ganymede-token-v1:");
    hasher.update(token.as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// A fresh random cluster secret (hex of 32 bytes).
pub fn new_cluster_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_jupyterhubs_and_hash_one_way() {
        let token = new_token();
        assert_eq!(token.len(), 32);
        assert!(token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(new_token(), token);
        let hash = hash_token(&token);
        assert!(hash.starts_with("sha256:") && !hash.contains(&token));
        assert_eq!(hash, hash_token(&token));
        assert_eq!(new_cluster_secret().len(), 64);
    }
}
