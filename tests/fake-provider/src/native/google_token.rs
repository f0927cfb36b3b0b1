//! Google's OAuth token endpoint for service accounts (`POST /token`, the JWT-bearer grant): the
//! assertion's RS256 signature is checked against the test service account's public key
//! (`tests/fixtures/google-auth/`), its claims against what Google checks, and a fresh access
//! token is issued. Vertex paths accept only tokens issued here. Every exchange is recorded like
//! any request, so a test counts them to see the gateway's token cache at work.

use std::{
    collections::BTreeSet,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use http::StatusCode;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::{Reply, Req};
use crate::lock;

pub const PATH: &str = "/token";
const KEY_FILE: &str = include_str!("../../../fixtures/google-auth/test-service-account.json");
const PUBLIC_KEY_PEM: &str =
    include_str!("../../../fixtures/google-auth/test-service-account.pub.pem");
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// Every token this process issued (shared by all fakes in it: a token is a random string).
static ISSUED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Whether `token` was issued here.
pub fn is_issued(token: &str) -> bool {
    lock(&ISSUED).contains(token)
}

/// The answer to a token request.
pub fn answer(req: &Req<'_>) -> Reply {
    match grant(req) {
        Ok(token) => Reply::json(
            StatusCode::OK,
            json!({"access_token": token, "expires_in": TOKEN_LIFETIME_SECS, "token_type": "Bearer"}),
        ),
        Err(description) => Reply::json(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": description}),
        ),
    }
}

fn grant(req: &Req<'_>) -> Result<String, String> {
    let form = std::str::from_utf8(req.raw).map_err(|_| "the body is not text")?;
    let field = |name: &str| {
        form.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| percent_decode(value))
    };
    if field("grant_type").as_deref() != Some(JWT_BEARER) {
        return Err(format!("grant_type must be {JWT_BEARER}"));
    }
    let assertion = field("assertion").ok_or("no assertion")?;
    let claims = verify(&assertion)?;
    check_claims(&claims, req.header("host"))?;
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let token = format!("ya29.fake-{serial}-{nanos:08x}");
    lock(&ISSUED).insert(token.clone());
    Ok(token)
}

/// The claims of a JWT whose RS256 signature verifies with the test account's public key.
fn verify(jwt: &str) -> Result<Value, String> {
    let (signed, signature) = jwt.rsplit_once('.').ok_or("the assertion is not a JWT")?;
    let (head, claims) = signed.split_once('.').ok_or("the assertion is not a JWT")?;
    if decode_json(head)?["alg"] != "RS256" {
        return Err("the assertion must be signed with RS256".to_owned());
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url")?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key()?)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    decode_json(claims)
}

fn check_claims(claims: &Value, host: Option<&str>) -> Result<(), String> {
    let account: Value = serde_json::from_str(KEY_FILE).map_err(|e| e.to_string())?;
    if claims["iss"] != account["client_email"] {
        return Err("iss is not the test service account".to_owned());
    }
    if claims["scope"]
        .as_str()
        .is_none_or(|s| !s.split(' ').any(|s| s == SCOPE))
    {
        return Err(format!("scope must include {SCOPE}"));
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    let expected = host.map(|host| format!("http://{host}{PATH}"));
    if !aud.ends_with(PATH) || expected.is_some_and(|expected| aud != expected) {
        return Err("aud must be this token endpoint".to_owned());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err("iat and exp are required".to_owned());
    };
    if exp <= now || iat > now + 60 || exp.saturating_sub(iat) > TOKEN_LIFETIME_SECS {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".to_owned());
    }
    Ok(())
}

fn public_key() -> Result<Vec<u8>, String> {
    let base64: String = PUBLIC_KEY_PEM
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD.decode(base64).map_err(|e| e.to_string())
}

fn decode_json(part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| "a JWT part is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "a JWT part is not JSON".to_owned())
}

/// `application/x-www-form-urlencoded` value decoding (`+` and `%XX`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(high), Some(low)) if hex(high).is_some() && hex(low).is_some() => {
                let value = hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 2;
            }
            (byte, _, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
