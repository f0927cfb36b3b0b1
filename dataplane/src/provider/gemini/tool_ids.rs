//! Tool-call ids across the Gemini boundary, and where thought signatures travel.
//!
//! Gemini's thinking models sign the parts they produce (`thoughtSignature`, the first function
//! call of a turn above all) and want the same signature back on the same part when the
//! conversation continues; Gemini 3 refuses function-call history without it. An OpenAI client
//! keeps nothing but the tool call's `id`, and it sends that back verbatim (it must, to pair its
//! tool results), so the signature rides in the id: `<id>__ts__<signature, base64url>`. That keeps
//! the gateway stateless (any replica, any restart) and the id within `[A-Za-z0-9_-]`, which the
//! other providers' id rules accept. The cost is a long id.
//!
//! `<id>` is Gemini's own `functionCall.id` when it sent one (passed back as
//! `functionCall.id`/`functionResponse.id`), else an invented `call_<24 alphanumerics>`, which is
//! never sent upstream: Gemini pairs calls and results by position and name.
//!
//! Signatures on text parts are not kept: Google enforces only those of function calls.

use crate::provider::output::tool_call_id;

/// Separates the id from the signature it carries.
const SIGNATURE_MARK: &str = "__ts__";

/// Google's documented stand-in for a signature the gateway does not have (history written by
/// another model, or by a client that rewrote ids): Gemini then skips the check.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// The OpenAI id of a call Gemini made: its own id (or a fresh one) and its signature.
pub fn encode(gemini_id: Option<&str>, signature: Option<&str>) -> String {
    let mut id = match gemini_id {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => tool_call_id(),
    };
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        id.reserve(SIGNATURE_MARK.len() + signature.len());
        id.push_str(SIGNATURE_MARK);
        // base64 → base64url, without padding: the same bytes, in id-safe characters.
        id.extend(signature.chars().filter(|&c| c != '=').map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        }));
    }
    id
}

/// What an OpenAI tool call id means to Gemini.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The id to send as `functionCall.id` / `functionResponse.id` (Gemini's own ids only).
    pub gemini_id: Option<&'a str>,
    /// The thought signature to put back on the call's part.
    pub signature: Option<String>,
}

pub fn decode(id: &str) -> Decoded<'_> {
    let (base, signature) = match id.split_once(SIGNATURE_MARK) {
        Some((base, signature)) if !signature.is_empty() => {
            (base, Some(standard_base64(signature)))
        }
        _ => (id, None),
    };
    Decoded {
        gemini_id: (!base.is_empty() && !is_invented(base)).then_some(base),
        signature,
    }
}

/// base64url without padding → standard base64, padded (how Gemini writes bytes in JSON).
fn standard_base64(url_safe: &str) -> String {
    let mut out: String = url_safe
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// The shape of ids this gateway invents (and OpenAI issues): meaningless to Gemini.
fn is_invented(id: &str) -> bool {
    id.strip_prefix("call_")
        .is_some_and(|rest| rest.len() == 24 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_survives_the_round_trip_through_the_client() {
        for signature in ["CiQB0e2Kb6n2+/x=", "CiQB0e2K", "a+b/cd==", "abc="] {
            let id = encode(None, Some(signature));
            assert!(id.starts_with("call_"), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{id}"
            );
            assert_eq!(
                decode(&id),
                Decoded {
                    gemini_id: None,
                    signature: Some(signature.to_owned())
                }
            );
        }
    }

    #[test]
    fn geminis_own_ids_pass_through_and_invented_ones_stay_home() {
        let id = encode(Some("fc-7"), Some("c2ln"));
        assert_eq!(id, "fc-7__ts__c2ln");
        assert_eq!(
            decode(&id),
            Decoded {
                gemini_id: Some("fc-7"),
                signature: Some("c2ln".to_owned())
            }
        );
        assert_eq!(encode(Some("fc-7"), None), "fc-7");
        let invented = encode(None, None);
        assert_eq!(
            decode(&invented),
            Decoded {
                gemini_id: None,
                signature: None
            }
        );
        // Ids from other providers' history are Gemini-safe and kept.
        assert_eq!(decode("toolu_01A").gemini_id, Some("toolu_01A"));
    }
}
