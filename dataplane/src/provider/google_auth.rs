//! Google service-account credentials: the JWT-bearer grant (RFC 7523) that turns a service
//! account's key into an OAuth2 access token, and a cache of those tokens per account.
//!
//! The key is the JSON file Google issues (`client_email`, `private_key` as PEM, `token_uri`),
//! held whole in the deployment's Secret. `token_uri` is configuration like the rest of the
//! file, and must be `https`: the signed assertion it receives is a credential. Plain `http` is
//! taken for loopback hosts only (`127.0.0.1`, `::1`, `localhost`), where tests run the fake
//! provider's `POST /token`.
//!
//! Tokens live an hour. Each account keeps its current token and starts a refresh a few minutes
//! before it expires, in the background: requests go on using the current token until it
//! actually expires. Only a request that has no valid token waits, and it waits for the one
//! fetch in flight, sharing its result, error included, so a burst of requests costs one call
//! to the token endpoint and no request waits longer than that one fetch (`EXCHANGE_TIMEOUT`).
//! A failed fetch is remembered for `FAILURE_MEMORY`, so a token endpoint that is down is not
//! asked again by every request. A token Vertex refuses (a 401: revoked) is dropped (`evict`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bytes::Bytes;
use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use http::{HeaderMap, Request, StatusCode, Uri, header};
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
/// The whole exchange with the token endpoint, connection included: the longest any request
/// waits for a token.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed fetch stays the answer before the token endpoint is asked again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);
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
        if !is_safe_token_uri(&file.token_uri) {
            return Err(invalid_key(
                "has a token_uri that is not https (plain http is taken for loopback hosts only)",
            ));
        }
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

/// An `https` URL, or an `http` one on a loopback host: the assertion sent there is a
/// credential, so it never crosses a network in the clear.
fn is_safe_token_uri(token_uri: &str) -> bool {
    let Ok(uri) = token_uri.parse::<Uri>() else {
        return false;
    };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(host)) => {
            matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1")
        }
        _ => false,
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

/// Where assertions are exchanged for access tokens. The exchange owns what it needs (it runs
/// as a task of its own, finished even when the request that started it has gone).
pub trait TokenEndpoint: Sync {
    fn exchange(
        &self,
        token_uri: String,
        assertion: String,
    ) -> BoxFuture<'static, Result<Grant, CallError>>;
}

/// The account's `token_uri`, over the deployment's HTTP client.
pub struct HttpTokenEndpoint(pub HttpClient);

impl TokenEndpoint for HttpTokenEndpoint {
    fn exchange(
        &self,
        token_uri: String,
        assertion: String,
    ) -> BoxFuture<'static, Result<Grant, CallError>> {
        let http = self.0.clone();
        Box::pin(async move { exchange(&http, &token_uri, assertion).await })
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
    state: Mutex<State>,
}

/// One account's token, the fetch in flight and the last failure.
#[derive(Default)]
struct State {
    token: Option<Token>,
    /// The fetch in progress; everyone who needs a token awaits this same one.
    flight: Option<Flight>,
    /// The last fetch failed: its error is the answer until the instant.
    failure: Option<(CallError, Instant)>,
}

type Flight = Shared<BoxFuture<'static, Result<Arc<str>, CallError>>>;

struct Token {
    value: Arc<str>,
    issued: Instant,
    /// When a new token is fetched (in the background: this one still serves).
    refresh_at: Instant,
    /// When this one stops being sent.
    expires_at: Instant,
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

/// What `bearer` found under the lock.
enum Found {
    Token(Arc<str>),
    Failed(CallError),
    Wait(Flight),
}

impl TokenCache {
    /// A valid access token for the account whose key is `key_json`. A token due for refresh
    /// is still handed out while it is valid (the refresh runs in the background); without a
    /// valid one the caller waits for the single fetch in flight.
    pub async fn bearer(
        &self,
        key_json: &str,
        endpoint: &dyn TokenEndpoint,
    ) -> Result<Arc<str>, CallError> {
        let account = self.account(key_json)?;
        let found = {
            let mut state = crate::sync::lock(&account.state);
            let now = Instant::now();
            let valid = state
                .token
                .as_ref()
                .filter(|t| now < t.expires_at)
                .map(|t| (t.value.clone(), now >= t.refresh_at));
            let failed = state
                .failure
                .as_ref()
                .filter(|(_, until)| now < *until)
                .map(|(error, _)| error.clone());
            match (valid, failed) {
                (Some((token, false)), _) => Found::Token(token),
                // Due, but the last refresh failed a moment ago: keep using this one.
                (Some((token, true)), Some(_)) => Found::Token(token),
                (Some((token, true)), None) => {
                    // The refresh runs as its own task; this request does not wait for it.
                    drop(start(&account, &mut state, endpoint));
                    Found::Token(token)
                }
                (None, Some(error)) => Found::Failed(error),
                (None, None) => Found::Wait(start(&account, &mut state, endpoint)),
            }
        };
        match found {
            Found::Token(token) => Ok(token),
            Found::Failed(error) => Err(error),
            Found::Wait(flight) => flight.await,
        }
    }

