//! What the Messages and Responses doors share when they write their request as a chat
//! completion: the note of the first thing left out, and the client's function tools.

use serde_json::{Map, Value};

use crate::request::Untranslatable;

/// The first thing a translation had to leave out.
#[derive(Default)]
pub struct Noted(pub Option<Untranslatable>);

impl Noted {
    pub fn note(&mut self, message: String, param: String) {
        self.0.get_or_insert(Untranslatable { message, param });
    }
}

/// The request's `tools` that `function` can write as chat functions, inserted as the chat's
/// `tools`; each other tool (one only the door's own providers run, e.g. a server-side search)
/// is noted as running only on `runs_on`.
pub fn function_tools(
    request: &Map<String, Value>,
    chat: &mut Map<String, Value>,
    noted: &mut Noted,
    function: fn(&Value) -> Option<Value>,
    runs_on: &str,
) {
    let Some(tools) = request.get("tools").and_then(Value::as_array) else {
        return;
    };
    let mut functions = Vec::new();
    for (index, each) in tools.iter().enumerate() {
        match function(each) {
            Some(written) => functions.push(written),
            None => noted.note(
                format!(
                    "the {} tool runs only on {runs_on}",
                    each["type"].as_str().unwrap_or_default()
                ),
                format!("tools[{index}]"),
            ),
        }
    }
    if !functions.is_empty() {
        chat.insert("tools".into(), Value::Array(functions));
    }
}
