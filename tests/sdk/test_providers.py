"""The OpenAI Python SDK through every provider adapter: fake-provider answers each in that
provider's native wire format (Anthropic Messages, Gemini generateContent, Bedrock Converse with
binary event streams and SigV4, ...), so a passing test means the request was translated to the
native API and the answer back to OpenAI's, with nothing but `x-modelgate-provider` telling them
apart."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from providers import PROVIDERS, Provider

FAKE_GREETING = "Hello from fake-provider! You said: "
PROMPT = "Say hello across providers"
TINY_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

by_name = pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def last_request(stack, provider: Provider) -> dict:
    recorded = [r for r in stack.fake_requests() if r["dialect"] == provider.dialect and r["path"] != "/token"]
    assert recorded, f"fake-provider saw no {provider.dialect} request"
    return recorded[-1]


@by_name
def test_chat_is_translated_both_ways(stack, client: openai.OpenAI, provider: Provider):
    raw = client.chat.completions.with_raw_response.create(
        model=provider.chat,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            *user(PROMPT),
        ],
        max_tokens=64,
        temperature=0.5,
        stop=["END"],
    )
    completion = raw.parse()
    assert raw.headers["x-modelgate-provider"] == provider.kind
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == FAKE_GREETING + PROMPT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert last_request(stack, provider)["dialect"] == provider.dialect


@by_name
def test_stream_is_translated_with_usage(client: openai.OpenAI, provider: Provider):
    chunks = list(
        client.chat.completions.create(
            model=provider.chat,
            messages=user(PROMPT),
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=64,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FAKE_GREETING + PROMPT
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert len({c.id for c in chunks}) == 1, "one id on every chunk"
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and chunks[-1].usage is not None and chunks[-1].choices == []
    assert usage[0].completion_tokens > 0


@by_name
def test_a_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI, provider: Provider):
    chunks = list(client.chat.completions.create(model=provider.chat, messages=user(PROMPT), stream=True))
    assert all(c.choices for c in chunks), "no choices-less chunk reaches a client that did not ask"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == FAKE_GREETING + PROMPT


@by_name
def test_tool_call_round_trip(client: openai.OpenAI, provider: Provider):
    messages = user("What is the weather in Paris?")
    first = client.chat.completions.create(
        model=provider.chat, messages=messages, tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=64
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    second = client.chat.completions.create(
        model=provider.chat, messages=messages, tools=[WEATHER_TOOL], max_tokens=64
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "tool result received: 18 degrees and sunny"


@by_name
def test_streamed_tool_call(client: openai.OpenAI, provider: Provider):
    chunks = list(
        client.chat.completions.create(
            model=provider.chat, messages=user("Weather in Paris?"), tools=[WEATHER_TOOL], stream=True, max_tokens=64
        )
    )
    deltas = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].index == 0 and deltas[0].id and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert isinstance(json.loads(arguments), dict)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


@by_name
def test_json_mode(client: openai.OpenAI, provider: Provider):
    completion = client.chat.completions.create(
        model=provider.chat,
        messages=user("Answer in json"),
        response_format={"type": "json_object"},
        max_tokens=64,
    )
    assert json.loads(completion.choices[0].message.content) == {"answer": "fake"}


@by_name
def test_json_schema_or_a_clear_400(client: openai.OpenAI, provider: Provider):
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
            "strict": True,
        },
    }
    request = dict(model=provider.chat, messages=user("Answer in json"), response_format=response_format, max_tokens=64)
    if not provider.json_schema:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**request)
        assert refused.value.code == "unsupported_parameter"
        assert provider.kind in refused.value.message
        return
    completion = client.chat.completions.create(**request)
    assert json.loads(completion.choices[0].message.content) == {"answer": "fake"}


@by_name
def test_image_inputs(client: openai.OpenAI, provider: Provider):
    parts = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG}"}},
    ]
    request = dict(model=provider.chat, messages=[{"role": "user", "content": parts}], max_tokens=64)
    if not provider.images:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**request)
        assert refused.value.code == "unsupported_parameter"
        return
    completion = client.chat.completions.create(**request)
    assert completion.choices[0].message.content == FAKE_GREETING + "Describe"
    url_parts = [parts[0], {"type": "image_url", "image_url": {"url": "https://images.example/cat.png"}}]
    request = dict(model=provider.chat, messages=[{"role": "user", "content": url_parts}], max_tokens=64)
    if provider.image_urls:
        completion = client.chat.completions.create(**request)
        assert completion.choices[0].message.content == FAKE_GREETING + "Describe"
    else:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**request)
        assert refused.value.code == "unsupported_parameter"


@by_name
def test_embeddings_or_a_clear_400(client: openai.OpenAI, provider: Provider):
    inputs = ["first input", "second input"][: provider.embed_batch]
    if not provider.embed_model:
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model=provider.chat, input=inputs)
        assert refused.value.code == "unsupported_parameter"
        return
    # Without encoding_format the SDK asks for base64 and decodes it; floats are asked for explicitly.
    for options in ({}, {"encoding_format": "float"}):
        result = client.embeddings.create(model=provider.embed, input=inputs, **options)
        assert [d.index for d in result.data] == list(range(len(inputs)))
        assert all(len(d.embedding) > 0 and all(isinstance(x, float) for x in d.embedding) for d in result.data)
        assert len({tuple(d.embedding) for d in result.data}) == len(inputs)


# Azure and DeepSeek speak OpenAI's format and take logit_bias; every translated provider lacks it.
@pytest.mark.parametrize(
    "provider", [p for p in PROVIDERS if p.kind not in ("azure", "deepseek")], ids=lambda p: p.name
)
def test_a_parameter_the_provider_lacks_is_refused_by_name(stack, client: openai.OpenAI, provider: Provider):
    before = len(stack.fake_requests())
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=provider.chat, messages=user(PROMPT), logit_bias={"50256": -100})
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.body["param"] == "logit_bias"
    assert "logit_bias" in refused.value.message and provider.kind in refused.value.message
    assert len(stack.fake_requests()) == before, "refused before anything was sent upstream"


@by_name
def test_provider_client_errors_reach_the_client_as_openai_errors(stack, client: openai.OpenAI, provider: Provider):
    stack.script_fake({"type": "status", "status": 400})
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=provider.chat, messages=user(PROMPT), max_tokens=8)
    assert refused.value.status_code == 400
    assert refused.value.body["type"] == "invalid_request_error"
    assert "sk-fake-upstream-sdk" not in refused.value.message


@by_name
def test_provider_overload_is_a_failed_attempt_not_a_client_error(stack, client: openai.OpenAI, provider: Provider):
    stack.script_fake({"type": "status", "status": 503})
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=provider.chat, messages=user(PROMPT), max_tokens=8)
    assert failed.value.status_code == 502
    assert failed.value.code == "all_deployments_failed"


class TestFallbackChain:
    """anthropic -> gemini -> bedrock: the first two fail, the third answers, in its own format."""

    def test_complete_answer(self, stack, client: openai.OpenAI):
        stack.script_fake({"type": "status", "status": 529}, {"type": "status", "status": 503})
        raw = client.chat.completions.with_raw_response.create(model="chain", messages=user(PROMPT), max_tokens=32)
        assert raw.headers["x-modelgate-provider"] == "bedrock"
        assert raw.headers["x-modelgate-attempts"] == "3"
        assert raw.parse().choices[0].message.content == FAKE_GREETING + PROMPT

    def test_stream_with_tool_call(self, stack, client: openai.OpenAI):
        stack.script_fake({"type": "status", "status": 529}, {"type": "status", "status": 503})
        with client.chat.completions.with_streaming_response.create(
            model="chain", messages=user("Weather?"), tools=[WEATHER_TOOL], stream=True, max_tokens=32
        ) as response:
            assert response.headers["x-modelgate-provider"] == "bedrock"
            chunks = list(response.parse())
        calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
        assert calls[0].function.name == "get_weather"
        dialects = [r["dialect"] for r in stack.fake_requests()[-3:]]
        assert dialects == ["anthropic", "gemini", "bedrock"]

    def test_a_stream_that_breaks_before_content_falls_back(self, stack, client: openai.OpenAI):
        stack.script_fake({"type": "cut_stream_after", "chunks": 1})
        with client.chat.completions.with_streaming_response.create(
            model="chain", messages=user(PROMPT), stream=True, max_tokens=32
        ) as response:
            assert response.headers["x-modelgate-provider"] == "gemini"
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        assert text == FAKE_GREETING + PROMPT


def test_embeddings_take_base64_from_the_sdk_default(client: openai.OpenAI):
    provider = next(p for p in PROVIDERS if p.name == "gemini")
    result = client.embeddings.create(model=provider.embed, input="one")
    raw = client.embeddings.with_raw_response.create(model=provider.embed, input="one", encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str) and len(base64.b64decode(encoded)) == 4 * len(result.data[0].embedding)
