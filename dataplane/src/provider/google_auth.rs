//! Google service-account credentials: the JWT-bearer grant (RFC 7523) that turns a service
//! account's key into an OAuth2 access token, and a cache of those tokens per account.
//!
//! The key is the JSON file Google issues (`client_email`, `private_key` as PEM, `token_uri`),
//! held whole in the deployment's Secret. `token_uri` is configuration like the rest of the
//! file: tests point it at the fake provider's `POST /token`.
//!
//! Tokens live an hour. Each account keeps its current token and refreshes it a few minutes
//! before it expires; one request refreshes while the others wait for its result, so a burst of
//! requests after expiry costs one call to the token endpoint, not one each.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::Full;
use ring::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{AttemptTimeouts, CallError, CallErrorKind, HttpClient, transport};

/// The scope every Vertex AI call needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// A token is replaced this long before it expires (or at half its life, if that is sooner), so
/// no request goes out with a token that expires in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The whole exchange with the token endpoint, connection included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Token answers are small; anything larger is not one.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
const JWT_BEARER_GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// A service account, its key parsed once.
pub struct ServiceAccount {
    client_email: String,
    token_uri: String,
    key_id: Option<String>,
    key: RsaKeyPair,
}

/// The members of Google's key file that the grant needs.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    token_uri: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

impl ServiceAccount {
    /// Reads Google's service-account key JSON. Errors never quote the key.
    pub fn parse(json: &str) -> Result<Self, CallError> {
        let file: KeyFile = serde_json::from_str(json).map_err(|_| {
            invalid_key(
                "is not a service-account key JSON with client_email, private_key and token_uri",
            )
        })?;
        let (label, der) = pem(&file.private_key)
            .ok_or_else(|| invalid_key("has a private_key that is not a PEM block"))?;
        let key = match label {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            _ => return Err(invalid_key("has a private_key that is not an RSA key")),
        }
        .map_err(|_| invalid_key("has a private_key that is not a usable RSA key"))?;
        Ok(Self {
            client_email: file.client_email,
            token_uri: file.token_uri,
            key_id: file.private_key_id,
            key,
        })
    }

    /// The signed JWT (RS256) asking for a cloud-platform token, issued at `now` (Unix seconds).
    pub fn assertion(&self, now: u64) -> Result<String, CallError> {
        let mut head = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            head["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": CLOUD_PLATFORM_SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let mut jwt = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(head.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| invalid_key("could not sign the token request"))?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }

    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }
}

/// The label and DER bytes of the first PEM block in `text`.
fn pem(text: &str) -> Option<(&str, Vec<u8>)> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let label_end = start + text[start..].find("-----")?;
    let label = &text[start..label_end];
    let body_start = label_end + "-----".len();
    let end_marker = format!("-----END {label}-----");
    let body_end = body_start + text[body_start..].find(&end_marker)?;
    let base64: String = text[body_start..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    Some((label, STANDARD.decode(base64).ok()?))
}

/// The deployment's key is not a key the grant can use: its configuration is wrong.
fn invalid_key(what: &str) -> CallError {
    CallError::status(
        StatusCode::UNAUTHORIZED,
        &HeaderMap::new(),
        None,
        format!("vertex: the deployment's service-account key {what}"),
    )
}

/// An access token and how long it is valid.
pub struct Grant {
    pub access_token: String,
    pub expires_in: Duration,
}

/// Where assertions are exchanged for access tokens.
pub trait TokenEndpoint: Sync {
    fn exchange<'a>(
        &'a self,
        token_uri: &'a str,
        assertion: String,
    ) -> BoxFuture<'a, Result<Grant, CallError>>;
}

/// The account's `token_uri`, over the deployment's HTTP client.
pub struct HttpTokenEndpoint<'a>(pub &'a HttpClient);

impl TokenEndpoint for HttpTokenEndpoint<'_> {
    fn exchange<'a>(
        &'a self,
        token_uri: &'a str,
        assertion: String,
    ) -> BoxFuture<'a, Result<Grant, CallError>> {
        Box::pin(async move {
            tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(self.0, token_uri, assertion))
                .await
                .map_err(|_| {
                    CallError::new(
                        CallErrorKind::Timeout,
                        "vertex: the token endpoint did not answer in time",
                    )
                })?
        })
    }
}

