//! The model catalog in routing: capability tags and context windows a deployment takes from
//! its model when its config does not declare them, and the list price it is costed at.

use fake_provider::FakeProvider;
use http::StatusCode;
use serde_json::json;

use crate::support::*;

fn claude(name: &str, fake: &FakeProvider, extra: &str) -> String {
    format!(
        "    - name: {name}\n      provider: anthropic\n      model: claude-sonnet-4-20250514\n      baseUrl: http://{}\n      credentials: {{secretKeyRef: {{name: keys, key: upstream}}}}\n{extra}",
        fake.addr()
    )
}

fn tool_call(model: &str) -> serde_json::Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}],
    })
}

#[tokio::test]
async fn an_untagged_claude_deployment_serves_tools_and_is_costed_at_its_list_price() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}",
        group("claude", &["claude"], &[claude("untagged", &fake, "")], &[]),
        group(
            "declared",
            &["declared"],
            &[claude("tagged", &fake, "      tags: [code]\n")],
            &[]
        )
    );
    let gw = TestGateway::start(&config_with(&groups)).await;

    let answer = gw.post("/v1/chat/completions", tool_call("claude")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.served_by(), ("untagged", "1"));
    let cost: f64 = answer.header("x-modelgate-cost").parse().unwrap();
    assert!(cost > 0.0, "a list-priced call costs something");
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    assert_eq!(record["price_source"], "catalog");

    // Declared tags win over the catalog: this deployment claims `code` only.
    let refused = gw.post("/v1/chat/completions", tool_call("declared")).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "no_deployment_matches_tags")
    );
}

/// A chat request whose prompt is about `tokens` tokens by the gateway's estimate.
fn long_chat(model: &str, tokens: usize) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "word ".repeat(tokens * 4 / 5)}]})
}

#[tokio::test]
async fn a_request_no_window_of_its_group_holds_goes_to_the_wider_group_without_a_call() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}{}",
        group(
            "small",
            &["small"],
            &[
                upstream_with(
                    "short",
                    &fake.base_url(),
                    "      contextWindow: 100\n      weight: 5\n"
                ),
                upstream_with("roomy", &fake.base_url(), "      contextWindow: 1000\n"),
            ],
            &[]
        )
        .replace(
            "  models: [small]\n",
            "  models: [small]\n  contextWindowFallbacks: [large]\n"
        ),
        group(
            "large",
            &["large"],
            &[upstream("long", &fake.base_url(), 1)],
            &[]
        ),
        group(
            "alone",
            &["alone"],
            &[upstream_with(
                "tiny",
                &fake.base_url(),
                "      contextWindow: 100\n"
            )],
            &[]
        ),
    );
    let gw = TestGateway::start(&config_with(&groups)).await;

    // 500 tokens: too long for `short`, which is left out; `roomy` serves.
    let answer = gw
        .post("/v1/chat/completions", long_chat("small", 500))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.served_by(), ("roomy", "1"));
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    let candidates = &record["routing"]["groups"][0]["candidates"];
    assert_eq!(candidates[0]["deployment"], "default/small/short");
    assert_eq!(candidates[0]["excluded"], "context-window");

    // 2,000 tokens fit neither: the wider group serves, and the one call made is its own.
    let calls = fake.requests().len();
    let answer = gw
        .post("/v1/chat/completions", long_chat("small", 2_000))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.served_by(), ("long", "1"));
    assert_eq!(
        fake.requests().len(),
        calls + 1,
        "no call to a link too small"
    );
    let record = gw.decision(answer.header("x-modelgate-request-id")).await;
    assert_eq!(
        record["context_window_routing"]["groups"][0]["group"],
        "default/large"
    );
    let log = std::fs::read_to_string(&gw.decision_log).unwrap();
    let replay = modelgate_dataplane::route::explain::replay(log.as_bytes()).unwrap();
    assert!(replay.mismatches.is_empty(), "{:?}", replay.mismatches);

    // `max_tokens` needs room too: 50 prompt tokens and 80 to answer do not fit 100.
    let mut asks_room = long_chat("alone", 50);
    asks_room["max_tokens"] = json!(80);
    let calls = fake.requests().len();
    let refused = gw.post("/v1/chat/completions", asks_room).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "context_length_exceeded"),
        "{}",
        refused.text()
    );
    assert_eq!(fake.requests().len(), calls, "refused before any call");
    let fits = gw
        .post("/v1/chat/completions", long_chat("alone", 50))
        .await;
    assert_eq!(fits.status, StatusCode::OK, "{}", fits.text());
}

