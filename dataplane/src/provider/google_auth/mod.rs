//! Google service-account credentials: the JWT-bearer grant (RFC 7523) that turns a service
//! account's key into an OAuth2 access token, and a cache of those tokens per account.
//!
//! The key is the JSON file Google issues (`client_email`, `private_key` as PEM, `token_uri`),
//! held whole in the deployment's Secret. `token_uri` is configuration like the rest of the
//! file, and must be `https`: the signed assertion it receives is a credential. Plain `http` is
//! taken for loopback hosts only (`127.0.0.1`, `::1`, `localhost`), where tests run the fake
//! provider's `POST /token`.
//!
//! Access tokens are cached per account by `cache::TokenCache`.

mod cache;

use std::time::Duration;

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, StatusCode, Uri, header};
use http_body_util::Full;
use ring::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use serde::Deserialize;
use serde_json::json;

use super::{AttemptTimeouts, CallError, CallErrorKind, HttpClient, transport};

pub use cache::TokenCache;

/// The scope every Vertex AI call needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// The whole exchange with the token endpoint, connection included: the longest any request
/// waits for a token.
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

#[cfg(test)]
mod tests {
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use serde_json::Value;

    use super::*;
    use crate::provider::ErrorClass;

    const KEY_FILE: &str =
        include_str!("../../../../tests/fixtures/google-auth/test-service-account.json");
    const PUBLIC_KEY: &str =
        include_str!("../../../../tests/fixtures/google-auth/test-service-account.pub.pem");

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
}
