//! Mistral's request side. Its request schemas are closed (an unknown member is a 422), so the
//! body is rebuilt from an allow-list: OpenAI names Mistral spells differently are renamed
//! (`max_completion_tokens` → `max_tokens`, `seed` → `random_seed`), the advisory members and
//! `stream_options` (Mistral reports usage unasked) are left out, any other member is a 400
//! naming it, and the messages are rewritten with only the members Mistral's message schemas
//! take. Tool-call ids must be exactly nine ASCII letters and digits at Mistral, so other ids are
//! mapped to such ids, deterministically.

use std::borrow::Cow;

use bytes::Bytes;
use modelgate_crds::compiled::CompiledDeployment;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    super::{
        CallError, Endpoint, Target,
        chat::{ADVISORY, EmbeddingsRequest, Message, Role},
        openai_message::{self, ContentOut, ToolCallOut},
    },
    base_url,
    body::BodyWriter,
    no_endpoint,
};
use crate::request::EXTENSION_FIELD;

pub const NAME: &str = "mistral";
const BASE_URL: &str = "https://api.mistral.ai/v1";

/// Members Mistral takes as OpenAI sends them, and Mistral's own members a client may send on
/// purpose.
const PASSED: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "reasoning_effort",
    "random_seed",
    "safe_prompt",
    "prompt_mode",
    "guardrails",
];

pub fn url(deployment: &CompiledDeployment, endpoint: Endpoint) -> Result<String, CallError> {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Embeddings => Ok(format!(
            "{}{}",
            base_url(deployment.base_url.as_deref(), BASE_URL),
            endpoint.openai_path()
        )),
        Endpoint::ImageGenerations => Err(no_endpoint(NAME, endpoint)),
    }
}

pub fn body(target: &Target<'_>) -> Result<Bytes, CallError> {
    match target.endpoint {
        Endpoint::ChatCompletions => chat_body(target),
        Endpoint::Embeddings => embeddings_body(target),
        Endpoint::ImageGenerations => Err(no_endpoint(NAME, target.endpoint)),
    }
}

fn chat_body(target: &Target<'_>) -> Result<Bytes, CallError> {
    let request = target.request;
    let given = |key| request.raw(key).is_some_and(|raw| raw != b"null");
    let max_completion_tokens = given("max_completion_tokens");
    let mut body = BodyWriter::with_capacity(request.body().len() + 64);
    for (key, raw) in request.members() {
        // `null` means absent at OpenAI; Mistral refuses it where its schema has a default.
        if raw == b"null" {
            continue;
        }
        match key {
            "model" | EXTENSION_FIELD | "stream_options" => {}
            "messages" => write_messages(&mut body, raw)?,
            "max_completion_tokens" => body.raw("max_tokens", raw),
            // OpenAI's newer name wins when a client sends both.
            "max_tokens" if max_completion_tokens => {}
            "seed" => body.raw("random_seed", raw),
            // Asks for nothing Mistral would have to do.
            "logprobs" if raw == b"false" => {}
            key if PASSED.contains(&key) => body.raw(key, raw),
            key if ADVISORY.contains(&key) => {}
            key => {
                return Err(CallError::unsupported(format!(
                    "`{key}` is not supported by provider {NAME}"
                ))
                .with_param(key));
            }
        }
    }
    body.value("model", &target.deployment.model);
    Ok(body.finish())
}

/// `POST /v1/embeddings`: OpenAI's body with `dimensions` renamed `output_dimension`.
fn embeddings_body(target: &Target<'_>) -> Result<Bytes, CallError> {
    #[derive(Serialize)]
    struct Embed<'a> {
        model: &'a str,
        input: Vec<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encoding_format: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_dimension: Option<u32>,
    }
    let request = EmbeddingsRequest::parse(target, NAME)?;
    let embed = Embed {
        model: &target.deployment.model,
        input: request.texts(NAME)?,
        encoding_format: request.encoding_format.as_deref(),
        output_dimension: request.dimensions,
    };
    // Serializing strings and numbers into memory cannot fail.
    Ok(Bytes::from(serde_json::to_vec(&embed).unwrap_or_default()))
}

