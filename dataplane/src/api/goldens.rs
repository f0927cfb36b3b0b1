//! The inbound translations against golden files, both directions: each fixture under
//! `tests/fixtures/inbound/<api>/<case>.json` holds a client `request`, a chat `completion` and
//! chat stream `chunks`; its `golden` member holds what the door makes of them: the chat
//! translation (and what it had to leave out), the answer in the client's API, and the stream's
//! events. The provider legs (chat to each provider and back) are the provider conformance
//! suite's. `UPDATE_GOLDEN=1 cargo test -p modelgate-dataplane --lib goldens` rewrites them;
//! review the diff.

use std::path::Path;

use serde_json::{Value, json};

use super::{
    door::{Door, StreamTranslation},
    messages::Messages,
    responses::Responses,
};

fn translate_request(api: &str, request: &Value) -> Value {
    let translated = match api {
        "messages" => super::messages::translate(request),
        _ => super::responses::translate(request),
    };
    match translated {
        Ok((chat, noted)) => json!({
            "chat": chat,
            "untranslatable": noted.map(|n| json!({"message": n.message, "param": n.param})),
        }),
        Err(error) => {
            json!({"refused": {"code": error.code, "message": error.message, "param": error.param}})
        }
    }
}

fn sse(chunks: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        let data = match chunk {
            Value::String(done) => done.clone(),
            other => other.to_string(),
        };
        out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
    }
    out
}

fn events(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    Value::Array(
        text.split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                let name = event.lines().find_map(|l| l.strip_prefix("event: "));
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .and_then(|d| serde_json::from_str::<Value>(d).ok());
                json!({"event": name, "data": data})
            })
            .collect(),
    )
}

fn golden<D: Door>(api: &str, case: &Value) -> Value {
    let mut translation = D::Stream::default();
    let mut out = Vec::new();
    translation.feed(&sse(case["chunks"].as_array().unwrap()), &mut out);
    translation.finish(&mut out);
    json!({
        "request": translate_request(api, &case["request"]),
        "answer": D::complete(&case["completion"]),
        "events": events(&out),
    })
}

#[test]
fn inbound_translations_match_their_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/inbound");
    let mut checked = 0;
    for api in ["messages", "responses"] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(api))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for path in paths {
            let mut case: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let produced = match api {
                "messages" => golden::<Messages>(api, &case),
                _ => golden::<Responses>(api, &case),
            };
            if update {
                case["golden"] = produced;
                std::fs::write(&path, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
            } else {
                assert_eq!(
                    produced,
                    case["golden"],
                    "{} differs from its golden (UPDATE_GOLDEN=1 rewrites it)",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} inbound fixtures");
}
