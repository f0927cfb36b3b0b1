//! AWS Signature Version 4 for Bedrock requests, by the `aws-sigv4` crate (the signer the AWS
//! SDKs use). Its defaults are the ones Bedrock needs: the canonical URI is the wire path
//! percent-encoded a second time (`v1%3A0` on the wire is `v1%253A0` when signing; single
//! encoding fails for every model id holding `:`), the host comes from the URL, and a session
//! token is signed as `x-amz-security-token`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign as sign_request,
    },
    sign::v4,
};
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use modelgate_crds::compiled::CompiledAws;

use super::super::{CallError, CallErrorKind, transport};

/// Bedrock's signing name.
const SERVICE: &str = "bedrock";

/// Signs `request` (its final URL, headers and body) for `region` at `time`, adding
/// `x-amz-date`, `authorization` and, with temporary credentials, `x-amz-security-token`.
pub fn sign(
    request: &mut Request<Bytes>,
    aws: &CompiledAws,
    region: &str,
    time: SystemTime,
) -> Result<(), CallError> {
    let key = Key {
        access_key_id: aws.access_key_id.expose(),
        secret_access_key: aws.secret_access_key.expose(),
        session_token: aws.session_token.as_ref().map(|t| t.expose()),
    };
    sign_for(request, &key, region, SERVICE, time, false)
}

/// The parts of an AWS credential a signature needs.
struct Key<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: Option<&'a str>,
}

/// Signs for any service; `content_sha256` also signs an `x-amz-content-sha256` header (S3
/// style; Bedrock does not need it, the test vectors check both).
fn sign_for(
    request: &mut Request<Bytes>,
    key: &Key<'_>,
    region: &str,
    service: &str,
    time: SystemTime,
    content_sha256: bool,
) -> Result<(), CallError> {
    if request.uri().host().is_none() {
        // The signer needs the host it signs for (and would panic without one).
        return Err(unsignable("the upstream URL has no host"));
    }
    let identity: Identity = Credentials::new(
        key.access_key_id,
        key.secret_access_key,
        key.session_token.map(str::to_owned),
        None,
        "modelgate",
    )
    .into();
    let mut settings = SigningSettings::default();
    if content_sha256 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| unsignable(&e.to_string()))?
        .into();
    let instructions = {
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.uri().to_string(),
            headers,
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| unsignable(&e.to_string()))?;
        sign_request(signable, &params)
            .map_err(|e| unsignable(&e.to_string()))?
            .into_parts()
            .0
    };
    let (headers, _query) = instructions.into_parts();
    for header in headers {
        // Inserted by hand rather than by the crate's `apply_to_request_http1x`, which panics on
        // a value that is not a valid header (a session token could be one).
        // The signature is marked sensitive too: debug output has no use for it.
        let value = if header.sensitive() || header.name() == "authorization" {
            transport::secret_header(header.value())?
        } else {
            HeaderValue::from_str(header.value()).map_err(|_| unsignable("a bad header value"))?
        };
        let name = HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|_| unsignable("a bad header name"))?;
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

fn unsignable(why: &str) -> CallError {
    CallError::new(
        CallErrorKind::Connect,
        format!("bedrock: the request could not be signed: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// bedrock.md §7: AWS's public example key.
    const EXAMPLE: Key<'static> = Key {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: None,
    };
    const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":256}}"#;
    const SIGNATURE_A: &str = "0d8a95badeb87feb618659eac2541ac8060638d6fdd308658a7c1bdcdd03dbb4";
    /// What a single-encoded canonical URI would sign: must never come out.
    const SIGNATURE_SINGLE_ENCODED: &str =
        "7a27613a652881c324566dfca2c95b8e747c514538c399955b731cbf33692449";

    /// 2025-01-02T03:04:05Z.
    fn vector_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_787_045)
    }

    fn request(url: &str, body: &str) -> Request<Bytes> {
        Request::post(url)
            .header("content-type", "application/json")
            .body(Bytes::copy_from_slice(body.as_bytes()))
            .unwrap()
    }

    fn header<'a>(request: &'a Request<Bytes>, name: &str) -> &'a str {
        request.headers()[name].to_str().unwrap()
    }

    const URL_A: &str = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse";

    #[test]
    fn vector_a_double_encodes_the_canonical_uri() {
        let mut signed = request(URL_A, BODY);
        sign_for(
            &mut signed,
            &EXAMPLE,
            "us-east-1",
            "bedrock",
            vector_time(),
            false,
        )
        .unwrap();
        assert_eq!(
            header(&signed, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={SIGNATURE_A}"
            )
        );
        assert_eq!(header(&signed, "x-amz-date"), "20250102T030405Z");
        assert!(!header(&signed, "authorization").contains(SIGNATURE_SINGLE_ENCODED));
        assert!(signed.headers()["authorization"].is_sensitive());
        assert_eq!(
            signed.uri().path(),
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
            "the wire path stays single-encoded"
        );
    }

    #[test]
    fn vector_b_also_signs_the_payload_hash_header() {
        let mut signed = request(URL_A, BODY);
        sign_for(
            &mut signed,
            &EXAMPLE,
            "us-east-1",
            "bedrock",
            vector_time(),
            true,
        )
        .unwrap();
        assert_eq!(
            header(&signed, "x-amz-content-sha256"),
            "d8695502972bd4d482308b656a524b7a7efcebba591a06801fadba6b39700dd1"
        );
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=8e15b768d60cde7e2756661802f4111efb0dc69d77d0923c826fa663d9bf93be"
        );
    }

    #[test]
    fn vector_c_signs_a_session_token() {
        let key = Key {
            session_token: Some("fixture-session-token"),
            ..EXAMPLE
        };
        let mut signed = request(
            "https://bedrock-mantle.us-east-1.api.aws/openai/v1/responses",
            r#"{"model":"gpt-4o","input":"hello"}"#,
        );
        sign_for(
            &mut signed,
            &key,
            "us-east-1",
            "bedrock-mantle",
            vector_time(),
            true,
        )
        .unwrap();
        assert_eq!(
            header(&signed, "x-amz-security-token"),
            "fixture-session-token"
        );
        assert!(signed.headers()["x-amz-security-token"].is_sensitive());
        let authorization = header(&signed, "authorization");
        assert!(
            authorization.contains(
                "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
            ),
            "{authorization}"
        );
        assert!(
            authorization.ends_with(
                "Signature=dc20c8fbe516daf0ccae7e5b7a78fc2936870413a9f1af6e1b2d44b970ce411f"
            ),
            "{authorization}"
        );
    }

    #[test]
    fn signs_deployment_credentials_and_leaves_the_user_agent_out() {
        let aws: CompiledAws = serde_json::from_value(serde_json::json!({
            "accessKeyId": "AKIDEXAMPLE",
            "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        }))
        .unwrap();
        let mut signed = request(URL_A, BODY);
        signed
            .headers_mut()
            .insert("user-agent", HeaderValue::from_static("modelgate/test"));
        sign(&mut signed, &aws, "us-east-1", vector_time()).unwrap();
        // The user agent is not signed (proxies rewrite it), so vector A's signature holds.
        assert!(header(&signed, "authorization").ends_with(SIGNATURE_A));
    }

    #[test]
    fn a_url_without_a_host_is_an_error_not_a_panic() {
        let mut relative = request("/model/x/converse", BODY);
        let error = sign_for(
            &mut relative,
            &EXAMPLE,
            "us-east-1",
            "bedrock",
            vector_time(),
            false,
        )
        .unwrap_err();
        assert_eq!(error.kind, CallErrorKind::Connect);
    }
}
