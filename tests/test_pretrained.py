"""from_pretrained and `tinystories download` against a loopback HTTP mirror; the bundled model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tinystories
from support.cli import cli
from support.files import synthetic_vocab
from support.http_mirror import Mirror
from tinystories import Generator
from tinystories.cli import main as cli_main
from tinystories.formats.llama2c import ModelConfig, random_weights, write_model
from tinystories.formats.tokenizer_bin import write_tokenizer
from tinystories.hub import cache, registry

MODEL_PATH = "tinyllamas/stories260K/stories260K.bin"
TOKENIZER_PATH = "tinyllamas/stories260K/tok512.bin"


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> dict[str, bytes]:
    """A random llama2.c model and tokenizer, served as stories260K (whose size is unrecorded)."""
    root = tmp_path_factory.mktemp("mirror_files")
    config = ModelConfig(
        dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=32
    )
    model = write_model(root / "m.bin", config, random_weights(config, seed=1), version=0)
    pieces, scores = synthetic_vocab(64, seed=1)
    tokenizer = write_tokenizer(root / "t.bin", pieces, scores)
    return {MODEL_PATH: model.read_bytes(), TOKENIZER_PATH: tokenizer.read_bytes()}


@pytest.fixture
def mirror(small_model, monkeypatch, tmp_path):
    with Mirror(dict(small_model)) as server:
        monkeypatch.setenv("TINYSTORIES_MIRROR", server.url)
        monkeypatch.setenv("TINYSTORIES_CACHE", str(tmp_path / "cache"))
        yield server


def test_full_download_then_cache_hit(mirror, small_model, tmp_path):
    g = Generator.from_pretrained("stories260K", progress=False)
    cache = tmp_path / "cache"
    assert (cache / MODEL_PATH).read_bytes() == small_model[MODEL_PATH]
    assert (cache / TOKENIZER_PATH).read_bytes() == small_model[TOKENIZER_PATH]
    assert Path(g.model_path) == cache / MODEL_PATH
    assert g.config.vocab_size == 64
    text = g.generate("", max_new_tokens=5, seed=1)
    assert isinstance(text, str)
    assert sorted(p for p, _ in mirror.requests) == sorted([MODEL_PATH, TOKENIZER_PATH])
    assert not list(cache.rglob("*.part"))

    mirror.requests.clear()  # the second time: from the cache, no request
    again = Generator.from_pretrained("stories260K", progress=False, n_threads=1)
    assert mirror.requests == [] and again.n_threads == 1


def test_truncated_transfer_then_resume(mirror, small_model, tmp_path):
    size = len(small_model[MODEL_PATH])
    mirror.truncate[MODEL_PATH] = 1000
    with pytest.raises(cache.PretrainedError, match=f"got 1000 of {size} bytes.*resume"):
        Generator.from_pretrained("stories260K", progress=False)
    part = tmp_path / "cache" / (MODEL_PATH + ".part")
    assert part.stat().st_size == 1000
    assert not (tmp_path / "cache" / MODEL_PATH).exists()  # only complete files get the name

    mirror.requests.clear()
    Generator.from_pretrained("stories260K", progress=False)
    assert (MODEL_PATH, "bytes=1000-") in mirror.requests  # resumed, not restarted
    assert (tmp_path / "cache" / MODEL_PATH).read_bytes() == small_model[MODEL_PATH]
    assert not part.exists()


def test_404_is_a_clear_error(mirror, tmp_path):
    del mirror.files[TOKENIZER_PATH]
    with pytest.raises(cache.PretrainedError, match=r"tok512\.bin: HTTP 404") as info:
        Generator.from_pretrained("stories260K", progress=False)
    assert isinstance(info.value, OSError) and not isinstance(info.value, ValueError)
    assert not (tmp_path / "cache" / TOKENIZER_PATH).exists()


def test_offline_miss_then_hit(mirror, tmp_path):
    with pytest.raises(cache.PretrainedError, match="offline mode.*missing.*stories260K.bin"):
        Generator.from_pretrained("stories260K", offline=True)
    assert mirror.requests == []  # offline never touches the network

    cache.fetch("stories260K", progress=False)
    mirror.requests.clear()
    g = Generator.from_pretrained("stories260K", offline=True)
    assert mirror.requests == [] and g.config.vocab_size == 64


def test_corrupt_cached_file_is_detected(mirror, small_model, tmp_path):
    cache.fetch("stories260K", progress=False)
    cached = tmp_path / "cache" / MODEL_PATH
    cached.write_bytes(small_model[MODEL_PATH][:-4])  # a truncated copy
    with pytest.raises(cache.PretrainedError, match="corrupt"):
        Generator.from_pretrained("stories260K", offline=True)
    mirror.requests.clear()
    Generator.from_pretrained("stories260K", progress=False)  # online: downloaded again
    assert [p for p, _ in mirror.requests] == [MODEL_PATH]
    assert cached.read_bytes() == small_model[MODEL_PATH]


def test_invalid_download_is_never_cached(mirror, tmp_path):
    mirror.files[MODEL_PATH] = b"not a model" * 100  # right transfer, wrong content
    with pytest.raises(cache.PretrainedError, match="not valid"):
        Generator.from_pretrained("stories260K", progress=False)
    assert not (tmp_path / "cache" / MODEL_PATH).exists()
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_recorded_size_is_enforced(mirror, small_model, tmp_path):
    # stories15M has a recorded size (60,816,028 bytes): a mirror serving other bytes is refused
    mirror.files["tinyllamas/stories15M.bin"] = small_model[MODEL_PATH]
    with pytest.raises(cache.PretrainedError, match="expected 60816028"):
        Generator.from_pretrained("stories15M", progress=False)
    assert not (tmp_path / "cache" / "tinyllamas" / "stories15M.bin").exists()


def test_registry_entries():
    for name, entry in registry.REGISTRY.items():
        assert entry.name == name and entry.tokenizer.kind == "tokenizer"
        for f in entry.files:
            assert f.url.startswith("https://") and f.url.endswith(f.path.rsplit("/", 1)[-1])
    sizes = {n: e.model.size for n, e in registry.REGISTRY.items() if e.model}
    assert sizes["stories110M"] == 438_381_596
    # a bad name is a bad argument (ValueError) and still a PretrainedError (an OSError)
    with pytest.raises(ValueError, match="unknown pretrained model 'nope'") as info:
        Generator.from_pretrained("nope")
    assert isinstance(info.value, tinystories.PretrainedError) and isinstance(info.value, OSError)
    assert type(info.value) is tinystories.UnknownModelError
    with pytest.raises(ValueError, match="vocabulary without a model") as info:
        Generator.from_pretrained("tok105")
    assert isinstance(info.value, tinystories.PretrainedError)


def test_cache_dir_argument_wins(mirror, tmp_path):
    g = Generator.from_pretrained("stories260K", cache_dir=tmp_path / "mine", progress=False)
    assert Path(g.model_path) == tmp_path / "mine" / MODEL_PATH
    assert not (tmp_path / "cache").exists()


def test_download_command(mirror, tmp_path, capsys):
    assert cli_main(["download", "stories260K", "--no-progress"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "cache" / MODEL_PATH), str(tmp_path / "cache" / TOKENIZER_PATH)]
    assert cli_main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "stories260K" in listing and "[cached]" in listing and "stories110M" in listing
    assert cli_main(["download", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinystories: error: unknown pretrained model") and err.count("\n") == 1
    assert cli_main(["download", "default"]) == 0  # the bundled model: its paths, no download
    done = capsys.readouterr()
    assert done.err == "default is the bundled model: it needs no download\n"
    assert done.out.split() == [str(path) for path in cache.default_model()]
    assert not (tmp_path / "cache" / "default").exists()


# ------------------------------------------------------------------ the bundled model


def test_bundled_default_model():
    model, tokenizer = cache.default_model()
    assert model.stat().st_size + tokenizer.stat().st_size <= 4 * 2**20
    g = Generator()
    assert g.config.vocab_size == 105 and g.config.version == 2
    assert Path(g.model_path) == model
    assert Generator.from_pretrained("default").model_path == g.model_path
    assert len(g.generate("Once upon a time", temperature=0, max_new_tokens=30)) > 20
    with pytest.raises(ValueError, match="both"):
        Generator(model)


def test_cli_default_command_uses_bundled_model():
    result = cli("Once upon a time", "-t", "0", "-n", "40")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time") and len(result.stdout) > 40
    assert result.stderr == ""  # no progress line when stderr is not a terminal
    explicit = cli("generate", "Once upon a time", "-t", "0", "-n", "40")
    assert explicit.stdout == result.stdout


def test_cli_json_and_samples():
    result = cli("Lily", "--json", "--samples", "2", "-s", "7", "-n", "12")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seed"] for r in records] == [7, 8]
    for r in records:
        assert r["tokens"] == 12 and r["tokens_per_s"] > 0 and r["model"] == "default"
        assert r["finish_reason"] == "length"
        assert r["prompt"] == "Lily" and isinstance(r["text"], str)
    g = Generator()
    assert records[0]["text"] == g.generate("Lily", max_new_tokens=12, seed=7).replace(
        "<unk>", "\n\n"
    )


def test_unk_rendering_depends_on_the_vocabulary(tok105, tmp_path):
    from tinystories import Tokenizer

    assert not Tokenizer(tok105["tokenizer"]).has_newline()  # tok105: <unk> ends paragraphs
    pieces, scores = synthetic_vocab(64)
    assert Tokenizer(write_tokenizer(tmp_path / "t.bin", pieces, scores)).has_newline()


def test_cli_help_version_and_errors():
    assert cli("--version").stdout.startswith("tinystories ")
    top = cli("--help")
    assert top.returncode == 0 and "examples:" in top.stdout
    for command in ("generate", "download", "train", "data", "export", "eval", "bench", "volume"):
        assert command in top.stdout
        sub = cli(command, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout, (command, sub.stderr)
    bad = cli("generate", "x", "--model", "missing.bin", "--tokenizer", "missing.tok")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("tinystories: error: ")
    debug = cli("--debug", "generate", "x", "--model", "missing.bin", "--tokenizer", "m.tok")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    after = cli("generate", "x", "--model", "missing.bin", "--tokenizer", "m.tok", "--debug")
    assert after.returncode == 1 and "Traceback" in after.stderr


def test_eval_without_model_uses_bundled(tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text("Once upon a time there was a cat.\n<|endoftext|>\nTom ran home.\n")
    result = subprocess.run(
        [sys.executable, "-m", "tinystories.eval", "--data", str(data), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 documents" in result.stdout and "loss" in result.stdout
