//! The fake's own SigV4 check (independent of the gateway's signer): it knows one test key pair,
//! rebuilds the canonical request from what arrived and compares signatures, as Bedrock does.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::native::Req;

/// The access key the fake accepts.
pub const ACCESS_KEY_ID: &str = "AKIDFAKEBEDROCK";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "fake-bedrock-secret";

/// Why a signed request is refused: the exception name and its message.
pub type Refusal = (&'static str, String);

/// Checks `authorization` (`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`).
pub fn verify(req: &Req<'_>, authorization: &str) -> Result<(), Refusal> {
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("the Authorization header is not AWS4-HMAC-SHA256"))?;
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| incomplete(&format!("Authorization header requires '{name}'")))
    };
    let credential = field("Credential")?;
    let signed_headers = field("SignedHeaders")?;
    let signature = field("Signature")?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = parts.as_slice() else {
        return Err(incomplete("malformed Credential scope"));
    };
    if *key_id != ACCESS_KEY_ID {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_owned(),
        ));
    }
    if *service != "bedrock" {
        return Err(incomplete(
            "credential should be scoped to correct service: 'bedrock'",
        ));
    }
    let amz_date = req
        .header("x-amz-date")
        .ok_or_else(|| incomplete("the x-amz-date header is missing"))?;
    if !amz_date.starts_with(date) || amz_date.len() != 16 {
        return Err(incomplete("the credential date does not match x-amz-date"));
    }
    for required in ["host", "x-amz-date"] {
        if !signed_headers.split(';').any(|h| h == required) {
            return Err(incomplete(&format!("'{required}' must be a signed header")));
        }
    }
    let scope = Scope {
        date,
        region,
        service,
    };
    let expected = expected_signature(req, SECRET_ACCESS_KEY, amz_date, &scope, signed_headers)?;
    if expected != signature {
        return Err((
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .to_owned(),
        ));
    }
    Ok(())
}

/// The credential scope: `{date}/{region}/{service}/aws4_request`.
struct Scope<'a> {
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

/// The signature of `req` (always a POST: every Bedrock operation the fake serves is one).
fn expected_signature(
    req: &Req<'_>,
    secret: &str,
    amz_date: &str,
    scope: &Scope<'_>,
    signed_headers: &str,
) -> Result<String, Refusal> {
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let value = req
            .header(name)
            .ok_or_else(|| incomplete(&format!("signed header '{name}' is missing")))?;
        canonical_headers.push_str(&format!("{name}:{}\n", collapse_spaces(value)));
    }
    let canonical_request = format!(
        "POST\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        canonical_uri(req.path),
        canonical_query(req.query),
        hex::encode(Sha256::digest(req.raw)),
    );
    let Scope {
        date,
        region,
        service,
    } = scope;
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [*date, *region, *service, "aws4_request"]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac(&key, part.as_bytes())
        });
    Ok(hex::encode(hmac(&key, string_to_sign.as_bytes())))
}

fn incomplete(why: &str) -> Refusal {
    ("IncompleteSignatureException", why.to_owned())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Every path segment URI-encoded once more: what arrives as `v1%3A0` is signed as `v1%253A0`.
fn canonical_uri(path: &str) -> String {
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

fn uri_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use serde_json::Value;

    use super::*;

    /// bedrock.md §7 vector A's request.
    const BODY: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":256}}"#;
    const PATH: &str = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse";
    const SCOPE: Scope<'static> = Scope {
        date: "20250102",
        region: "us-east-1",
        service: "bedrock",
    };
    const SIGNED: &str = "content-type;host;x-amz-date";

    fn headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert(
            "host",
            "bedrock-runtime.us-east-1.amazonaws.com".parse().unwrap(),
        );
        headers.insert("x-amz-date", "20250102T030405Z".parse().unwrap());
        headers
    }

    fn req<'a>(headers: &'a HeaderMap, raw: &'a [u8]) -> Req<'a> {
        Req {
            path: PATH,
            query: "",
            headers,
            body: &Value::Null,
            raw,
        }
    }

    #[test]
    fn reproduces_the_spec_signature_with_the_spec_key() {
        let headers = headers();
        let signature = expected_signature(
            &req(&headers, BODY),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20250102T030405Z",
            &SCOPE,
            SIGNED,
        )
        .unwrap();
        assert_eq!(
            signature,
            "0d8a95badeb87feb618659eac2541ac8060638d6fdd308658a7c1bdcdd03dbb4"
        );
    }

    #[test]
    fn accepts_its_own_key_and_refuses_a_tampered_body_or_another_key() {
        let headers = headers();
        let signature = expected_signature(
            &req(&headers, BODY),
            SECRET_ACCESS_KEY,
            "20250102T030405Z",
            &SCOPE,
            SIGNED,
        )
        .unwrap();
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250102/us-east-1/bedrock/aws4_request, SignedHeaders={SIGNED}, Signature={signature}"
        );
        assert_eq!(verify(&req(&headers, BODY), &authorization), Ok(()));
        let tampered = String::from_utf8_lossy(BODY).replace("Hello", "Hellp");
        assert_eq!(
            verify(&req(&headers, tampered.as_bytes()), &authorization)
                .unwrap_err()
                .0,
            "InvalidSignatureException"
        );
        let other_key = authorization.replace(ACCESS_KEY_ID, "AKIDEXAMPLE");
        assert_eq!(
            verify(&req(&headers, BODY), &other_key).unwrap_err().0,
            "UnrecognizedClientException"
        );
        let unsigned_host = authorization.replace(SIGNED, "content-type;x-amz-date");
        assert_eq!(
            verify(&req(&headers, BODY), &unsigned_host).unwrap_err().0,
            "IncompleteSignatureException"
        );
    }
}
