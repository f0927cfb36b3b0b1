//! OpenAI's message list as Anthropic's conversation: every `system`/`developer` message hoisted,
//! in order, into the top-level `system` blocks; `user` and `assistant` turns alternating, with
//! consecutive same-role messages merged; each `tool` message a `tool_result` block in the user
//! turn that follows the calls, tool results before any text there. A part's `cache_control`
//! (prompt caching) stays on the text or image block made from it.

use std::{borrow::Cow, collections::HashSet};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::provider::{
    CallError,
    chat::{Content, Image, Message, PartRef, Role},
};

/// A content block of a request.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block<'a> {
    Text {
        text: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: ImageSource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent<'a>>,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum ToolResultContent<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Speaker {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
pub(super) struct Turn<'a> {
    pub role: Speaker,
    pub content: Vec<Block<'a>>,
}

/// The conversation, ready for the body.
#[derive(Debug)]
pub(super) struct Conversation<'a> {
    /// Text blocks only.
    pub system: Vec<Block<'a>>,
    pub turns: Vec<Turn<'a>>,
}

/// The image types Anthropic reads.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Builds the conversation, or a 400 for what Anthropic cannot carry or would refuse.
pub(super) fn conversation<'a>(
    messages: &'a [Message],
    provider: &str,
) -> Result<Conversation<'a>, CallError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'a>> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |mut e: CallError| {
            e.message = format!("messages[{i}]: {}", e.message);
            e
        };
        match message.role {
            Role::System | Role::Developer => {
                for (part, cache) in parts(message, provider).map_err(at)? {
                    match part {
                        PartRef::Text(text) => push_text(&mut system, text, cache),
                        PartRef::Image(_) => {
                            return Err(at(CallError::unsupported(format!(
                                "images in system messages are not supported by provider {provider}"
                            ))
                            .with_param("messages")));
                        }
                    }
                }
            }
            Role::User => {
                let blocks = user_blocks(message, provider).map_err(at)?;
                push(&mut turns, Speaker::User, blocks);
            }
            Role::Assistant => {
                let blocks = assistant_blocks(message, provider).map_err(at)?;
                push(&mut turns, Speaker::Assistant, blocks);
            }
            Role::Tool => {
                let result = tool_result(message, provider).map_err(at)?;
                push_tool_result(&mut turns, result);
            }
            Role::Function => {
                return Err(at(CallError::unsupported(format!(
                    "the legacy `function` role is not supported by provider {provider}; \
                     send `tool` messages"
                ))
                .with_param("messages")));
            }
        }
    }
    trim_prefill(&mut turns);
    if turns.is_empty() {
        return Err(CallError::invalid_request(
            "at least one user or assistant message with content is required",
        )
        .with_param("messages"));
    }
    check_tool_pairs(&turns)?;
    Ok(Conversation { system, turns })
}

/// A part, read, and its prompt-caching marker.
type CachedPart<'a> = (PartRef<'a>, Option<&'a Value>);

/// The parts of a message, borrowed (a string is one text part, without a cache marker).
fn parts<'a>(message: &'a Message, provider: &str) -> Result<Vec<CachedPart<'a>>, CallError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![(PartRef::Text(text), None)]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| Ok((p.read(provider)?, p.cache_control.as_ref())))
            .collect(),
    }
}

/// Empty text blocks are refused by Anthropic, so they are left out.
fn push_text<'a>(blocks: &mut Vec<Block<'a>>, text: &'a str, cache_control: Option<&'a Value>) {
    if !text.is_empty() {
        blocks.push(Block::Text {
            text: Cow::Borrowed(text),
            cache_control,
        });
    }
}

fn user_blocks<'a>(message: &'a Message, provider: &str) -> Result<Vec<Block<'a>>, CallError> {
    let mut blocks = Vec::new();
    for (part, cache) in parts(message, provider)? {
        match part {
            PartRef::Text(text) => push_text(&mut blocks, text, cache),
            PartRef::Image(image) => blocks.push(image_block(image, cache, provider)?),
        }
    }
    Ok(blocks)
}

