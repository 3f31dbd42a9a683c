"""Generation options (penalties, min_p, stop strings and tokens, logprobs, finish reasons,
the context shift, samples), each checked against references computed from
``Generator.logits`` (teacher-forced), in every entry point."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tinystories import Generator, SamplingParams, _core
from tinystories.formats.constants import BOS, EOS


@pytest.fixture(scope="module", params=["model", "model_q80"])
def story(request, tok105):
    return Generator(tok105[request.param], tok105["tokenizer"])


PROMPT = "Lily and Ben"


def teacher_forced(story, prompt, token_ids):
    """Logits before each generated token: row i is what token_ids[i] was drawn from."""
    prompt_ids = story.encode(prompt)
    logits = story.logits(prompt_ids + token_ids[:-1])
    return prompt_ids, logits[len(prompt_ids) - 1 :]


def penalized(row, history, n_prompt, repetition=1.0, presence=0.0, frequency=0.0):
    """Hugging Face's repetition penalty (every distinct token of the history), then
    OpenAI's presence/frequency penalties (the generated part), on float32 logits."""
    x = row.astype(np.float32).copy()
    generated = history[n_prompt:]
    for t in set(history):
        if repetition != 1.0:
            x[t] = x[t] / np.float32(repetition) if x[t] > 0 else x[t] * np.float32(repetition)
        count = generated.count(t)
        if count:
            x[t] -= np.float32(presence) + np.float32(count) * np.float32(frequency)
    return x


@pytest.mark.parametrize(
    "penalties",
    [
        dict(repetition_penalty=1.3),
        dict(repetition_penalty=0.8),
        dict(presence_penalty=1.5),
        dict(frequency_penalty=0.7, presence_penalty=-0.3),
        dict(repetition_penalty=1.2, presence_penalty=0.5, frequency_penalty=0.5),
    ],
)
def test_greedy_penalties_are_the_argmax_of_penalized_logits(story, penalties):
    c = story.complete(PROMPT, temperature=0, max_new_tokens=80, **penalties)
    plain = story.complete(PROMPT, temperature=0, max_new_tokens=80)
    assert c.token_ids != plain.token_ids  # the penalties change the story
    prompt_ids, rows = teacher_forced(story, PROMPT, c.token_ids)
    history = list(prompt_ids)
    for i, token in enumerate(c.token_ids):
        x = penalized(
            rows[i],
            history,
            len(prompt_ids),
            penalties.get("repetition_penalty", 1.0),
            penalties.get("presence_penalty", 0.0),
            penalties.get("frequency_penalty", 0.0),
        )
        assert token == int(np.argmax(x)), f"token {i}"
        history.append(token)


def test_min_p_keeps_tokens_near_the_top(story):
    min_p, temperature = 0.3, 1.5
    for seed in range(1, 4):
        c = story.complete(
            PROMPT, temperature=temperature, top_p=0, min_p=min_p, seed=seed, max_new_tokens=80
        )
        _, rows = teacher_forced(story, PROMPT, c.token_ids)
        for i, token in enumerate(c.token_ids):
            p = np.exp((rows[i] - rows[i].max()) / temperature)  # relative to the top token
            assert p[token] >= min_p * (1 - 1e-5), f"seed {seed} token {i}"
    # min_p = 1 is greedy at any temperature
    greedy = story.generate(PROMPT, temperature=0, max_new_tokens=60)
    assert story.generate(PROMPT, temperature=1.7, min_p=1.0, seed=3, max_new_tokens=60) == greedy


def test_logprobs_are_the_log_softmax_of_the_raw_logits(story):
    # penalties and temperature change the draw, not the reported logprobs
    c = story.complete(
        PROMPT, logprobs=4, temperature=1.3, repetition_penalty=1.2, seed=9, max_new_tokens=50
    )
    assert len(c.logprobs) == len(c.token_ids) == 50
    _, rows = teacher_forced(story, PROMPT, c.token_ids)
    for i, lp in enumerate(c.logprobs):
        x = rows[i].astype(np.float64)
        log_softmax = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
        assert lp.token_id == c.token_ids[i]
        assert lp.logprob == pytest.approx(log_softmax[lp.token_id], abs=1e-4)
        assert len(lp.top) == 4
        want = np.argsort(-x, kind="stable")[:4]
        assert [t for t, _ in lp.top] == [int(t) for t in want]
        for t, value in lp.top:
            assert value == pytest.approx(log_softmax[t], abs=1e-4)
    assert story.complete(PROMPT, max_new_tokens=5, seed=1).logprobs is None
    assert all(lp.top == () for lp in story.complete(PROMPT, logprobs=0, max_new_tokens=5).logprobs)
    with pytest.raises(ValueError, match="logprobs"):
        story.complete(PROMPT, logprobs=21)