    /// Drops the account's token if it was issued at or before `used_by`, the moment a request
    /// that the provider refused as unauthenticated was sent with it: a revoked token must not
    /// serve out its hour. A newer token (fetched since) stays.
    pub fn evict(&self, key_json: &str, used_by: Instant) {
        let id: [u8; 32] = Sha256::digest(key_json.as_bytes()).into();
        if let Some(account) = self.accounts.get(&id) {
            let mut state = crate::sync::lock(&account.state);
            if state.token.as_ref().is_some_and(|t| t.issued <= used_by) {
                state.token = None;
            }
        }
    }

    fn account(&self, key_json: &str) -> Result<Arc<Account>, CallError> {
        let id: [u8; 32] = Sha256::digest(key_json.as_bytes()).into();
        self.accounts
            .try_get_with(id, || {
                ServiceAccount::parse(key_json).map(|service| {
                    Arc::new(Account {
                        service,
                        state: Mutex::default(),
                    })
                })
            })
            .map_err(|e| (*e).clone())
    }
}

/// The fetch in flight, or a new one, run as a task of its own: it finishes (within
/// `EXCHANGE_TIMEOUT`) and records its token or failure even if every waiter has gone.
fn start(account: &Arc<Account>, state: &mut State, endpoint: &dyn TokenEndpoint) -> Flight {
    if let Some(flight) = &state.flight {
        return flight.clone();
    }
    let exchange = account
        .service
        .assertion(unix_now())
        .map(|assertion| endpoint.exchange(account.service.token_uri().to_owned(), assertion));
    let account = account.clone();
    let flight = async move {
        let grant = match exchange {
            Ok(exchange) => tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::new(
                        CallErrorKind::Timeout,
                        "vertex: the token endpoint did not answer in time",
                    ))
                }),
            Err(error) => Err(error),
        };
        let mut state = crate::sync::lock(&account.state);
        state.flight = None;
        let now = Instant::now();
        match grant {
            Ok(grant) => {
                let margin = REFRESH_MARGIN.min(grant.expires_in / 2);
                let value: Arc<str> = Arc::from(grant.access_token);
                state.token = Some(Token {
                    value: value.clone(),
                    issued: now,
                    refresh_at: now + grant.expires_in.saturating_sub(margin),
                    expires_at: now + grant.expires_in,
                });
                state.failure = None;
                Ok(value)
            }
            Err(error) => {
                state.failure = Some((error.clone(), now + FAILURE_MEMORY));
                Err(error)
            }
        }
    }
    .boxed()
    .shared();
    state.flight = Some(flight.clone());
    tokio::spawn(flight.clone());
    flight
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

    #[test]
    fn the_token_uri_must_be_https_unless_it_is_on_this_host() {
        let with_uri = |uri: &str| {
            let mut key: Value = serde_json::from_str(KEY_FILE).unwrap();
            key["token_uri"] = Value::from(uri);
            ServiceAccount::parse(&key.to_string())
        };
        for good in [
            "https://oauth2.googleapis.com/token",
            "http://127.0.0.1:8080/token",
            "http://localhost/token",
            "http://[::1]:9/token",
        ] {
            assert!(with_uri(good).is_ok(), "{good}");
        }
        for bad in [
            "http://oauth2.googleapis.com/token",
            "http://10.0.0.1/token",
            "http://localhost.example.com/token",
            "ftp://127.0.0.1/token",
            "/token",
        ] {
            let Err(error) = with_uri(bad) else {
                panic!("{bad} accepted");
            };
            assert!(error.message.contains("token_uri"), "{}", error.message);
        }
    }

    /// A token endpoint that counts its calls and answers after `delay`.
    #[derive(Clone)]
    struct CountingEndpoint {
        calls: Arc<AtomicUsize>,
        expires_in: Duration,
        delay: Duration,
        fail: bool,
    }

    impl CountingEndpoint {
        fn new(expires_in: Duration) -> Self {
            Self {
                calls: Arc::default(),
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
        fn exchange(
            &self,
            token_uri: String,
            assertion: String,
        ) -> BoxFuture<'static, Result<Grant, CallError>> {
            let this = self.clone();
            Box::pin(async move {
                assert_eq!(token_uri, "https://oauth2.googleapis.com/token");
                assert_eq!(assertion.split('.').count(), 3);
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(this.delay).await;
                if this.fail {
                    return Err(refused(
                        StatusCode::BAD_REQUEST,
                        br#"{"error":"invalid_grant"}"#,
                    ));
                }
                Ok(Grant {
                    access_token: format!("token-{n}"),
                    expires_in: this.expires_in,
                })
            })
        }
    }

    /// Lets background refreshes run (time is paused: they finish at once).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_serves_while_its_refresh_runs_in_the_background() {
        let cache = TokenCache::default();
        let mut endpoint = CountingEndpoint::new(Duration::from_secs(3600));
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
        cache.bearer(KEY_FILE, &endpoint).await.unwrap();
        assert_eq!(endpoint.calls(), 1, "not yet due");
        tokio::time::advance(Duration::from_secs(2)).await;
        // Due: the refresh is slow, but the token is valid for minutes yet and serves at once.
        endpoint.delay = Duration::from_secs(3);
        let started = Instant::now();
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-1"
        );
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-1"
        );
        assert_eq!(started.elapsed(), Duration::ZERO, "nobody waited");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(endpoint.calls(), 2, "one refresh for both requests");
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-2"
        );

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
        settle().await;
        assert_eq!(endpoint.calls(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.bearer(KEY_FILE, &endpoint).await.unwrap();
        settle().await;
        assert_eq!(endpoint.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_never_handed_out() {
        let cache = TokenCache::default();
        let mut endpoint = CountingEndpoint::new(Duration::from_secs(120));
        cache.bearer(KEY_FILE, &endpoint).await.unwrap();
        // The refresh fails, so the token runs out; after that only a new one will do.
        endpoint.fail = true;
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-1"
        );
        settle().await;
        tokio::time::advance(Duration::from_secs(60)).await;
        endpoint.fail = false;
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-3"
        );
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

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_a_failed_fetch_and_it_is_remembered_briefly() {
        let cache = TokenCache::default();
        let mut endpoint = CountingEndpoint::new(Duration::from_secs(3600));
        endpoint.fail = true;
        endpoint.delay = Duration::from_millis(200);
        let requests = (0..16).map(|_| cache.bearer(KEY_FILE, &endpoint));
        let results = futures_util::future::join_all(requests).await;
        for result in &results {
            let error = result.as_ref().unwrap_err();
            assert_eq!(error.class(), ErrorClass::Auth);
            assert_eq!(
                error.message,
                "vertex: the token endpoint refused the service account (invalid_grant)"
            );
        }
        assert_eq!(endpoint.calls(), 1, "one fetch, its error shared");
        tokio::time::advance(FAILURE_MEMORY - Duration::from_secs(1)).await;
        cache.bearer(KEY_FILE, &endpoint).await.unwrap_err();
        assert_eq!(endpoint.calls(), 1, "a failure is remembered for a moment");
        tokio::time::advance(Duration::from_secs(2)).await;
        endpoint.fail = false;
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-2"
        );
        assert_eq!(
            refused(StatusCode::SERVICE_UNAVAILABLE, b"").class(),
            ErrorClass::Upstream
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_waits_longer_than_one_fetch() {
        let cache = TokenCache::default();
        let mut endpoint = CountingEndpoint::new(Duration::from_secs(3600));
        endpoint.delay = Duration::from_secs(24 * 3600);
        let first = async {
            let error = cache.bearer(KEY_FILE, &endpoint).await.unwrap_err();
            assert_eq!(error.kind, CallErrorKind::Timeout);
        };
        let later = async {
            tokio::time::sleep(EXCHANGE_TIMEOUT / 2).await;
            let started = Instant::now();
            let error = cache.bearer(KEY_FILE, &endpoint).await.unwrap_err();
            assert_eq!(error.kind, CallErrorKind::Timeout);
            started.elapsed()
        };
        let ((), waited) = tokio::join!(first, later);
        assert_eq!(
            waited,
            EXCHANGE_TIMEOUT / 2,
            "it joined the fetch in flight"
        );
        assert_eq!(endpoint.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_dropped_but_a_newer_one_stays() {
        let cache = TokenCache::default();
        let endpoint = CountingEndpoint::new(Duration::from_secs(3600));
        cache.bearer(KEY_FILE, &endpoint).await.unwrap();
        let sent = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        cache.evict(KEY_FILE, sent);
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-2",
            "the revoked token is not reused"
        );
        // A 401 for a request sent with the old token does not drop the new one.
        cache.evict(KEY_FILE, sent);
        assert_eq!(
            &*cache.bearer(KEY_FILE, &endpoint).await.unwrap(),
            "token-2"
        );
        assert_eq!(endpoint.calls(), 2);
    }
}
