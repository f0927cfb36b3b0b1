"""The official Anthropic Python SDK against the gateway's Messages API, through every provider the
fake speaks. Anthropic deployments (and Claude on Vertex) get the client's request as sent, model
aside, and answer untouched; every other provider's answer is translated back into Messages."""

from __future__ import annotations

import json

import anthropic
import pytest

from conftest import raw_post
from providers import PROVIDERS, Provider
from test_providers import FAKE_GREETING, PROMPT, TINY_PNG, last_request

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# Providers that speak Messages themselves: the request passes through.
NATIVE = {"anthropic", "vertex-claude"}

by_name = pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)


@pytest.fixture(scope="module")
def claude(stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.api_url,
        api_key=stack.sdk_key,
        max_retries=0,
        timeout=30,
        default_headers={"x-modelgate-cache": "false"},
    )


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@by_name
def test_a_message_is_served(stack, claude: anthropic.Anthropic, provider: Provider):
    raw = claude.messages.with_raw_response.create(
        model=provider.chat, max_tokens=64, system="Be brief.", messages=user(PROMPT), stop_sequences=["END"]
    )
    message = raw.parse()
    assert raw.headers["x-modelgate-provider"] == provider.kind
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == FAKE_GREETING + PROMPT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = last_request(stack, provider)
    if provider.name in NATIVE:
        # Passed through: the client's own members, `system` still a string.
        assert sent["path"].endswith(("/v1/messages", ":rawPredict"))
        assert sent["body"]["system"] == "Be brief." and sent["body"]["stop_sequences"] == ["END"]
        if provider.name == "anthropic":
            assert sent["headers"]["anthropic-version"] == claude.default_headers["anthropic-version"]
            assert sent["body"]["model"] == provider.model


@by_name
def test_a_stream_is_a_well_formed_messages_stream(claude: anthropic.Anthropic, provider: Provider):
    with claude.messages.stream(model=provider.chat, max_tokens=64, messages=user(PROMPT)) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == FAKE_GREETING + PROMPT
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@by_name
def test_a_tool_round_trip(claude: anthropic.Anthropic, provider: Provider):
    messages = user("What is the weather in Paris?")
    first = claude.messages.create(model=provider.chat, max_tokens=64, tools=[WEATHER_TOOL], messages=messages)
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict)
    messages += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"}]},
    ]
    second = claude.messages.create(model=provider.chat, max_tokens=64, tools=[WEATHER_TOOL], messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "tool result received: 18 degrees and sunny"


@by_name
def test_a_streamed_tool_call(claude: anthropic.Anthropic, provider: Provider):
    with claude.messages.stream(
        model=provider.chat, max_tokens=64, tools=[WEATHER_TOOL], messages=user("Weather in Paris?")
    ) as stream:
        final = stream.get_final_message()
    call = next(block for block in final.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict)
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p.images], ids=lambda p: p.name)
def test_an_image_input(claude: anthropic.Anthropic, provider: Provider):
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG}},
    ]
    message = claude.messages.create(model=provider.chat, max_tokens=64, messages=[{"role": "user", "content": content}])
    assert message.content[0].text == FAKE_GREETING + "Describe"


def test_count_tokens(claude: anthropic.Anthropic):
    counted = claude.messages.count_tokens(model="p-gemini", messages=user(PROMPT))
    assert counted.input_tokens > 0


def test_errors_are_anthropic_errors_with_the_gateway_codes(stack):
    stranger = anthropic.Anthropic(base_url=stack.api_url, api_key="sk-mg-nobody", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        stranger.messages.create(model="p-gemini", max_tokens=8, messages=user(PROMPT))
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "authentication_error"
    assert refused.value.body["error"]["code"] == "invalid_api_key"
    claude = anthropic.Anthropic(base_url=stack.api_url, api_key=stack.sdk_key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=user(PROMPT))
    assert missing.value.body["error"]["code"] == "model_not_found"


def test_the_provider_overload_is_a_502_in_anthropic_shape(stack, claude: anthropic.Anthropic):
    stack.script_fake({"type": "status", "status": 503})
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(model="p-gemini", max_tokens=8, messages=user(PROMPT))
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["code"] == "all_deployments_failed"


def test_a_native_stream_passes_through_byte_for_byte(stack):
    """What the gateway relays from an Anthropic deployment is exactly what the provider sent."""
    request = {"model": "p-anthropic", "max_tokens": 64, "stream": True, "messages": user(PROMPT)}
    headers = {"x-api-key": stack.sdk_key, "anthropic-version": "2023-06-01", "x-modelgate-cache": "false"}
    status, through_gateway = raw_post(f"{stack.api_url}/v1/messages", request, headers)
    assert status == 200, through_gateway
    status, direct = raw_post(
        f"{stack.fake_url}/v1/messages",
        {**request, "model": next(p.model for p in PROVIDERS if p.name == "anthropic")},
        {"x-api-key": stack.upstream_key, "anthropic-version": "2023-06-01"},
    )
    assert status == 200, direct
    assert through_gateway == direct


def test_a_fallback_before_the_first_token_gives_a_well_formed_messages_stream(stack, claude: anthropic.Anthropic):
    """anthropic (pass-through) -> gemini (translated): the client sees one Messages stream."""
    stack.script_fake({"type": "status", "status": 529})
    with claude.messages.with_streaming_response.create(
        model="chain", max_tokens=32, messages=user(PROMPT), stream=True
    ) as response:
        assert response.headers["x-modelgate-provider"] == "gemini"
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == FAKE_GREETING + PROMPT
