//! The finish reasons of an answer (`choices[].finish_reason`), for its span: read only when
//! traces are exported.

use memchr::memmem::Finder;
use serde::Deserialize;
use std::sync::LazyLock;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    finish_reason: Option<String>,
}

/// Adds the finish reasons of a complete answer or of one stream chunk (an OpenAI-shaped JSON
/// object) to `reasons`. A chunk that names none (`"finish_reason":null`, the common case) is not
/// parsed.
pub fn collect(json: &[u8], reasons: &mut Vec<String>) {
    static KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
    let named = KEY.find_iter(json).any(|at| {
        let rest = json[at + b"\"finish_reason\"".len()..].trim_ascii_start();
        let value = rest.strip_prefix(b":").unwrap_or(rest).trim_ascii_start();
        value.first() == Some(&b'"')
    });
    if !named {
        return;
    }
    if let Ok(answer) = serde_json::from_slice::<Answer>(json) {
        reasons.extend(answer.choices.into_iter().filter_map(|c| c.finish_reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_read_from_answers_and_chunks_that_name_them() {
        let mut reasons = Vec::new();
        collect(
            br#"{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}"#,
            &mut reasons,
        );
        assert!(reasons.is_empty());
        collect(
            br#"{"choices":[{"delta":{},"finish_reason": "stop"}]}"#,
            &mut reasons,
        );
        collect(
            br#"{"choices":[{"message":{},"finish_reason":"tool_calls"},{"finish_reason":"length"}]}"#,
            &mut reasons,
        );
        assert_eq!(reasons, ["stop", "tool_calls", "length"]);
    }
}
