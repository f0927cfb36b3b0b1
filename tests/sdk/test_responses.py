"""The official OpenAI Python SDK's Responses API against the gateway, through every provider the
fake speaks: OpenAI and Azure deployments get the request as sent, model aside, and answer
untouched; every other provider's answer is translated back into Responses."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import raw_post
from providers import PROVIDERS, Provider
from test_providers import FAKE_GREETING, PROMPT, last_request

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
NATIVE = {"azure"}

by_name = pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)


@by_name
def test_a_response_is_served(stack, client: openai.OpenAI, provider: Provider):
    raw = client.responses.with_raw_response.create(
        model=provider.chat, instructions="Be brief.", input=PROMPT, max_output_tokens=64, store=False
    )
    response = raw.parse()
    assert raw.headers["x-modelgate-provider"] == provider.kind
    assert response.status == "completed"
    assert response.output_text == FAKE_GREETING + PROMPT
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    if provider.name in NATIVE:
        # Passed through to the provider's own Responses API, the client's members as sent.
        sent = [r for r in stack.fake_requests() if r["dialect"] == "responses"][-1]
        assert sent["path"] == "/openai/v1/responses"
        assert sent["body"]["instructions"] == "Be brief." and sent["body"]["model"] == provider.model
    else:
        assert last_request(stack, provider)["path"] != "/openai/v1/responses"


@by_name
def test_a_stream_is_a_well_formed_responses_stream(client: openai.OpenAI, provider: Provider):
    with client.responses.stream(model=provider.chat, input=PROMPT, max_output_tokens=64) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == FAKE_GREETING + PROMPT
    assert final.output_text == FAKE_GREETING + PROMPT
    assert final.usage.output_tokens > 0


@by_name
def test_a_function_call_round_trip(client: openai.OpenAI, provider: Provider):
    items: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model=provider.chat, input=items, tools=[WEATHER_TOOL], max_output_tokens=64)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments), dict)
    items += [item.model_dump(exclude_none=True) for item in first.output]
    items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees and sunny"})
    second = client.responses.create(model=provider.chat, input=items, tools=[WEATHER_TOOL], max_output_tokens=64)
    assert second.output_text == "tool result received: 18 degrees and sunny"


@by_name
def test_a_streamed_function_call(client: openai.OpenAI, provider: Provider):
    with client.responses.stream(
        model=provider.chat, input="Weather in Paris?", tools=[WEATHER_TOOL], max_output_tokens=64
    ) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments), dict)


def test_previous_response_id_is_refused_where_the_provider_keeps_no_responses(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="p-gemini", input=PROMPT, previous_response_id="resp_123")
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.body["param"] == "previous_response_id"


def test_stored_responses_are_a_clear_404(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve("resp_123")
    assert missing.value.code == "response_not_stored"
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_123")


def test_a_native_stream_passes_through_byte_for_byte(stack):
    """What the gateway relays from an Azure Responses deployment is exactly what it sent."""
    azure = next(p for p in PROVIDERS if p.name == "azure")
    request = {"model": azure.chat, "input": PROMPT, "stream": True}
    headers = {"authorization": f"Bearer {stack.sdk_key}", "x-modelgate-cache": "false"}
    status, through_gateway = raw_post(f"{stack.api_url}/v1/responses", request, headers)
    assert status == 200, through_gateway
    status, direct = raw_post(
        f"{stack.fake_url}/openai/v1/responses", {**request, "model": azure.model}, {"api-key": stack.upstream_key}
    )
    assert status == 200, direct
    assert through_gateway == direct