/// An image by URL (Anthropic fetches it) or inline base64 of a type it reads.
fn image_block<'a>(
    image: Image<'a>,
    cache_control: Option<&'a Value>,
    provider: &str,
) -> Result<Block<'a>, CallError> {
    let source = match image {
        Image::Base64 { media_type, data } if IMAGE_TYPES.contains(&media_type) => {
            ImageSource::Base64 { media_type, data }
        }
        Image::Base64 { media_type, .. } => {
            return Err(CallError::unsupported(format!(
                "images of type {media_type} are not supported by provider {provider} \
                 (jpeg, png, gif and webp are)"
            ))
            .with_param("messages"));
        }
        Image::Url(url) if url.starts_with("gs://") => {
            return Err(CallError::unsupported(format!(
                "gs:// image URLs are not supported by provider {provider}"
            ))
            .with_param("messages"));
        }
        Image::Url(url) => ImageSource::Url { url },
    };
    Ok(Block::Image {
        source,
        cache_control,
    })
}

/// Text first, then one `tool_use` block per call, with the arguments as a JSON object.
fn assistant_blocks<'a>(message: &'a Message, provider: &str) -> Result<Vec<Block<'a>>, CallError> {
    let mut blocks = Vec::new();
    for (part, cache) in parts(message, provider)? {
        match part {
            PartRef::Text(text) => push_text(&mut blocks, text, cache),
            PartRef::Image(_) => {
                return Err(CallError::unsupported(format!(
                    "images in assistant messages are not supported by provider {provider}"
                ))
                .with_param("messages"));
            }
        }
    }
    for call in message.tool_calls() {
        blocks.push(Block::ToolUse {
            id: tool_use_id(&call.id),
            name: &call.function.name,
            input: call.function.arguments_object()?,
        });
    }
    Ok(blocks)
}

fn tool_result<'a>(message: &'a Message, provider: &str) -> Result<Block<'a>, CallError> {
    let Some(id) = message.tool_call_id.as_deref() else {
        return Err(
            CallError::invalid_request("a tool message needs a `tool_call_id`")
                .with_param("messages"),
        );
    };
    let content = match &message.content {
        None => None,
        Some(Content::Text(text)) => (!text.is_empty()).then_some(ToolResultContent::Text(text)),
        Some(Content::Parts(_)) => {
            let blocks = user_blocks(message, provider)?;
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    Ok(Block::ToolResult {
        tool_use_id: tool_use_id(id),
        content,
    })
}

/// Appends to the last turn when it has the same role (Anthropic wants roles to alternate).
fn push<'a>(turns: &mut Vec<Turn<'a>>, role: Speaker, blocks: Vec<Block<'a>>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Turn {
            role,
            content: blocks,
        }),
    }
}

/// A tool result joins the user turn after the calls, after the results already there and
/// before any text (Anthropic reads tool results first).
fn push_tool_result<'a>(turns: &mut Vec<Turn<'a>>, result: Block<'a>) {
    match turns.last_mut() {
        Some(last) if last.role == Speaker::User => {
            let at = last
                .content
                .iter()
                .take_while(|b| matches!(b, Block::ToolResult { .. }))
                .count();
            last.content.insert(at, result);
        }
        _ => turns.push(Turn {
            role: Speaker::User,
            content: vec![result],
        }),
    }
}

/// Anthropic refuses a final assistant turn (a prefill) that ends in whitespace.
fn trim_prefill(turns: &mut Vec<Turn<'_>>) {
    let Some(last) = turns.last_mut() else { return };
    if last.role != Speaker::Assistant {
        return;
    }
    if let Some(Block::Text { text, .. }) = last.content.last_mut() {
        let trimmed = text.trim_end();
        if trimmed.len() != text.len() {
            *text = Cow::Owned(trimmed.to_owned());
        }
        if text.is_empty() {
            last.content.pop();
        }
    }
    if last.content.is_empty() {
        turns.pop();
    }
}

