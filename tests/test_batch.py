"""Generator.generate_batch: many sequences per forward pass, same text as one at a time."""

from __future__ import annotations

import threading

import pytest
import tinystories
from tinystories import Generator

PROMPTS = ["Once upon a time", "Lily and her dog", "", "The cat sat on the mat.", "Tom"]


@pytest.fixture(scope="module")
def story(tok105):
    return Generator(tok105["model"], tok105["tokenizer"])


@pytest.mark.parametrize("max_batch", [1, 2, 32])
def test_batch_equals_one_at_a_time(story, max_batch):
    kwargs = dict(max_new_tokens=60, temperature=0.9, top_p=0.9)
    seeds = [11, 22, 33, 44, 55]
    got = story.generate_batch(PROMPTS, seed=seeds, max_batch=max_batch, **kwargs)
    assert got == [story.generate(p, seed=s, **kwargs) for p, s in zip(PROMPTS, seeds, strict=True)]


def test_one_seed_for_all(story):
    got = story.generate_batch(PROMPTS[:3], seed=5, temperature=1.0, max_new_tokens=30)
    assert got == [
        story.generate(p, seed=5, temperature=1.0, max_new_tokens=30) for p in PROMPTS[:3]
    ]


@pytest.mark.parametrize("kernels", tinystories.kernels())
def test_greedy_to_the_end_of_the_context(tok105, kernels):
    """Full-length greedy sequences, q80 and fp32, across slot reuse."""
    for key in ("model", "model_q80"):
        g = Generator(tok105[key], tok105["tokenizer"], kernels=kernels)
        prompts = ["Once upon a time", "One day", "Once upon a time"]
        got = g.generate_batch(prompts, temperature=0.0, max_batch=2)
        assert got[0] == got[2] == g.generate(prompts[0], temperature=0.0)
        assert got[1] == g.generate(prompts[1], temperature=0.0)


def test_many_prompts_few_slots_with_threads(tok105):
    g = Generator(tok105["model"], tok105["tokenizer"], n_threads=2)
    prompts = [f"Story {i}:" for i in range(40)]
    got = g.generate_batch(prompts, seed=list(range(1, 41)), max_new_tokens=12, max_batch=7)
    assert len(got) == 40
    for i in (0, 17, 39):
        assert got[i] == g.generate(prompts[i], seed=i + 1, max_new_tokens=12)


def test_empty_and_arguments(story):
    assert story.generate_batch([]) == []
    with pytest.raises(TypeError, match="sequence of str"):
        story.generate_batch("Once")
    with pytest.raises(ValueError, match="max_batch"):
        story.generate_batch(["a"], max_batch=0)
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        story.generate_batch(["a"], seed=[1, 2])
    with pytest.raises(ValueError, match="seed"):
        story.generate_batch(["a", "b"], seed=[1, -1])
    with pytest.raises(ValueError, match="temperature"):
        story.generate_batch(["a"], temperature=-1)


def test_concurrent_batches_share_the_generator(story):
    want = story.generate_batch(PROMPTS, seed=3, max_new_tokens=20)
    results = [None] * 3

    def work(i: int) -> None:
        results[i] = story.generate_batch(PROMPTS, seed=3, max_new_tokens=20)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [want] * 3


def _engine_batch(story, prompts, seeds, logprobs=None, **options):
    from tinystories.inference.sampling import SamplingParams, engine_options

    native = story.engine_batch(4)
    for prompt, seed in zip(prompts, seeds, strict=True):
        params = SamplingParams(**{"max_new_tokens": 40, "temperature": 0.9, **options}, seed=seed)
        ids, steps = story.prompt_steps(prompt, params)
        native.add(ids, steps, engine_options(params, logprobs))
    return native


def test_advance_gives_what_step_gives_many_tokens_at_a_time(story):
    """The server's call: several steps per call, the same tokens, bytes and ends."""
    prompts, seeds = PROMPTS, [1, 2, 3, 4, 5]
    stepped = _engine_batch(story, prompts, seeds, logprobs=2)
    by_step: dict[int, list] = {i: [] for i in range(len(prompts))}
    while True:
        events = stepped.step()
        if not events:
            break
        for native_id, token, piece, _, logprobs, finish in events:
            by_step[native_id].append((token, piece, logprobs, finish))
    advanced = _engine_batch(story, prompts, seeds, logprobs=2)
    by_advance: dict[int, list] = {i: [] for i in range(len(prompts))}
    calls = 0
    while True:
        results = advanced.advance(64, 1.0)
        if not results:
            break
        calls += 1
        for native_id, tokens, data, lengths, logprobs, finish in results:
            assert len(tokens) == len(lengths) == len(logprobs) and sum(lengths) == len(data)
            start = 0
            for token, length, lp in zip(tokens, lengths, logprobs, strict=True):
                by_advance[native_id].append((token, data[start : start + length], lp, 0))
                start += length
            if finish:
                by_advance[native_id].append((-1, b"", None, finish))
    assert by_advance == by_step
    assert advanced.token_ids == stepped.token_ids
    steps = max(len(events) for events in by_step.values())
    assert calls < steps / 2  # many steps per call


def test_advance_returns_when_a_request_starts_or_ends_or_is_interrupted(story):
    native = _engine_batch(story, ["Tom"], [7], max_new_tokens=50)
    first = native.advance(1000, 10.0)
    assert [len(tokens) for _, tokens, *_ in first] == [1]  # its first token: at once
    native.interrupt()  # before the call: it still returns after one step
    assert [len(tokens) for _, tokens, *_ in native.advance(1000, 10.0)] == [1]
    rest = native.advance(1000, 10.0)  # then on to the end, which returns too
    assert len(rest[0][1]) == 48 and rest[0][5] > 0
    assert native.advance(1000, 10.0) == []


def test_interrupt_from_another_thread_ends_a_long_advance(story):
    forever = dict(max_new_tokens=10**7, context_shift=True, stop_token_ids=[])
    native = _engine_batch(story, ["Tom"], [7], **forever)
    native.advance(1000, 10.0)  # the first token
    timer = threading.Timer(0.002, native.interrupt)
    timer.start()
    results = native.advance(10**9, 60.0)
    timer.join()
    assert results and not results[0][5]  # it returned, long before the sequence could end
