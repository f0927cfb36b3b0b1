//! OpenAI's JSON mode (`response_format` `json_object` / `json_schema`) through a forced tool.
//!
//! Anthropic's native structured outputs (`output_config.format`) are served by newer models only
//! and refuse loose schemas (an object needs its `properties` and `additionalProperties: false`),
//! so OpenAI's schemaless JSON mode cannot be said that way. The forced tool works on every Claude
//! model (`edge-cases.md` §11, what LiteLLM does): the request carries one tool, `json_response`,
//! whose input schema is the client's schema (any object for `json_object`), and `tool_choice`
//! forces a call of it. The call's input is the answer: it becomes the message's `content` (or
//! its content deltas, streamed) with `finish_reason: stop`, and never shows as a tool call.
//!
//! The tool is the whole request's tool set, so JSON mode together with the client's own tools is
//! refused (Anthropic would be free to call either). `strict` is not carried: Anthropic's strict
//! tools have the same model and schema limits as structured outputs.

use serde_json::{Value, json};

use crate::provider::{
    CallError, Target,
    chat::{ChatRequest, OutputFormat, ResponseFormat},
};

/// The name of the tool whose input is the answer.
pub(super) const TOOL: &str = "json_response";

/// The forced tool for a JSON-mode request: its description and input schema, or `None` for text.
pub(super) fn tool(
    chat: &ChatRequest,
    provider: &str,
) -> Result<Option<(String, Value)>, CallError> {
    let (description, mut schema) = match chat.output_format()? {
        OutputFormat::Text => return Ok(None),
        OutputFormat::JsonObject => (None, json!({"type": "object"})),
        OutputFormat::JsonSchema(format) => (format.description.clone(), format.schema()),
    };
    if !chat.tools().is_empty() {
        return Err(CallError::unsupported(format!(
            "`response_format` together with `tools` is not supported by provider {provider}: \
             JSON output is asked for with a tool of its own"
        ))
        .with_param("response_format"));
    }
    // A tool's input is an object: a schema without a type is read as one, any other type
    // cannot be carried.
    match &mut schema {
        Value::Object(map) => match map.entry("type").or_insert_with(|| json!("object")) {
            Value::String(kind) if kind == "object" => {}
            _ => return Err(not_an_object(provider)),
        },
        _ => return Err(not_an_object(provider)),
    }
    let description = description.unwrap_or_else(|| {
        "Give the answer as this tool's input: JSON that matches its schema.".to_owned()
    });
    Ok(Some((description, schema)))
}

fn not_an_object(provider: &str) -> CallError {
    CallError::unsupported(format!(
        "a `json_schema` whose root is not an object is not supported by provider {provider}"
    ))
    .with_param("response_format")
}

/// Whether the client asked for JSON: the answer's `json_response` call is then its content.
/// Read from the request alone (cheaply, one member), as the answer is translated.
pub(in crate::provider) fn requested(target: &Target<'_>) -> bool {
    matches!(
        target.request.field::<ResponseFormat>("response_format"),
        Ok(Some(format)) if matches!(format.kind.as_str(), "json_object" | "json_schema")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool_of(request: Value) -> Result<Option<(String, Value)>, CallError> {
        let chat: ChatRequest = serde_json::from_value(request).unwrap();
        tool(&chat, "anthropic")
    }

    #[test]
    fn json_mode_is_a_tool_with_the_clients_schema_or_any_object() {
        let hello = json!([{"role": "user", "content": "hi"}]);
        assert!(tool_of(json!({"messages": hello})).unwrap().is_none());
        let (_, schema) =
            tool_of(json!({"messages": hello, "response_format": {"type": "json_object"}}))
                .unwrap()
                .unwrap();
        assert_eq!(schema, json!({"type": "object"}));
        let person = json!({"properties": {"name": {"type": "string"}}});
        let (description, schema) = tool_of(json!({"messages": hello, "response_format":
            {"type": "json_schema", "json_schema": {"name": "p", "description": "A person.", "schema": person}}}))
        .unwrap()
        .unwrap();
        assert_eq!(description, "A person.");
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"], person["properties"]);
    }

    #[test]
    fn json_mode_with_the_clients_tools_or_a_non_object_schema_is_refused() {
        let hello = json!([{"role": "user", "content": "hi"}]);
        let tools = json!([{"type": "function", "function": {"name": "w"}}]);
        let both = tool_of(json!({"messages": hello, "tools": tools,
                                  "response_format": {"type": "json_object"}}))
        .unwrap_err();
        assert_eq!(both.param.as_deref(), Some("response_format"));
        assert!(both.message.contains("`tools`"), "{}", both.message);
        let array = tool_of(
            json!({"messages": hello, "response_format": {"type": "json_schema",
            "json_schema": {"name": "l", "schema": {"type": "array"}}}}),
        )
        .unwrap_err();
        assert_eq!(
            array.provider_code.as_deref(),
            Some(crate::provider::UNSUPPORTED)
        );
    }
}
