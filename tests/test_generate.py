"""Generation behaviour: stream == generate, lengths, seeds, sampling options, threads."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import shutil
import threading
import weakref

import numpy as np
import pytest
from tinystories import Generator, SamplingParams


@pytest.fixture(scope="module")
def story(tok105):
    return Generator(tok105["model"], tok105["tokenizer"])


def test_config_and_repr(story):
    c = story.config
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads) == (128, 352, 5, 8, 4)
    assert (c.vocab_size, c.seq_len, c.shared_classifier, c.version) == (105, 256, True, 0)
    assert "model5000.bin" in repr(story)
    assert story.tokenizer.vocab_size == 105


def test_stream_equals_generate(story):
    for seed in (1, 2, 3):
        kwargs = dict(temperature=0.9, top_p=0.95, seed=seed, max_new_tokens=80)
        pieces = list(story.stream("The dog", **kwargs))
        assert len(pieces) > 10
        assert "".join(pieces) == story.generate("The dog", **kwargs)


def test_same_seed_same_text_different_seed_different_text(story):
    a = story.generate("Tom", temperature=1.0, seed=11, max_new_tokens=60)
    assert a == story.generate("Tom", temperature=1.0, seed=11, max_new_tokens=60)
    assert a != story.generate("Tom", temperature=1.0, seed=12, max_new_tokens=60)


def test_max_new_tokens_counts_sampled_tokens(story):
    # tok105 pieces are single characters, and the first sampled piece
    # follows the prompt, so n tokens print n characters (<unk> prints 5).
    text = story.generate("Once upon a time", temperature=0, max_new_tokens=30)
    assert len(text) == 30
    assert story.generate("Once upon a time", temperature=0, max_new_tokens=0) == ""
    full = story.generate("Once upon a time", temperature=0)
    assert full.startswith(text)


def test_greedy_is_argmax_of_logits(story):
    prompt_ids = story.encode("Lily saw a")
    best = int(np.argmax(story.logits(prompt_ids)[-1]))
    text = story.generate("Lily saw a", temperature=0, max_new_tokens=1)
    assert text == story.tokenizer.piece(best).decode()


def test_top_k_one_is_greedy(story):
    greedy = story.generate("Ben", temperature=0, max_new_tokens=50)
    assert (
        story.generate("Ben", temperature=1.5, top_k=1, top_p=0, seed=5, max_new_tokens=50)
        == greedy
    )


def ranks_of_sampled_tokens(story, prompt, text):
    """Rank (0 = most likely) of every sampled token under teacher forcing."""
    ids = story.encode(prompt + text)  # tok105: one id per character
    n_prompt = len(story.encode(prompt))
    logits = story.logits(ids[:-1])
    order = np.argsort(-logits, axis=1)
    return [int(np.where(order[i] == ids[i + 1])[0][0]) for i in range(n_prompt - 1, len(ids) - 1)]


def test_top_k_restricts_to_the_k_most_likely(story):
    ranks_k, ranks_all = [], []
    for seed in range(1, 6):
        kwargs = dict(temperature=2.0, top_p=1.0, seed=seed, max_new_tokens=60)
        text_k = story.generate("Ben", top_k=2, **kwargs)
        text_all = story.generate("Ben", **kwargs)
        if "<unk>" not in text_k:
            ranks_k += ranks_of_sampled_tokens(story, "Ben", text_k)
        if "<unk>" not in text_all:
            ranks_all += ranks_of_sampled_tokens(story, "Ben", text_all)
    assert len(ranks_k) > 100 and max(ranks_k) <= 1
    assert max(ranks_all) > 1  # without top-k, temperature 2 does pick unlikely tokens


def test_top_k_is_the_k_largest_logits_ties_to_the_lower_index():
    """top_k=k draws exactly what the sampler draws without top-k from logits where all but
    the k largest are -inf (of equal logits, the lower indices stay), seed for seed: on a
    32,000-token vocabulary with ties at the cut, and on nearly flat random logits."""
    from tinystories import _core
    from tinystories.inference.sampling import engine_options

    rng = np.random.default_rng(0)
    tied = np.zeros(32000, dtype=np.float32)
    tied[[7, 100, 31999]] = 1.0  # top 5: these three, then the lowest of the equal rest: 0, 1
    flat = rng.normal(0, 0.05, 32000).astype(np.float32)
    flat[rng.integers(0, 32000, 500)] = flat[12345]  # equal values around one of them
    for logits, k in ((tied, 5), (flat, 40), (flat, 1000)):
        order = np.argsort(-logits, kind="stable")  # descending, ties in index order
        masked = np.full_like(logits, -np.inf)
        masked[order[:k]] = logits[order[:k]]
        for seed in range(1, 41):
            for top_p in (0.0, 0.9):
                options = dict(temperature=1.0, top_p=top_p, seed=seed)
                with_k = _core.Sampler(32000, engine_options(SamplingParams(top_k=k, **options)))
                without = _core.Sampler(32000, engine_options(SamplingParams(**options)))
                assert with_k.sample(logits) == without.sample(masked), (k, seed, top_p)
    kept = {_core.Sampler(32000, engine_options(SamplingParams(top_k=5, top_p=0.0, seed=s)))
            .sample(tied) for s in range(1, 200)}  # fmt: skip
    assert kept == {0, 1, 7, 100, 31999}


def test_unseeded_generations_differ(story):
    outputs = {story.generate("Sam", temperature=1.0, max_new_tokens=40) for _ in range(3)}
    assert len(outputs) > 1


def test_threads_share_one_generator(story):
    seeds = list(range(1, 9))
    expected = {
        s: story.generate("A bird", temperature=0.8, seed=s, max_new_tokens=100) for s in seeds
    }
    results = {}

    def work(seed):
        results[seed] = story.generate("A bird", temperature=0.8, seed=seed, max_new_tokens=100)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_generator_can_be_dropped_while_streaming(tok105):
    generator = Generator(tok105["model"], tok105["tokenizer"])
    stream = generator.stream("Once", temperature=0, max_new_tokens=50)
    first = next(stream)
    del generator
    rest = "".join(stream)
    assert len(first + rest) == 50


def test_close_and_with_release_the_model(tok105, tmp_path):
    model = shutil.copy(tok105["model"], tmp_path / "model.bin")  # no other test's Generators
    with Generator(model, tok105["tokenizer"]) as generator:
        text = generator.generate("Once", temperature=0, max_new_tokens=10)
        other = Generator(model, tok105["tokenizer"])  # shares the loaded model
        loaded = weakref.ref(generator._model)
    assert generator.closed and not other.closed
    for use in (
        lambda: generator.generate("Once"),
        lambda: generator.stream("Once"),
        lambda: generator.generate_batch(["Once"]),
        lambda: generator.logits([1]),
        lambda: pickle.dumps(generator),
        lambda: generator.__enter__(),
    ):
        with pytest.raises(ValueError, match="^generator is closed$"):
            use()
    generator.close()  # again: nothing to do
    assert other.generate("Once", temperature=0, max_new_tokens=10) == text
    assert loaded() is not None, "closing drops one Generator's hold only"
    other.close()
    gc.collect()
    assert loaded() is None, "the last one to close frees the model"


def test_generator_pickles_and_works_in_a_spawned_pool(tok105):
    """A Generator pickles as its paths and options and loads them again, so a process
    pool's workers generate exactly what it does for a seed."""
    generator = Generator(tok105["model"], tok105["tokenizer"], n_threads=1, kernels="scalar")
    copy = pickle.loads(pickle.dumps(generator))
    assert (copy.model_path, copy.tokenizer.path) == (
        generator.model_path,
        generator.tokenizer.path,
    )
    assert (copy.n_threads, copy.kernels, copy.config) == (1, "scalar", generator.config)
    options = {"temperature": 0.8, "max_new_tokens": 40}
    expected = [generator.generate("Once upon a time", seed=seed, **options) for seed in (1, 2)]
    assert copy.generate("Once upon a time", seed=1, **options) == expected[0]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        jobs = [
            pool.apply_async(generator.generate, ("Once upon a time",), {"seed": seed, **options})
            for seed in (1, 2)
        ]
        assert [job.get(timeout=120) for job in jobs] == expected
    quantized = Generator(tok105["model"], tok105["tokenizer"], quantize="q8_0")
    assert pickle.loads(pickle.dumps(quantized)).generate("Tom", seed=3, **options) == (
        quantized.generate("Tom", seed=3, **options)
    )


