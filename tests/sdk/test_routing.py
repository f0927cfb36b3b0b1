"""Capability-tag routing through the gateway, driven by the official OpenAI SDK."""

import openai
import pytest

IMAGE_MESSAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
]
TEXT_MESSAGE = [{"role": "user", "content": "hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def deployment_of(raw) -> str:
    return raw.headers["x-modelgate-deployment"]


def test_an_image_request_only_reaches_vision_deployments(client):
    for _ in range(6):
        raw = client.chat.completions.with_raw_response.create(model="smart", messages=IMAGE_MESSAGE)
        assert deployment_of(raw) == "smart-vision"
        assert raw.parse().choices[0].message.content


def test_tools_imply_function_calling(client):
    completion = client.chat.completions.create(model="smart", messages=TEXT_MESSAGE, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"

    # mock-chat's group does not declare function-calling.
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="mock-chat", messages=TEXT_MESSAGE, tools=[WEATHER_TOOL])
    assert error.value.code == "no_deployment_matches_tags"
    assert "function-calling" in error.value.message


def test_tags_named_in_a_header_or_the_body(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="smart", messages=TEXT_MESSAGE, extra_headers={"x-modelgate-tags": "long-context"}
        )
    assert error.value.status_code == 400
    assert error.value.code == "no_deployment_matches_tags"

    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="smart", messages=TEXT_MESSAGE, extra_body={"modelgate": {"tags": ["vision"]}}
        )
        assert deployment_of(raw) == "smart-vision"


def test_a_vision_request_never_falls_back_to_a_text_only_model(client, stack):
    stack.script_fake({"type": "status", "status": 500})
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model="smart", messages=IMAGE_MESSAGE)
    assert error.value.status_code == 502
    assert error.value.code == "all_deployments_failed"
    chain = error.value.response.headers["x-modelgate-fallback-chain"]
    assert chain.startswith("default/smart/smart-vision;status;500")
    assert "," not in chain, chain
    assert not any(isinstance(r["body"], dict) and r["body"].get("model") == "fake-smart-backup" for r in stack.fake_requests())

    # A text request on the same group does fall back when its own deployments fail.
    stack.script_fake({"type": "status", "status": 500}, {"type": "status", "status": 500})
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=TEXT_MESSAGE)
    assert raw.headers["x-modelgate-routed-model"] == "smart-backup"
    assert raw.headers["x-modelgate-attempts"] == "3"
