//! Bearer virtual key -> the caller's key entry. The key is hashed at once and only the hash is
//! compared (in constant time, inside the snapshot); the key itself is never logged or stored.

use http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::{
    config::{KeyEntry, Snapshot},
    error::ApiError,
};

/// Finds the caller's key from the credential its front door read; 401 when missing, unknown or
/// expired.
pub fn authenticate<'s>(
    snapshot: &'s Snapshot,
    presented: Option<&str>,
    now_unix: i64,
) -> Result<&'s KeyEntry, ApiError> {
    let presented = presented.ok_or_else(ApiError::missing_key)?;
    let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let entry = snapshot.key(&hash).ok_or_else(ApiError::unknown_key)?;
    if entry.expires_at.is_some_and(|at| at <= now_unix) {
        return Err(ApiError::expired_key());
    }
    Ok(entry)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn reads_only_bearer_tokens() {
        assert_eq!(bearer(&headers("Bearer sk-abc")), Some("sk-abc"));
        assert_eq!(bearer(&headers("bearer   sk-abc ")), Some("sk-abc"));
        assert_eq!(bearer(&headers("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("sk-abc")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