/// Every tool call needs its result in the very next user turn, and every result a call in the
/// turn right before: Anthropic refuses anything else with a message naming its own block
/// indexes, so the gateway says it in OpenAI's terms first. Each turn's ids are gathered once
/// into a set, so a long history of parallel calls costs linear time.
fn check_tool_pairs(turns: &[Turn<'_>]) -> Result<(), CallError> {
    for (k, turn) in turns.iter().enumerate() {
        let (missing, problem) = match turn.role {
            Speaker::Assistant => (
                unmatched(ids(turn, Kind::Call), turns.get(k + 1), Kind::Result),
                "has no tool message answering it right after the assistant message that made it",
            ),
            Speaker::User => (
                unmatched(
                    ids(turn, Kind::Result),
                    k.checked_sub(1).and_then(|p| turns.get(p)),
                    Kind::Call,
                ),
                "is answered by a tool message, but the assistant message right before it did not make that call",
            ),
        };
        if let Some(id) = missing {
            return Err(
                CallError::invalid_request(format!("tool call `{id}` {problem}"))
                    .with_param("messages"),
            );
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Call,
    Result,
}

/// The tool-call ids of a turn's calls or of its results.
fn ids<'t>(turn: &'t Turn<'_>, kind: Kind) -> impl Iterator<Item = &'t str> {
    turn.content.iter().filter_map(move |b| match (b, kind) {
        (Block::ToolUse { id, .. }, Kind::Call) => Some(id.as_ref()),
        (Block::ToolResult { tool_use_id, .. }, Kind::Result) => Some(tool_use_id.as_ref()),
        _ => None,
    })
}

/// The first of `own` that `other` (a neighbouring turn's ids of `kind`) lacks.
fn unmatched<'t>(
    mut own: impl Iterator<Item = &'t str>,
    other: Option<&Turn<'_>>,
    kind: Kind,
) -> Option<&'t str> {
    let first = own.next()?;
    let other: HashSet<&str> = other.map(|t| ids(t, kind).collect()).unwrap_or_default();
    std::iter::once(first)
        .chain(own)
        .find(|id| !other.contains(id))
}

/// Anthropic takes tool-call ids matching `^[a-zA-Z0-9_-]+$` only. Any other id gets its other
/// characters replaced and a hash of the original appended, the same way every time, so a call
/// and its result still match and two ids differing only in replaced characters stay apart.
pub(super) fn tool_use_id(id: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(allowed) {
        return Cow::Borrowed(id);
    }
    let mut sanitised: String = id
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    sanitised.push('_');
    let digest = Sha256::digest(id.as_bytes());
    sanitised.push_str(&hex::encode(&digest[..6]));
    Cow::Owned(sanitised)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn messages(value: Value) -> Vec<Message> {
        serde_json::from_value(value).unwrap()
    }

    fn turns_json(value: Value) -> Value {
        let messages = messages(value);
        let conversation = conversation(&messages, "anthropic").unwrap();
        json!({"system": conversation.system, "turns": conversation.turns})
    }

    fn refusal(value: Value) -> CallError {
        conversation(&messages(value), "anthropic").unwrap_err()
    }

    #[test]
    fn ids_outside_anthropics_pattern_are_rewritten_the_same_way_every_time() {
        assert_eq!(tool_use_id("toolu_01A-b"), "toolu_01A-b");
        let kimi = tool_use_id("functions.WebSearch:3");
        assert!(kimi.starts_with("functions_WebSearch_3_"), "{kimi}");
        assert_eq!(kimi, tool_use_id("functions.WebSearch:3"));
        assert_ne!(kimi, tool_use_id("functions:WebSearch.3"));
        assert!(
            tool_use_id("")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        );
        assert!(!tool_use_id("").is_empty());
    }

    #[test]
    fn tool_results_merge_into_one_user_turn_before_its_text() {
        let turns = turns_json(json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "a.1", "type": "function", "function": {"name": "w", "arguments": ""}},
                {"id": "b", "type": "function", "function": {"name": "w", "arguments": "{\"c\":1}"}}
            ]},
            {"role": "tool", "tool_call_id": "a.1", "content": "sun"},
            {"role": "user", "content": "and then?"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rain"}]}
        ]))["turns"]
            .clone();
        let sanitised = tool_use_id("a.1").into_owned();
        assert_eq!(
            turns,
            json!([
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": sanitised, "name": "w", "input": {}},
                    {"type": "tool_use", "id": "b", "name": "w", "input": {"c": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": sanitised, "content": "sun"},
                    {"type": "tool_result", "tool_use_id": "b",
                     "content": [{"type": "text", "text": "rain"}]},
                    {"type": "text", "text": "and then?"}
                ]}
            ])
        );
    }

    #[test]
    fn system_and_developer_messages_are_hoisted_in_order_and_same_roles_merge() {
        let got = turns_json(json!([
            {"role": "system", "content": "one"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]},
            {"role": "user", "content": ""},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "Sure:  \n"}
        ]));
        assert_eq!(
            got["system"],
            json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}])
        );
        assert_eq!(
            got["turns"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Sure:"}]}
            ])
        );
    }

    #[test]
    fn unpaired_tool_calls_and_results_are_a_400_naming_the_call() {
        let unanswered = refusal(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "user", "content": "never mind"}
        ]));
        assert!(
            unanswered.message.contains("`c1`"),
            "{}",
            unanswered.message
        );
        assert_eq!(unanswered.param.as_deref(), Some("messages"));
        let stray = refusal(json!([
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "c9", "content": "x"}
        ]));
        assert!(stray.message.contains("`c9`"), "{}", stray.message);
    }

    #[test]
    fn what_anthropic_cannot_take_is_a_400_naming_the_message() {
        let tiff = refusal(json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]));
        assert!(
            tiff.message.starts_with("messages[0]: "),
            "{}",
            tiff.message
        );
        assert!(tiff.message.contains("image/tiff"), "{}", tiff.message);
        let arguments = refusal(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "[1]"}}]}
        ]));
        assert!(
            arguments.message.starts_with("messages[1]: "),
            "{}",
            arguments.message
        );
        let empty = refusal(json!([{"role": "system", "content": "only instructions"}]));
        assert_eq!(empty.param.as_deref(), Some("messages"));
    }

    #[test]
    fn cache_markers_stay_on_their_text_and_image_blocks() {
        let cache = json!({"type": "ephemeral"});
        let got = turns_json(json!([
            {"role": "system", "content": [{"type": "text", "text": "rules", "cache_control": cache}]},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}, "cache_control": cache},
                {"type": "text", "text": "long document", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "question"}
            ]}
        ]));
        assert_eq!(
            got["system"],
            json!([{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(
            got["turns"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"},
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "long document", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "question"}
            ])
        );
    }

    #[test]
    fn pairing_many_parallel_calls_takes_linear_time() {
        // 100 000 parallel calls: comparing each id with every result would take ten billion
        // string comparisons (minutes, even optimised); a set of the results takes a fraction
        // of a second in a debug build. The bound leaves a busy machine a wide margin.
        const CALLS: usize = 100_000;
        let ids: Vec<String> = (0..CALLS).map(|n| format!("toolu_{n:08}")).collect();
        let turns = vec![
            Turn {
                role: Speaker::User,
                content: vec![Block::Text {
                    text: Cow::Borrowed("go"),
                    cache_control: None,
                }],
            },
            Turn {
                role: Speaker::Assistant,
                content: ids
                    .iter()
                    .map(|id| Block::ToolUse {
                        id: Cow::Borrowed(id),
                        name: "w",
                        input: json!({}),
                    })
                    .collect(),
            },
            Turn {
                role: Speaker::User,
                content: ids
                    .iter()
                    .rev()
                    .map(|id| Block::ToolResult {
                        tool_use_id: Cow::Borrowed(id),
                        content: None,
                    })
                    .collect(),
            },
        ];
        let started = tokio::time::Instant::now();
        check_tool_pairs(&turns).unwrap();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    }
}
