//! The pieces of an OpenAI-shaped request message that providers with OpenAI-like message
//! formats (Cohere v2, Mistral) are written with: text or parts (text and `image_url`), and
//! assistant tool calls whose arguments must be a JSON object.

use std::borrow::Cow;

use serde::Serialize;

use super::{
    CallError,
    chat::{Content, Part, PartRef, ToolCall},
};

/// A message's content: a string, or parts.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ContentOut<'a> {
    Text(&'a str),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrlOut<'a> },
}

#[derive(Serialize)]
pub struct ImageUrlOut<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
pub struct ToolCallOut<'a> {
    pub id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCallOut<'a>,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The content as the provider takes it (an absent one is empty text).
pub fn content<'a>(
    content: Option<&'a Content>,
    provider: &str,
) -> Result<ContentOut<'a>, CallError> {
    match content {
        None => Ok(ContentOut::Text("")),
        Some(Content::Text(text)) => Ok(ContentOut::Text(text)),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| part(p, provider))
            .collect::<Result<_, _>>()
            .map(ContentOut::Parts),
    }
}

fn part<'a>(part: &'a Part, provider: &str) -> Result<PartOut<'a>, CallError> {
    Ok(match (part.read(provider)?, &part.image_url) {
        (PartRef::Text(text), _) => PartOut::Text { text },
        (PartRef::Image(_), Some(image)) => PartOut::ImageUrl {
            image_url: ImageUrlOut {
                url: &image.url,
                detail: image.detail.as_deref(),
            },
        },
        (PartRef::Image(_), None) => {
            return Err(
                CallError::invalid_request("an image_url part needs its `image_url`")
                    .with_param("messages"),
            );
        }
    })
}

/// An assistant's tool call with its id as the provider takes it. The arguments go on as the
/// client wrote them (`""` as `{}`), once they are known to be a JSON object.
pub fn tool_call<'a>(call: &'a ToolCall, id: Cow<'a, str>) -> Result<ToolCallOut<'a>, CallError> {
    let arguments = if call.function.arguments.trim().is_empty() {
        "{}"
    } else {
        call.function.arguments_object()?;
        &call.function.arguments
    };
    Ok(ToolCallOut {
        id,
        kind: "function",
        function: FunctionCallOut {
            name: &call.function.name,
            arguments,
        },
    })
}
