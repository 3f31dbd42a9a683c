"""Data stage: downloads from a local HTTP server, corpus formats, pretokenized shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from support.http_mirror import Mirror
from support.stories import make_corpus, write_txt
from tinystories.formats.corpus import DataError, load_documents, read_documents
from tinystories.hub.download import DownloadError, download
from tinystories.training.config import ConfigError
from tinystories.training.shards import load_shards, pretokenize
from tinystories.training.vocab import corpus_characters, train_vocab

ARCHIVE = "TinyStories_small.tar.gz"


def archive_server(payload: bytes) -> Mirror:
    """The loopback mirror serving one archive; its URL is ``server.url + "/" + ARCHIVE``."""
    return Mirror({ARCHIVE: payload})


def json_shards_archive(stories: list[str], n_shards: int = 3) -> bytes:
    """A small TinyStories_all_data.tar.gz: JSON shards of {"story": ...} records."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i in range(n_shards):
            records = [
                {"story": s, "instruction": {}, "source": "test"} for s in stories[i::n_shards]
            ]
            blob = json.dumps(records).encode()
            info = tarfile.TarInfo(f"data{i:02d}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stories():
    return make_corpus(60, seed=5)


@pytest.fixture(scope="module")
def payload(stories):
    return json_shards_archive(stories)


def test_download_whole(payload, tmp_path):
    with archive_server(payload) as server:
        path = download(f"{server.url}/{ARCHIVE}", tmp_path / "a.tar.gz", progress=False)
    assert path.read_bytes() == payload
    assert not (tmp_path / "a.tar.gz.part").exists()


def test_download_truncated_then_resumed(payload, tmp_path):
    dest = tmp_path / "a.tar.gz"
    with archive_server(payload) as server:
        server.truncate[ARCHIVE] = 1000
        with pytest.raises(DownloadError, match=f"got 1000 of {len(payload)} bytes"):
            download(f"{server.url}/{ARCHIVE}", dest, progress=False, chunk_size=256)
        assert (tmp_path / "a.tar.gz.part").stat().st_size == 1000
        assert not dest.exists()
        path = download(
            f"{server.url}/{ARCHIVE}", dest, progress=False
        )  # resumes with a Range request
        assert [rng for _, rng in server.requests] == [None, "bytes=1000-"]
    assert path.read_bytes() == payload


def test_download_server_without_range_restarts(payload, tmp_path):
    (tmp_path / "a.tar.gz.part").write_bytes(b"garbage that is not the start of the file")
    with archive_server(payload) as server:
        server.ignore_range = True
        path = download(f"{server.url}/{ARCHIVE}", tmp_path / "a.tar.gz", progress=False)
    assert path.read_bytes() == payload


def test_download_size_check(payload, tmp_path):
    with archive_server(payload) as server:
        with pytest.raises(DownloadError, match="expected 5"):
            download(
                f"{server.url}/{ARCHIVE}", tmp_path / "a.tar.gz", expected_size=5, progress=False
            )
        with pytest.raises(DownloadError, match="HTTP 416|expected"):
            (tmp_path / "b.tar.gz.part").write_bytes(payload + b"extra")
            download(f"{server.url}/{ARCHIVE}", tmp_path / "b.tar.gz", progress=False)


def test_download_cli_and_unpack(payload, stories, tmp_path):
    from tinystories.cli.data import main as data_main

    with archive_server(payload) as server:
        assert data_main(["download", f"{server.url}/{ARCHIVE}", "--dir", str(tmp_path)]) == 0
    unpacked = tmp_path / "TinyStories_small"
    assert sorted(p.name for p in unpacked.iterdir()) == [
        "data00.json",
        "data01.json",
        "data02.json",
    ]
    assert sorted(read_documents(unpacked)) == sorted(s.strip() for s in stories)


def test_corpus_formats_agree(payload, stories, tmp_path):
    write_txt(tmp_path / "s.txt", stories)
    (tmp_path / "s.tar.gz").write_bytes(payload)
    from_txt = list(read_documents(tmp_path / "s.txt"))
    assert from_txt == [s.strip() for s in stories]
    assert sorted(read_documents(tmp_path / "s.tar.gz")) == sorted(from_txt)
    assert "\n" in from_txt[0] or any("\n" in s for s in from_txt)  # paragraphs are kept


def test_bad_json(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_documents(tmp_path / "x.json")


def test_pretokenize_parallel_equals_serial(stories, tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    docs = [s.strip() for s in stories]
    model, tok_bin = train_vocab(docs, 64, tmp_path)
    assert model.name == "tok64.model" and tok_bin.name == "tok64.bin"
    serial = pretokenize(
        docs, model, tmp_path / "serial", "train", workers=1, docs_per_shard=25, progress=False
    )
    parallel = pretokenize(
        docs, model, tmp_path / "parallel", "train", workers=2, docs_per_shard=25, progress=False
    )
    assert len(parallel.paths) == 3
    a = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in serial.paths])
    b = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in parallel.paths])
    np.testing.assert_array_equal(a, b)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    expected = [t for doc in docs for t in [1] + sp.encode(doc)]
    np.testing.assert_array_equal(a, expected)
    assert load_shards(tmp_path / "serial", "train", model) is not None
    assert load_shards(tmp_path / "serial", "val", model) is None


def test_vocab_byte_fallback_rule(stories, tmp_path):
    pytest.importorskip("sentencepiece")
    docs = [s.strip() for s in stories]
    n_chars = len(corpus_characters(docs))
    with pytest.raises(ConfigError, match=f"need at least {n_chars + 3 + 256}"):
        train_vocab(docs, 100, tmp_path, byte_fallback=True)