def test_q80_and_fp32_agree_on_config(tok105):
    q = Generator(tok105["model_q80"], tok105["tokenizer"])
    assert q.config.version == 2 and q.config.group_size == 64
    assert q.generate("Once upon a time", temperature=0, max_new_tokens=20).startswith(",")


def test_max_new_tokens_zero_with_empty_prompt_makes_nothing(story):
    assert story.generate("", max_new_tokens=0, seed=3) == ""
    assert list(story.stream("", max_new_tokens=0, seed=3)) == []
    assert story.generate_batch(["", "Once"], max_new_tokens=0, seed=3) == ["", ""]
    # the first token after BOS is the space piece, which run.c prints as nothing
    assert story.generate("", temperature=0, max_new_tokens=1) == ""
    assert story.generate("", temperature=0, max_new_tokens=2) == "O"


def test_sampling_params_are_one_validated_value(story):
    params = SamplingParams(temperature=0.8, seed=np.uint64(42), top_k=np.int64(5))
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (0.8, 0.9, 5, 42)
    assert type(params.seed) is int and type(params.top_k) is int
    assert SamplingParams() == SamplingParams(
        max_new_tokens=None, temperature=1.0, top_p=0.9, top_k=0, seed=None
    )
    with pytest.raises(AttributeError):
        params.temperature = 1.0  # frozen
    for bad, error in [
        (dict(temperature=-1), ValueError),
        (dict(top_p=1.5), ValueError),
        (dict(top_k=-1), ValueError),
        (dict(top_k=1.5), TypeError),
        (dict(seed=-1), ValueError),
        (dict(seed=2**64), ValueError),
        (dict(max_new_tokens=-1), ValueError),
        (dict(max_new_tokens=True), TypeError),
    ]:
        with pytest.raises(error):
            SamplingParams(**bad)
    with pytest.raises(TypeError, match="top_q"):
        story.generate("Tom", top_q=0.5)
    # a SamplingParams, overridden by keyword arguments, means what the keywords mean
    text = story.generate("Tom", temperature=0.7, seed=5, max_new_tokens=30)
    assert (
        story.generate("Tom", sampling=SamplingParams(temperature=0.7, seed=5, max_new_tokens=30))
        == text
    )
    assert (
        story.generate("Tom", sampling=params, temperature=0.7, seed=5, top_k=0, max_new_tokens=30)
        == text
    )


def test_start_is_what_stream_and_generate_run(story):
    kwargs = dict(temperature=0.9, seed=3, max_new_tokens=40)
    generation = story.start("Lily", **kwargs)
    events = list(generation.tokens())
    assert all(isinstance(token, int) and isinstance(text, str) for token, text in events)
    assert "".join(text for _, text in events) == story.generate("Lily", **kwargs)
    assert generation.stats["n_generated"] == sum(1 for token, _ in events if token >= 0)
    assert generation.sampling.seed == 3
    with pytest.raises(ValueError, match="temperature"):
        story.start("Lily", temperature=-1.0)  # checked before anything runs
