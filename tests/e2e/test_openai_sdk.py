"""The OpenAI Python SDK against `tessera serve`: chat and completions, streaming and not, stop
strings, seed reproducibility, logprobs, and errors surfacing as the SDK's exception types."""
import openai
import pytest

from serve_util import API_KEY


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client):
    models = client.models.list().data
    assert len(models) == 1
    return models[0].id


MSG = [{"role": "user", "content": "Name three colors."}]


def test_chat_non_streaming(client, model):
    r = client.chat.completions.create(model=model, messages=MSG, max_tokens=12, temperature=0)
    c = r.choices[0]
    assert r.object == "chat.completion" and r.model == model
    assert c.message.role == "assistant" and c.message.content.strip()
    assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_equals_non_streaming(client, model):
    full = client.chat.completions.create(model=model, messages=MSG, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model=model, messages=MSG, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    parts, finish, usage, roles = [], None, None, []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            if ch.delta.content:
                parts.append(ch.delta.content)
            if ch.finish_reason:
                finish = ch.finish_reason
    assert roles == ["assistant"]
    assert "".join(parts) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_completions_streaming_and_not(client, model):
    full = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert full.object == "text_completion" and full.choices[0].text
    text = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert text == full.choices[0].text
    assert "Paris" in text


def test_stop_string(client, model):
    base = client.completions.create(model=model, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0)
    text = base.choices[0].text
    assert len(text) > 4, text
    stop = text[3:6] if text[3:6].strip() else text[2:5]
    cut = text[:text.index(stop)]
    r = client.completions.create(model=model, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0, stop=[stop, "zzzz"])
    assert r.choices[0].text == cut
    assert r.choices[0].finish_reason == "stop"
    s = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0, stop=stop, stream=True) if c.choices)
    assert s == cut


def test_seed_reproducible(client, model):
    kw = dict(model=model, messages=[{"role": "user", "content": "Write a word."}], max_tokens=10, temperature=1.0)
    a = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    assert a == b
    others = {client.chat.completions.create(seed=s, **kw).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds never changed the sample"


def test_chat_logprobs(client, model):
    r = client.chat.completions.create(model=model, messages=MSG, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        lps = [x.logprob for x in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert t.top_logprobs[0].token == t.token   # greedy picks the top token
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4


def test_completion_logprobs(client, model):
    r = client.completions.create(model=model, prompt="Hello", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens
    assert all(len(t) >= 1 for t in lp.top_logprobs)


def test_n_choices(client, model):
    r = client.chat.completions.create(model=model, messages=MSG, max_tokens=4, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content   # greedy: same


def test_errors_are_sdk_exceptions(client, model, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=MSG, temperature=7)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[], max_tokens=3)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MSG, max_tokens=3)
    bad = openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model, prompt="word " * 3000, max_tokens=4)


def test_chat_ignore_eos_ignores_the_templates_end_of_turn(client, model):
    """ignore_eos on a chat request also ignores the template's stop ids (<|im_end|>), so the
    answer runs to max_tokens (issue 16); without it the same request ends early."""
    msg = [{"role": "user", "content": "Hi"}]
    short = client.chat.completions.create(model=model, messages=msg, max_tokens=48, temperature=0)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 48
    r = client.chat.completions.create(model=model, messages=msg, max_tokens=48, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 48
