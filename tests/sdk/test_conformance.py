"""The official OpenAI Python SDK against modelgate, backed by fake-provider and the built-in mock provider."""

import base64
import json
import time
import uuid

import openai
import pytest

from conftest import get_json

CHAT = "gpt-4o-mini"
EMBED = "text-embedding-3-small"
PROMPT = "Say hello to the SDK suite"
FAKE_GREETING = "Hello from fake-provider! You said: "
MOCK_GREETING = "Hello from modelgate mock! You said: "
EMBED_INPUTS = ["first input", "second input"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def streamed_text(chunks) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def finish_reasons(chunks) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


def wait_for(condition, what: str, timeout: float = 10.0):
    """Polls condition() until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return result


@pytest.fixture
def bad_key_client(client: openai.OpenAI) -> openai.OpenAI:
    return client.with_options(api_key="sk-mg-not-a-real-key")


@pytest.fixture
def api(request) -> openai.OpenAI:
    """The client fixture named by an indirect parameter."""
    return request.getfixturevalue(request.param)


def test_chat_completion_and_routing_headers(client):
    raw = client.chat.completions.with_raw_response.create(model=CHAT, messages=user(PROMPT))
    completion = raw.parse()

    choice = completion.choices[0]
    assert choice.message.content == FAKE_GREETING + PROMPT
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    assert raw.headers["x-modelgate-request-id"]
    assert raw.headers["x-modelgate-routed-model"] == "chat"
    assert raw.headers["x-modelgate-provider"] == "openai-compatible"
    assert "fake-chat" in raw.headers["x-modelgate-deployment"]
    assert raw.headers["x-modelgate-attempts"] == "1"


def test_stream_with_usage(client):
    expected = client.chat.completions.create(model=CHAT, messages=user(PROMPT)).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=CHAT, messages=user(PROMPT), stream=True, stream_options={"include_usage": True}
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert streamed_text(chunks) == expected
    assert finish_reasons(chunks) == ["stop"]
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(usage_chunks) == 1
    assert usage_chunks[0] is chunks[-1]
    assert usage_chunks[0].choices == []
    assert usage_chunks[0].usage.total_tokens > 0
    # The gateway's cost extension rides along; the SDK keeps it as an extra field. The fake
    # deployment is unpriced (no catalog entry, no pricing), so the call cost nothing.
    assert usage_chunks[0].model_extra["modelgate"] == {"cost_usd": 0.0, "price_source": None}


def test_stream_without_usage(client):
    chunks = list(client.chat.completions.create(model=CHAT, messages=user(PROMPT), stream=True))

    assert streamed_text(chunks) == FAKE_GREETING + PROMPT
    assert finish_reasons(chunks) == ["stop"]
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)


def test_tool_call_round_trip(client):
    messages = user("What's the weather in Paris?")
    first = client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {}

    tool_result = '{"temp_c": 21}'
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": tool_result},
    ]
    second = client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])

    assert second.choices[0].message.content == "tool result received: " + tool_result
    assert second.choices[0].finish_reason == "stop"


def test_streamed_tool_call(client):
    chunks = list(
        client.chat.completions.create(
            model=CHAT, messages=user("Weather in Oslo?"), tools=[WEATHER_TOOL], stream=True
        )
    )

    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {}
    assert finish_reasons(chunks) == ["tool_calls"]


def test_json_mode(client):
    completion = client.chat.completions.create(
        model=CHAT, messages=user("Reply in JSON"), response_format={"type": "json_object"}
    )

    assert json.loads(completion.choices[0].message.content) == {"answer": "fake"}


def test_embeddings_float(client):
    result = client.embeddings.create(model=EMBED, input=EMBED_INPUTS, encoding_format="float")

    assert [item.index for item in result.data] == [0, 1]
    assert [len(item.embedding) for item in result.data] == [8, 8]
    assert all(isinstance(x, float) for item in result.data for x in item.embedding)
    assert result.usage.prompt_tokens > 0


def test_embeddings_base64_default_matches_float(client):
    floats = client.embeddings.create(model=EMBED, input=EMBED_INPUTS, encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    raw = client.embeddings.with_raw_response.create(model=EMBED, input=EMBED_INPUTS)

    assert all(isinstance(item["embedding"], str) for item in raw.http_response.json()["data"])
    decoded = raw.parse()
    assert [item.index for item in decoded.data] == [0, 1]
    for got, want in zip(decoded.data, floats.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, rel=1e-6)


def test_embeddings_dimensions(client):
    result = client.embeddings.create(model=EMBED, input=EMBED_INPUTS, dimensions=16, encoding_format="float")

    assert [len(item.embedding) for item in result.data] == [16, 16]


def test_image_generation(client):
    result = client.images.generate(model="gpt-image-1", prompt="a tiny red square")

    png = base64.b64decode(result.data[0].b64_json, validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert result.created > 0


def test_models_list(client):
    ids = {model.id for model in client.models.list()}

    assert {"gpt-4o-mini", "chat", "text-embedding-3-small", "gpt-image-1", "mock-chat"} <= ids


def test_models_carry_the_catalog_fields_and_the_sdk_still_parses_them(client, stack):
    models = {model.id: model for model in client.models.list()}
    chat = models["gpt-4o-mini"]

    assert (chat.object, chat.owned_by) == ("model", "modelgate")
    # The fields OpenAI's model object lacks arrive as extras the SDK keeps without complaint.
    assert chat.model_extra["group"] == "chat"
    assert chat.model_extra["tags"] == ["function-calling"]
    assert chat.model_extra["providers"] == ["openai-compatible"]
    retrieved = client.models.retrieve("gpt-4o-mini")
    assert retrieved.id == "gpt-4o-mini" and retrieved.model_extra == chat.model_extra

    # The public catalog (on in standalone) answers without a key, with the same entries.
    public = {model["id"]: model for model in get_json(f"{stack.api_url}/api/public/models")["data"]}
    assert set(models) <= set(public)
    assert public["gpt-4o-mini"] == chat.model_dump(exclude_unset=True)


def test_models_list_restricted_key(restricted_client):
    assert [model.id for model in restricted_client.models.list()] == ["mock-chat"]


def test_mock_provider(client):
    completion = client.chat.completions.create(model="mock-chat", messages=user(PROMPT))

    assert completion.choices[0].message.content == MOCK_GREETING + PROMPT
    assert completion.usage.total_tokens > 0


def test_mock_provider_stream(client):
    chunks = list(client.chat.completions.create(model="mock-chat", messages=user(PROMPT), stream=True))

    assert streamed_text(chunks) == MOCK_GREETING + PROMPT
    assert finish_reasons(chunks) == ["stop"]


def test_restricted_key_can_use_allowed_model(restricted_client):
    completion = restricted_client.chat.completions.create(model="mock-chat", messages=user(PROMPT))

    assert completion.choices[0].message.content == MOCK_GREETING + PROMPT


@pytest.mark.parametrize(
    ("api", "model", "error", "status", "code"),
    [
        ("bad_key_client", CHAT, openai.AuthenticationError, 401, "invalid_api_key"),
        ("client", "no-such-model", openai.NotFoundError, 404, "model_not_found"),
        ("restricted_client", "chat", openai.PermissionDeniedError, 403, "model_not_allowed"),
    ],
    ids=["bad-key", "unknown-model", "model-not-allowed"],
    indirect=["api"],
)
def test_typed_errors(api, model, error, status, code):
    with pytest.raises(error) as caught:
        api.chat.completions.create(model=model, messages=user(PROMPT))

    assert caught.value.status_code == status
    assert caught.value.code == code
    # The SDK unwraps {"error": {...}} into body.
    assert {"message", "type", "param", "code"} <= set(caught.value.body)
    assert caught.value.body["message"]


def test_upstream_sees_rewritten_request(client, stack):
    marker = f"record-me-{uuid.uuid4().hex}"
    client.chat.completions.create(
        model=CHAT, messages=user(marker), extra_body={"modelgate": {"metadata": {"suite": "sdk"}}}
    )

    [seen] = [
        r for r in stack.fake_requests() if r["path"] == "/v1/chat/completions" and marker in json.dumps(r["body"])
    ]
    body = seen["body"]
    assert isinstance(body, dict)
    assert body["model"] == stack.upstream_models["chat"]
    assert "modelgate" not in body
    assert body["messages"] == user(marker)
    authorization = seen["headers"].get("authorization", "")
    assert stack.sdk_key not in authorization
    assert authorization == f"Bearer {stack.upstream_key}"


def test_decision_log_line_per_request(client, stack):
    request_ids = [
        client.chat.completions.with_raw_response.create(model=CHAT, messages=user(PROMPT)).headers[
            "x-modelgate-request-id"
        ]
        for _ in range(3)
    ]
    assert len(set(request_ids)) == 3

    def records_by_id():
        by_id: dict[str, list[dict]] = {}
        for record in stack.decision_records():
            by_id.setdefault(record.get("request_id"), []).append(record)
        return by_id if all(rid in by_id for rid in request_ids) else None

    by_id = wait_for(records_by_id, f"decision log records for {request_ids}")
    for rid in request_ids:
        [record] = by_id[rid]
        assert record["model"] == CHAT
        assert record["group"] == "chat"
        assert isinstance(record["attempts"], list) and record["attempts"]
