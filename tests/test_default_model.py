"""The bundled model tells whole stories (the default-model issue's targets), and so does
``tinystories PROMPT`` with a model whose context is shorter than a story."""

from __future__ import annotations

import json
import re

import pytest
from support.cli import cli
from tinystories import Generator
from tinystories.hub import cache

SENTENCE_END = re.compile(r"""[.!?]["')\]]*\s*$""")


def ends_on_a_sentence(text: str) -> bool:
    return bool(SENTENCE_END.search(text.replace("<unk>", "\n")))


def test_the_bundled_model_ends_its_stories():
    """100 samples as the issue counts them: temperature 0.8, top-p 0.9, seeds 1-100, no
    length limit (until BOS or the end of the context)."""
    g = Generator()
    model, tokenizer = cache.default_model()
    assert model.stat().st_size + tokenizer.stat().st_size <= 2 * 2**20
    assert g.config.version == 2 and g.config.seq_len >= 2048
    samples = g.samples("Once upon a time", 100, seed=1, temperature=0.8, top_p=0.9, max_batch=32)
    ended = [c for c in samples if c.finish_reason == "stop"]
    assert len(ended) >= 90, f"{len(ended)} of 100 stories ended by themselves"
    on_sentence = [c for c in ended if ends_on_a_sentence(c.text)]
    assert len(on_sentence) >= 85, f"{len(on_sentence)} of {len(ended)} on a sentence end"
    for c in ended:  # they ended before the context ran out, with BOS
        assert c.prompt_tokens + len(c.token_ids) < g.config.seq_len


@pytest.mark.parametrize("which", ["bundled", "model5000"])
def test_the_command_prints_a_whole_story(which, tok105):
    """Without -n the command goes on until the model ends the story: past a 256-token
    context (model5000) with a context shift."""
    files = [] if which == "bundled" else ["--model", str(tok105["model"]),
                                           "--tokenizer", str(tok105["tokenizer"])]  # fmt: skip
    ended = 0
    for seed in (1, 2, 3):
        result = cli("Once upon a time", "-s", str(seed), "--json", *files)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        if record["finish_reason"] == "stop":
            ended += 1
            assert ends_on_a_sentence(record["text"])
        if which == "model5000":
            assert record["tokens"] > 256 or record["finish_reason"] == "stop"
    assert ended >= 2
    # with -n, run.c's rule: at most the context, no shift unless asked
    short = cli("Once upon a time", "-s", "1", "-n", "300", "--json", *files)
    record = json.loads(short.stdout)
    if which == "model5000":
        assert record["tokens"] <= 256 - 5
