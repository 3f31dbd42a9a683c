"""Data stage: downloads from a local HTTP server, corpus formats, pretokenized shards."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from stories import make_corpus, write_txt
from tinystories.training import data


class ArchiveServer:
    """http.server on 127.0.0.1 serving one payload, with Range support and fault modes."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.truncate_at: int | None = None  # send only this many bytes of the body once
        self.ignore_range = False
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.payload
                rng = self.headers.get("Range")
                server.requests.append(rng)
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if server.truncate_at is not None:
                    chunk, server.truncate_at = chunk[: server.truncate_at], None
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/TinyStories_small.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


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
    with ArchiveServer(payload) as server:
        path = data.download(server.url, tmp_path / "a.tar.gz", progress=False)
    assert path.read_bytes() == payload
    assert not (tmp_path / "a.tar.gz.part").exists()


def test_download_truncated_then_resumed(payload, tmp_path):
    dest = tmp_path / "a.tar.gz"
    with ArchiveServer(payload) as server:
        server.truncate_at = 1000
        with pytest.raises(data.DownloadError, match=f"got 1000 of {len(payload)} bytes"):
            data.download(server.url, dest, progress=False, chunk_size=256)
        assert (tmp_path / "a.tar.gz.part").stat().st_size == 1000
        assert not dest.exists()
        path = data.download(server.url, dest, progress=False)  # resumes with a Range request
        assert server.requests == [None, "bytes=1000-"]
    assert path.read_bytes() == payload


def test_download_server_without_range_restarts(payload, tmp_path):
    (tmp_path / "a.tar.gz.part").write_bytes(b"garbage that is not the start of the file")
    with ArchiveServer(payload) as server:
        server.ignore_range = True
        path = data.download(server.url, tmp_path / "a.tar.gz", progress=False)
    assert path.read_bytes() == payload


def test_download_size_check(payload, tmp_path):
    with ArchiveServer(payload) as server:
        with pytest.raises(data.DownloadError, match="expected 5"):
            data.download(server.url, tmp_path / "a.tar.gz", expected_size=5, progress=False)
        with pytest.raises(data.DownloadError, match="HTTP 416|expected"):
            (tmp_path / "b.tar.gz.part").write_bytes(payload + b"extra")
            data.download(server.url, tmp_path / "b.tar.gz", progress=False)


def test_download_cli_and_unpack(payload, stories, tmp_path):
    from tinystories.data import main as data_main

    with ArchiveServer(payload) as server:
        assert data_main(["download", server.url, "--dir", str(tmp_path)]) == 0
    unpacked = tmp_path / "TinyStories_small"
    assert sorted(p.name for p in unpacked.iterdir()) == [
        "data00.json",
        "data01.json",
        "data02.json",
    ]
    assert sorted(data.read_documents(unpacked)) == sorted(s.strip() for s in stories)


def test_corpus_formats_agree(payload, stories, tmp_path):
    write_txt(tmp_path / "s.txt", stories)
    (tmp_path / "s.tar.gz").write_bytes(payload)
    from_txt = list(data.read_documents(tmp_path / "s.txt"))
    assert from_txt == [s.strip() for s in stories]
    assert sorted(data.read_documents(tmp_path / "s.tar.gz")) == sorted(from_txt)
    assert "\n" in from_txt[0] or any("\n" in s for s in from_txt)  # paragraphs are kept


def test_bad_json(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(data.DataError, match="not valid JSON"):
        data.load_documents(tmp_path / "x.json")


def test_pretokenize_parallel_equals_serial(stories, tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    docs = [s.strip() for s in stories]
    model, tok_bin = data.train_vocab(docs, 64, tmp_path)
    assert model.name == "tok64.model" and tok_bin.name == "tok64.bin"
    serial = data.pretokenize(
        docs, model, tmp_path / "serial", "train", workers=1, docs_per_shard=25, progress=False
    )
    parallel = data.pretokenize(
        docs, model, tmp_path / "parallel", "train", workers=2, docs_per_shard=25, progress=False
    )
    assert len(parallel.paths) == 3
    a = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in serial.paths])
    b = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in parallel.paths])
    np.testing.assert_array_equal(a, b)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    expected = [t for doc in docs for t in [1] + sp.encode(doc)]
    np.testing.assert_array_equal(a, expected)
    assert data.load_shards(tmp_path / "serial", "train", model) is not None
    assert data.load_shards(tmp_path / "serial", "val", model) is None


def test_vocab_byte_fallback_rule(stories, tmp_path):
    pytest.importorskip("sentencepiece")
    docs = [s.strip() for s in stories]
    n_chars = len(data.corpus_characters(docs))
    with pytest.raises(data.DataError, match=f"need at least {n_chars + 3 + 256}"):
        data.train_vocab(docs, 100, tmp_path, byte_fallback=True)
