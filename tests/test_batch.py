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
