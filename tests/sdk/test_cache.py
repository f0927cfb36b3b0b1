"""The response cache through the OpenAI SDK: an exact repeat never reaches the provider, and an
answer stored from a stream serves a complete request and the other way round."""

import time
import uuid

import openai

from test_conformance import CHAT, WEATHER_TOOL, streamed_text, user


def fresh_prompt() -> list[dict]:
    # The gateway is shared by the session: a unique prompt keeps each test's entries its own.
    return user(f"cache test {uuid.uuid4()}")


STORED_BYTES = "modelgate_cache_stored_bytes_total"


def eventually_stored(stack, before: float) -> None:
    # A stream is stored in the background once it completes, after its last byte went out; the
    # counter moves only when the write is done, so the entry can then be read.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if stack.metric(STORED_BYTES) > before:
            return
        time.sleep(0.01)
    raise AssertionError("the streamed answer was never stored")


def upstream_calls(stack) -> int:
    return len(stack.fake_requests())


def test_a_repeat_is_a_hit_that_never_reaches_the_provider(stack, cached_client: openai.OpenAI):
    messages = fresh_prompt()
    first = cached_client.chat.completions.with_raw_response.create(model=CHAT, messages=messages)
    assert first.headers["x-modelgate-cache"] == "miss"
    calls = upstream_calls(stack)
    again = cached_client.chat.completions.with_raw_response.create(model=CHAT, messages=messages)
    assert again.headers["x-modelgate-cache"] == "hit"
    assert again.headers["x-modelgate-cost"] == "0.000000000"
    assert upstream_calls(stack) == calls
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    changed = cached_client.chat.completions.with_raw_response.create(
        model=CHAT, messages=messages, temperature=0.2
    )
    assert changed.headers["x-modelgate-cache"] == "miss"


def test_a_complete_answer_is_replayed_as_a_stream(stack, cached_client: openai.OpenAI):
    messages = fresh_prompt()
    complete = cached_client.chat.completions.create(model=CHAT, messages=messages)
    calls = upstream_calls(stack)
    raw = cached_client.chat.completions.with_raw_response.create(
        model=CHAT, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-modelgate-cache"] == "hit"
    chunks = list(raw.parse())
    assert streamed_text(chunks) == complete.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == complete.usage.total_tokens
    assert upstream_calls(stack) == calls


def test_a_streamed_answer_serves_a_complete_request(stack, cached_client: openai.OpenAI):
    messages = fresh_prompt()
    stored = stack.metric(STORED_BYTES)
    chunks = list(cached_client.chat.completions.create(model=CHAT, messages=messages, stream=True))
    text = streamed_text(chunks)
    assert all(chunk.usage is None for chunk in chunks), "usage the client did not ask for"
    eventually_stored(stack, stored)
    calls = upstream_calls(stack)
    raw = cached_client.chat.completions.with_raw_response.create(model=CHAT, messages=messages)
    assert raw.headers["x-modelgate-cache"] == "hit"
    assert raw.parse().choices[0].message.content == text
    assert upstream_calls(stack) == calls


def test_a_tool_call_round_trips_through_the_cache(stack, cached_client: openai.OpenAI):
    messages = user(f"What is the weather in Paris? {uuid.uuid4()}")
    first = cached_client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])
    calls_before = upstream_calls(stack)
    raw = cached_client.chat.completions.with_raw_response.create(
        model=CHAT, messages=messages, tools=[WEATHER_TOOL], stream=True
    )
    assert raw.headers["x-modelgate-cache"] == "hit"
    replayed = list(raw.parse())
    assert upstream_calls(stack) == calls_before, "a hit never reaches the provider"
    calls = [d.tool_calls for c in replayed for choice in c.choices for d in [choice.delta] if d.tool_calls]
    assert calls, "the replayed stream carries the tool call"
    assert calls[0][0].function.name == first.choices[0].message.tool_calls[0].function.name
    assert replayed[-1].choices[0].finish_reason == "tool_calls"


def test_opting_out_bypasses_the_cache(stack, cached_client: openai.OpenAI):
    messages = fresh_prompt()
    cached_client.chat.completions.create(model=CHAT, messages=messages)
    by_body = cached_client.chat.completions.with_raw_response.create(
        model=CHAT, messages=messages, extra_body={"modelgate": {"cache": False}}
    )
    assert by_body.headers["x-modelgate-cache"] == "bypass"
    by_header = cached_client.chat.completions.with_raw_response.create(
        model=CHAT, messages=messages, extra_headers={"x-modelgate-cache": "false"}
    )
    assert by_header.headers["x-modelgate-cache"] == "bypass"


def test_embeddings_are_cached_too(stack, cached_client: openai.OpenAI):
    inputs = [f"embed me {uuid.uuid4()}"]
    first = cached_client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=inputs)
    assert first.headers["x-modelgate-cache"] == "miss"
    again = cached_client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=inputs)
    assert again.headers["x-modelgate-cache"] == "hit"
    assert again.parse().data[0].embedding == first.parse().data[0].embedding
