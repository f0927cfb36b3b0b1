"""The streaming contract as the official OpenAI SDK sees it."""

import openai
import pytest

TEXT_MESSAGE = [{"role": "user", "content": "one two"}]
GREETING = "Hello from fake-provider! You said: one two"


def content(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize(
    "script",
    [
        {"type": "stream_error_after", "chunks": 1},
        {"type": "cut_stream_after", "chunks": 1},
        {"type": "status", "status": 503},
    ],
    ids=["error-event-before-content", "cut-before-content", "503"],
)
def test_a_failure_before_content_is_invisible(client, stack, script):
    stack.script_fake(script)
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=TEXT_MESSAGE, stream=True)
    assert raw.headers["x-modelgate-attempts"] == "2"
    assert content(list(raw.parse())) == GREETING


def test_a_failure_after_content_raises_instead_of_truncating(client, stack):
    stack.script_fake({"type": "cut_stream_after", "chunks": 2})
    stream = client.chat.completions.create(model="smart", messages=TEXT_MESSAGE, stream=True)
    received = []
    with pytest.raises(openai.APIError) as error:
        for chunk in stream:
            received.append(chunk)
    assert content(received) == "Hello "
    assert "upstream stream failed" in str(error.value.message)


def test_a_failed_over_complete_answer_raises_nothing(client, stack):
    stack.script_fake({"type": "status", "status": 503})
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=TEXT_MESSAGE)
    assert raw.headers["x-modelgate-attempts"] == "2"
    assert raw.parse().choices[0].message.content == GREETING


def test_the_final_failure_is_a_typed_error(client, stack):
    stack.script_fake({"type": "status", "status": 500})
    with pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(model="chat", messages=TEXT_MESSAGE)
    assert error.value.status_code == 502
    assert error.value.code == "all_deployments_failed"
    assert error.value.response.headers["x-modelgate-fallback-chain"].startswith("default/chat/fake-chat;status;500")