#[tokio::test]
async fn the_public_catalog_lists_every_model_with_its_facts_and_no_secret() {
    let fake = FakeProvider::start().await.unwrap();
    let groups = format!(
        "{}{}",
        group(
            "claude",
            &["claude", "claude-alias"],
            &[claude(
                "untagged",
                &fake,
                "      rpm: 100\n      tpm: 5000\n"
            )],
            &[]
        ),
        group(
            "local",
            &["local"],
            &[upstream_with(
                "vllm",
                &fake.base_url(),
                "      contextWindow: 32000\n      pricing: {input: 0.5, output: 1.5}\n      credentials: {secretKeyRef: {name: keys, key: upstream}}\n"
            )],
            &[]
        ),
    );
    let config = format!(
        "{}{}",
        config_with(&groups),
        virtual_key(
            "narrow",
            "sk-mg-narrow-key-000000000001",
            "  allowedModels: [local]\n"
        )
    );
    let gw = TestGateway::start(&config).await;

    let public = gw.get(gw.url("/api/public/models"), None).await;
    assert_eq!(public.status, StatusCode::OK, "{}", public.text());
    let text = public.text();
    for secret in [
        "sk-upstream-canary-0001",
        "127.0.0.1",
        "baseUrl",
        "base_url",
        "upstream-vllm",
        "claude-sonnet-4-20250514",
        KEY,
    ] {
        assert!(!text.contains(secret), "the catalog shows {secret}: {text}");
    }
    let list = public.json();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude", "claude-alias", "local"]);
    let claude = &list["data"][0];
    assert_eq!(claude["group"], "claude");
    assert_eq!(claude["context_window"], 200_000);
    assert_eq!(claude["max_output_tokens"], 64_000);
    assert_eq!(claude["rpm"], 100);
    assert_eq!(claude["tpm"], 5000);
    assert_eq!(claude["providers"], json!(["anthropic"]));
    assert!(
        claude["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("function-calling"))
    );
    assert_eq!(claude["pricing"][0]["source"], "catalog");
    assert_eq!(claude["pricing"][0]["input"], 3.0);
    let local = &list["data"][2];
    assert_eq!(local["context_window"], 32_000);
    assert_eq!(
        local["pricing"],
        json!([{"provider": "openai-compatible", "input": 0.5, "output": 1.5, "cached_input": 0.5, "source": "deployment"}])
    );
    assert!(local.get("rpm").is_none(), "no advertised limit: {local}");

    // A key's own list carries the same fields, for the models it may use.
    let mine = gw
        .get(gw.url("/v1/models"), Some("sk-mg-narrow-key-000000000001"))
        .await;
    assert_eq!(mine.json()["data"], json!([local.clone()]));
    let one = gw.get(gw.url("/v1/models/claude"), Some(KEY)).await;
    assert_eq!(one.json(), claude.clone());
}

#[tokio::test]
async fn the_public_catalog_is_off_when_the_gateway_says_so() {
    let gw = TestGateway::start_custom(&config_with(&group("m", &["m"], &[mock("m")], &[])), |o| {
        o.public_catalog = false
    })
    .await;
    let answer = gw.get(gw.url("/api/public/models"), None).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_route")
    );
}