def test_stop_strings_cut_the_text_and_stream_holds_back_only_a_possible_start(story):
    kwargs = dict(temperature=0.8, seed=4, max_new_tokens=150)
    full = story.complete(PROMPT, **kwargs)
    stop = full.text[40:44]
    first = full.text.find(stop)
    cut = story.complete(PROMPT, stop=stop, **kwargs)
    assert cut.text == full.text[:first] and cut.finish_reason == "stop"
    assert full.finish_reason in ("stop", "length")
    # token_ids keep the tokens that formed the stop string (tok105: one per character)
    assert cut.token_ids == full.token_ids[: first + len(stop)]
    assert story.generate(PROMPT, stop=[stop, "never there"], **kwargs) == cut.text
    assert "".join(story.stream(PROMPT, stop=stop, **kwargs)) == cut.text
    # a stop string whose start occurs but which never completes: after each token the
    # stream has shown the text so far less its longest end that begins the stop string,
    # and in the end everything
    teaser = full.text[40:43] + "\x00"
    plain = [text for _, text in story.start(PROMPT, **kwargs).tokens()]
    held_back = [text for _, text in story.start(PROMPT, stop=teaser, **kwargs).tokens()]
    so_far = shown = ""
    # held_back may end with one more piece: what was held when the text ended
    for k, (text, filtered) in enumerate(zip(plain, held_back, strict=False)):
        so_far, shown = so_far + text, shown + filtered
        end = max((n for n in range(len(teaser)) if n and so_far.endswith(teaser[:n])), default=0)
        assert shown == so_far[: len(so_far) - end], f"token {k}"
    assert shown + "".join(held_back[len(plain) :]) == full.text
    assert any(len(b) < len(a) for a, b in zip(plain, held_back, strict=False))  # some held
    with pytest.raises(ValueError, match="empty"):
        story.generate(PROMPT, stop="")
    with pytest.raises(TypeError, match="stop"):
        story.generate(PROMPT, stop=[1])


def test_stop_token_ids(story):
    plain = story.complete(PROMPT, temperature=0, max_new_tokens=100)
    token = plain.token_ids[20]
    first = plain.token_ids.index(token)
    c = story.complete(PROMPT, temperature=0, max_new_tokens=100, stop_token_ids=[BOS, token])
    assert c.token_ids == plain.token_ids[:first] and c.finish_reason == "stop"
    assert c.text == story.decode(plain.token_ids[:first])
    # without BOS among them, a sampled BOS no longer ends the story
    hot = dict(temperature=1.5, top_p=1.0)  # hot enough to sample BOS early
    ended = [c for seed in range(1, 30) if (c := story.complete("Tom", seed=seed, **hot))]
    ended = [c for c in ended if c.finish_reason == "stop"]
    assert ended, "some story ends with BOS before the context does"
    default = ended[0]
    longer = story.complete("Tom", seed=default.seed, stop_token_ids=[EOS], **hot)
    assert longer.token_ids[: len(default.token_ids)] == default.token_ids
    assert len(longer.token_ids) > len(default.token_ids)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        story.generate(PROMPT, stop_token_ids=[story.config.vocab_size])


def test_finish_reasons_and_counts(story):
    ids = story.encode(PROMPT)
    c = story.complete(PROMPT, max_new_tokens=7, seed=1)
    assert (c.finish_reason, len(c.token_ids), c.prompt_tokens) == ("length", 7, len(ids))
    assert c.seed == 1 and c.tokens_per_s > 0
    assert c.text == story.generate(PROMPT, max_new_tokens=7, seed=1)
    # the end of the context is "length" too
    c = story.complete(PROMPT, seed=1, stop_token_ids=[])
    assert c.finish_reason == "length"
    assert len(c.token_ids) == story.config.seq_len - len(ids) + 1


def test_context_shift_goes_past_the_context_as_a_fresh_window_predicts(story):
    seq_len = story.config.seq_len
    prompt_ids = story.encode(PROMPT)
    new = 2 * seq_len + 50
    c = story.complete(
        PROMPT, temperature=0, max_new_tokens=new, context_shift=True, stop_token_ids=[]
    )
    assert len(c.token_ids) == new and c.finish_reason == "length"
    # Reference: the documented rule. When position seq_len is to be evaluated, keep BOS
    # and the most recent (seq_len - 1) // 2 tokens; re-evaluate; go on.
    tokens = prompt_ids + c.token_ids
    recent = (seq_len - 1) // 2
    start = 1  # the window is BOS + tokens[start : pos + 1]
    checked = 0
    for pos in range(len(prompt_ids) - 1, len(tokens) - 1):
        shifted = 1 + pos - start >= seq_len
        if shifted:
            start = pos - recent + 1
        # every position just after a shift, and a sample of the others past the context
        if shifted or (pos >= seq_len and pos % 13 == 0):
            window = tokens[:1] + tokens[start : pos + 1]
            want = int(np.argmax(story.logits(window)[-1]))
            assert tokens[pos + 1] == want, f"position {pos}"
            checked += 1
    assert checked > 20
    # sampled, it is deterministic for a seed
    kwargs = dict(temperature=1.0, seed=3, max_new_tokens=new, context_shift=True)
    a = story.complete(PROMPT, stop_token_ids=[], **kwargs)
    assert a.token_ids == story.complete(PROMPT, stop_token_ids=[], **kwargs).token_ids
    assert len(a.token_ids) == new
    with pytest.raises(ValueError, match="max_new_tokens"):
        story.generate(PROMPT, context_shift=True)