async fn exchange(
    http: &HttpClient,
    token_uri: &str,
    assertion: String,
) -> Result<Grant, CallError> {
    // The assertion is base64url and dots: nothing in it needs form encoding.
    let form = format!("grant_type={JWT_BEARER_GRANT}&assertion={assertion}");
    let request = Request::post(token_uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::USER_AGENT, transport::USER_AGENT)
        .body(Full::new(Bytes::from(form)))
        .map_err(|_| invalid_key("has a token_uri that is not a URL"))?;
    let timeouts = AttemptTimeouts {
        first_byte: EXCHANGE_TIMEOUT,
        idle: EXCHANGE_TIMEOUT,
        connect: EXCHANGE_TIMEOUT,
    };
    let response = transport::send(http, request, timeouts)
        .await
        .map_err(|e| {
            CallError::new(e.kind, format!("vertex: the token endpoint: {}", e.message))
        })?;
    let status = response.status();
    let body = transport::read_body(
        response.into_body(),
        MAX_TOKEN_RESPONSE_BYTES,
        EXCHANGE_TIMEOUT,
    )
    .await?;
    if !status.is_success() {
        return Err(refused(status, &body));
    }
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
        CallError::new(
            CallErrorKind::Protocol,
            "vertex: the token endpoint's answer has no access_token",
        )
    })?;
    Ok(Grant {
        access_token: answer.access_token,
        expires_in: Duration::from_secs(answer.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS)),
    })
}

/// The token endpoint said no. A 4xx means the account or its key is refused (OAuth's `error`
/// code names why; its description is left out, it is the endpoint's prose); anything else is
/// the endpoint failing.
fn refused(status: StatusCode, body: &[u8]) -> CallError {
    #[derive(Deserialize)]
    struct OauthError {
        error: String,
    }
    let reason = serde_json::from_slice::<OauthError>(body)
        .ok()
        .filter(|e| e.error.len() <= 64 && e.error.bytes().all(|b| b.is_ascii_graphic()))
        .map(|e| format!(" ({})", e.error))
        .unwrap_or_default();
    let (status, what) = if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        (StatusCode::UNAUTHORIZED, "refused the service account")
    } else {
        (StatusCode::BAD_GATEWAY, "failed")
    };
    CallError::status(
        status,
        &HeaderMap::new(),
        None,
        format!("vertex: the token endpoint {what}{reason}"),
    )
}

/// Access tokens by service account.
pub struct TokenCache {
    /// Keyed by the SHA-256 of the key JSON: a rotated key is a new account, and no key material
    /// is kept outside the parsed key.
    accounts: moka::sync::Cache<[u8; 32], Arc<Account>>,
}

struct Account {
    service: ServiceAccount,
    current: Mutex<Option<Token>>,
    /// Held while a token is being fetched: the single flight.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    refresh_at: Instant,
}

impl Account {
    fn fresh(&self) -> Option<Arc<str>> {
        crate::sync::lock(&self.current)
            .as_ref()
            .filter(|token| Instant::now() < token.refresh_at)
            .map(|token| token.value.clone())
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            accounts: moka::sync::Cache::builder()
                .max_capacity(1024)
                // An account no deployment uses any more goes after a while.
                .time_to_idle(Duration::from_secs(6 * 3600))
                .build(),
        }
    }
}

impl TokenCache {
    /// A valid access token for the account whose key is `key_json`, fetched from `endpoint`
    /// only when the cached one is missing or about to expire.
    pub async fn bearer(
        &self,
        key_json: &str,
        endpoint: &dyn TokenEndpoint,
    ) -> Result<Arc<str>, CallError> {
        let account = self.account(key_json)?;
        if let Some(token) = account.fresh() {
            return Ok(token);
        }
        let _flight = account.refresh.lock().await;
        // Whoever held the flight before us may have just refreshed it.
        if let Some(token) = account.fresh() {
            return Ok(token);
        }
        let assertion = account.service.assertion(unix_now())?;
        let grant = endpoint
            .exchange(account.service.token_uri(), assertion)
            .await?;
        let margin = REFRESH_MARGIN.min(grant.expires_in / 2);
        let token = Token {
            value: Arc::from(grant.access_token),
            refresh_at: Instant::now() + grant.expires_in.saturating_sub(margin),
        };
        let value = token.value.clone();
        *crate::sync::lock(&account.current) = Some(token);
        Ok(value)
    }

    fn account(&self, key_json: &str) -> Result<Arc<Account>, CallError> {
        let id: [u8; 32] = Sha256::digest(key_json.as_bytes()).into();
        self.accounts
            .try_get_with(id, || {
                ServiceAccount::parse(key_json).map(|service| {
                    Arc::new(Account {
                        service,
                        current: Mutex::new(None),
                        refresh: tokio::sync::Mutex::new(()),
                    })
                })
            })
            .map_err(|e| (*e).clone())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use serde_json::Value;

    use super::*;
    use crate::provider::ErrorClass;

    const KEY_FILE: &str =
        include_str!("../../../tests/fixtures/google-auth/test-service-account.json");
    const PUBLIC_KEY: &str =
        include_str!("../../../tests/fixtures/google-auth/test-service-account.pub.pem");

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_with_google_claims_that_verifies() {
        let account = ServiceAccount::parse(KEY_FILE).unwrap();
        let jwt = account.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let head = decode_part(parts[0]);
        assert_eq!(head["alg"], "RS256");
        assert_eq!(head["typ"], "JWT");
        assert_eq!(head["kid"], "0123456789abcdef0123456789abcdef01234567");
        let claims = decode_part(parts[1]);
        assert_eq!(
            claims["iss"],
            "modelgate-test@modelgate-test.iam.gserviceaccount.com"
        );
        assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_003_600);

        // The committed public key (what the fake provider checks with) verifies the signature.
        let (label, public) = pem(PUBLIC_KEY).unwrap();
        assert_eq!(label, "RSA PUBLIC KEY");
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(signed.as_bytes(), &signature)
            .expect("the signature verifies with the account's public key");
        let mut tampered = signed.into_bytes();
        tampered[0] ^= 1;
        assert!(
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(&tampered, &signature)
                .is_err()
        );
    }

