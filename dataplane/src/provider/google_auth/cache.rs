//! Access tokens by service account.
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

use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{EXCHANGE_TIMEOUT, ServiceAccount, TokenEndpoint};
use crate::provider::{CallError, CallErrorKind};

/// A token is replaced this long before it expires (or at half its life, if that is sooner), so
/// no request goes out with a token that expires in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a failed fetch stays the answer before the token endpoint is asked again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

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

    use http::StatusCode;

    use super::*;
    use crate::provider::{
        ErrorClass,
        google_auth::{Grant, refused},
    };

    const KEY_FILE: &str =
        include_str!("../../../../tests/fixtures/google-auth/test-service-account.json");

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