ALL_OPTIONS = dict(
    temperature=0.9,
    top_k=30,
    min_p=0.02,
    repetition_penalty=1.1,
    presence_penalty=0.2,
    frequency_penalty=0.1,
    max_new_tokens=300,
    context_shift=True,
    stop=["zz", "Tom."],
    stop_token_ids=[BOS, EOS],
)


def test_every_entry_point_gives_the_same_result(story):
    prompts = ["Tom", "Lily", "Once upon a time"]
    seeds = [3, 4, 5]
    want = [
        story.complete(p, seed=s, logprobs=2, **ALL_OPTIONS)
        for p, s in zip(prompts, seeds, strict=True)
    ]
    got = story.complete_batch(prompts, seed=seeds, logprobs=2, max_batch=2, **ALL_OPTIONS)
    for w, g in zip(want, got, strict=True):
        assert (g.text, g.token_ids, g.finish_reason, g.logprobs) == (
            w.text,
            w.token_ids,
            w.finish_reason,
            w.logprobs,
        )
    texts = story.generate_batch(prompts, seed=seeds, **ALL_OPTIONS)
    assert texts == [w.text for w in want]
    for p, s, w in zip(prompts, seeds, want, strict=True):
        assert story.generate(p, seed=s, **ALL_OPTIONS) == w.text
        assert "".join(story.stream(p, seed=s, **ALL_OPTIONS)) == w.text
    # samples: seeds seed, seed + 1, ...
    samples = story.samples("Tom", 3, seed=3, **ALL_OPTIONS)
    assert [s.seed for s in samples] == [3, 4, 5]
    assert samples[0].text == want[0].text
    assert samples[1].text == story.generate("Tom", seed=4, **ALL_OPTIONS)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        story.samples("Tom", 3, seed=2**64 - 2)


def test_cli_passes_every_option(tok105):
    flags = [
        "--temperature", "0.9", "--top-k", "30", "--min-p", "0.02",
        "--repetition-penalty", "1.1", "--presence-penalty", "0.2",
        "--frequency-penalty", "0.1", "-n", "300", "--context-shift",
        "--stop", "zz", "--stop", "Tom.", "--stop-token-id", str(BOS),
        "--stop-token-id", str(EOS), "-s", "3", "--raw",
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "tinystories", "generate", "Tom", *flags,
         "--model", str(tok105["model"]), "--tokenizer", str(tok105["tokenizer"])],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    g = Generator(tok105["model"], tok105["tokenizer"])
    assert out.rstrip("\n") == "Tom" + g.generate("Tom", seed=3, **ALL_OPTIONS)


def test_seed_zero_is_a_seed(story):
    zero = story.generate(PROMPT, seed=0, max_new_tokens=60)
    assert zero == story.generate(PROMPT, seed=0, max_new_tokens=60)
    assert zero != story.generate(PROMPT, seed=1, max_new_tokens=60)
    assert zero == story.generate(PROMPT, seed=_core.SEED_ZERO_STATE, max_new_tokens=60)
    assert story.generate(PROMPT, seed=2**64 - 1, max_new_tokens=5)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(temperature="1"), TypeError, "temperature"),
        (dict(temperature=True), TypeError, "temperature"),
        (dict(top_p="0.5"), TypeError, "top_p"),
        (dict(top_k=2**70), ValueError, "top_k"),
        (dict(top_k=True), TypeError, "top_k"),
        (dict(min_p=1.5), ValueError, "min_p"),
        (dict(min_p=False), TypeError, "min_p"),
        (dict(repetition_penalty=0), ValueError, "repetition_penalty"),
        (dict(presence_penalty=2.5), ValueError, "presence_penalty"),
        (dict(frequency_penalty=float("nan")), ValueError, "frequency_penalty"),
        (dict(max_new_tokens=2**40), ValueError, "max_new_tokens"),
        (dict(seed=True), TypeError, "seed"),
        (dict(seed=1.0), TypeError, "seed"),
        (dict(context_shift=1), TypeError, "context_shift"),
        (dict(stop_token_ids=1), TypeError, "stop_token_ids"),
        (dict(stop_token_ids=[-1]), ValueError, "stop_token_ids"),
    ],
)
def test_bad_options_name_themselves(kwargs, error, name):
    with pytest.raises(error, match=name):
        SamplingParams(**kwargs)