    #[test]
    fn a_bad_key_is_an_auth_error_that_quotes_nothing() {
        let broken_pem = KEY_FILE.replace("MII", "!!!");
        for bad in ["{}", "not json", broken_pem.as_str()] {
            let Err(error) = ServiceAccount::parse(bad) else {
                panic!("{bad:?} parsed");
            };
            assert_eq!(error.class(), ErrorClass::Auth, "{bad:?}");
            assert!(!error.message.contains("!!!"), "{}", error.message);
        }
    }

    /// A token endpoint that counts its calls and answers after `delay`.
    struct CountingEndpoint {
        calls: AtomicUsize,
        expires_in: Duration,
        delay: Duration,
        fail: bool,
    }

    impl CountingEndpoint {
        fn new(expires_in: Duration) -> Self {
            Self {
                calls: AtomicUsize::new(0),
                expires_in,
                delay: Duration::ZERO,
                fail: false,
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl TokenEndpoint for CountingEndpoint {
        fn exchange<'a>(
            &'a self,
            token_uri: &'a str,
            assertion: String,
        ) -> BoxFuture<'a, Result<Grant, CallError>> {
            Box::pin(async move {
                assert_eq!(token_uri, "https://oauth2.googleapis.com/token");
                assert_eq!(assertion.split('.').count(), 3);
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(self.delay).await;
                if self.fail {
                    return Err(refused(
                        StatusCode::BAD_REQUEST,
                        br#"{"error":"invalid_grant"}"#,
                    ));
                }
                Ok(Grant {
                    access_token: format!("token-{n}"),
                    expires_in: self.expires_in,
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_until_shortly_before_it_expires() {
        let cache = TokenCache::default();
        let endpoint = CountingEndpoint::new(Duration::from_secs(3600));
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-1"
        );
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-1"
        );
        assert_eq!(endpoint.calls(), 1, "the second request is a cache hit");

        tokio::time::advance(Duration::from_secs(3600 - 301)).await;
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-1"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-2",
            "inside the refresh margin a new token is fetched"
        );
        assert_eq!(endpoint.calls(), 2);

        // Another key is another account with its own token.
        let other = KEY_FILE.replace("modelgate-test@", "other@");
        assert_eq!(&*cache.bearer(&other, &endpoint).await.unwrap(), "token-3");
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-2"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_lived_token_is_refreshed_at_half_its_life() {
        let cache = TokenCache::default();
        let endpoint = CountingEndpoint::new(Duration::from_secs(120));
        cache.bearer(KEY_FILE, &endpoint).await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        cache.bearer(KEY_FILE, &endpoint).await.unwrap();
        assert_eq!(endpoint.calls(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.bearer(KEY_FILE, &endpoint).await.unwrap();
        assert_eq!(endpoint.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_fetch() {
        let cache = TokenCache::default();
        let mut endpoint = CountingEndpoint::new(Duration::from_secs(3600));
        endpoint.delay = Duration::from_millis(200);
        let requests = (0..16).map(|_| cache.bearer(KEY_FILE, &endpoint));
        let tokens = futures_util::future::join_all(requests).await;
        assert!(tokens.iter().all(|t| t.as_deref().ok() == Some("token-1")));
        assert_eq!(endpoint.calls(), 1);
    }

    #[tokio::test]
    async fn a_refused_grant_is_an_auth_error_and_is_not_cached() {
        let cache = TokenCache::default();
        let mut endpoint = CountingEndpoint::new(Duration::from_secs(3600));
        endpoint.fail = true;
        let error = cache.bearer(KEY_FILE, &endpoint).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Auth);
        assert_eq!(
            error.message,
            "vertex: the token endpoint refused the service account (invalid_grant)"
        );
        cache.bearer(KEY_FILE, &endpoint).await.unwrap_err();
        assert_eq!(endpoint.calls(), 2, "a failure is tried again next time");
        assert_eq!(
            refused(StatusCode::SERVICE_UNAVAILABLE, b"").class(),
            ErrorClass::Upstream
        );
    }
}