fn write_messages(body: &mut BodyWriter, raw: &[u8]) -> Result<(), CallError> {
    let messages: Vec<Message> = serde_json::from_slice(raw).map_err(|e| {
        CallError::invalid_request(format!("`messages`: {e}")).with_param("messages")
    })?;
    let out = messages
        .iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()?;
    body.value("messages", &out);
    Ok(())
}

/// One message with only the members Mistral's message schemas take (`name` on user and system
/// messages and OpenAI's `refusal`/`annotations`/`audio` echoes have no place there).
fn message(message: &Message) -> Result<MessageOut<'_>, CallError> {
    Ok(match message.role {
        Role::System | Role::Developer => MessageOut::System {
            content: openai_message::content(message.content.as_ref(), NAME)?,
        },
        Role::User => MessageOut::User {
            content: openai_message::content(message.content.as_ref(), NAME)?,
        },
        Role::Assistant => MessageOut::Assistant {
            content: match &message.content {
                None => None,
                content => Some(openai_message::content(content.as_ref(), NAME)?),
            },
            tool_calls: message
                .tool_calls()
                .iter()
                .map(|call| openai_message::tool_call(call, tool_call_id(&call.id)))
                .collect::<Result<_, _>>()?,
            prefix: message
                .rest
                .get("prefix")
                .and_then(serde_json::Value::as_bool),
        },
        Role::Tool => MessageOut::Tool {
            content: openai_message::content(message.content.as_ref(), NAME)?,
            tool_call_id: message.tool_call_id.as_deref().map(tool_call_id),
            name: message.name.as_deref(),
        },
        Role::Function => {
            return Err(CallError::unsupported(format!(
                "messages with role `function` are not supported by provider {NAME}; use `tool`"
            ))
            .with_param("messages"));
        }
    })
}

/// The id Mistral accepts for a client's tool-call id: Mistral's own ids (nine ASCII letters and
/// digits) unchanged, any other as nine base-62 digits of its SHA-256. The same id always maps to
/// the same one, so a call and its result still pair up with no state kept.
pub fn tool_call_id(id: &str) -> Cow<'_, str> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Cow::Borrowed(id);
    }
    let digest = Sha256::digest(id.as_bytes());
    let mut bits = u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    // 62^9 < 2^64: nine digits of one u64 are all drawn from the digest.
    let mut out = String::with_capacity(9);
    for _ in 0..9 {
        out.push(char::from(ALPHABET[(bits % 62) as usize]));
        bits /= 62;
    }
    Cow::Owned(out)
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum MessageOut<'a> {
    System {
        content: ContentOut<'a>,
    },
    User {
        content: ContentOut<'a>,
    },
    Assistant {
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ContentOut<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCallOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        prefix: Option<bool>,
    },
    Tool {
        content: ContentOut<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_call_id: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_ids_become_nine_alphanumerics_deterministically() {
        assert_eq!(tool_call_id("D681PevKs"), "D681PevKs", "Mistral's own ids");
        let mapped = tool_call_id("call_0fypS1hVXr6hTZqgSv7Hk2Pz");
        assert_eq!(mapped.len(), 9);
        assert!(
            mapped.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{mapped}"
        );
        assert_eq!(mapped, tool_call_id("call_0fypS1hVXr6hTZqgSv7Hk2Pz"));
        assert_ne!(mapped, tool_call_id("call_0fypS1hVXr6hTZqgSv7Hk2Pa"));
        for almost in ["D681PevK", "D681PevKs1", "D681Pev_s", "D681Pevké"] {
            let mapped = tool_call_id(almost);
            assert_ne!(mapped, almost);
            assert!(mapped.len() == 9 && mapped.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
}
