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
