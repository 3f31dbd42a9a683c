"""Modal integration, offline: the app definition built with the real `modal` package, the
remote function bodies run through `.local()` against a temporary folder standing in for the
volume, the dry run, the volume tools on a local stand-in, and the messages for a missing
extra or missing credentials. Nothing here contacts Modal."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import warnings
from functools import partial
from pathlib import Path

import pytest

modal = pytest.importorskip("modal")

from support import modal_fakes as mf  # noqa: E402
from support.cli import env_without_modal_credentials  # noqa: E402
from support.files import REPO  # noqa: E402
from support.stories import make_corpus, write_txt  # noqa: E402
from tinystories.modal import app as ma_app  # noqa: E402
from tinystories.modal import image as ma_image  # noqa: E402
from tinystories.modal import jobs as ma_jobs  # noqa: E402
from tinystories.modal import plan as ma_plan  # noqa: E402
from tinystories.modal import settings as ma_settings  # noqa: E402
from tinystories.modal import volume as ma_volume  # noqa: E402

# The flags of a tiny local run (as in test_train_pipeline), used for the remote one too.
TINY_FLAGS = [
    "--vocab-size", "96", "--dim", "32", "--n-layers", "2", "--n-heads", "4",
    "--n-kv-heads", "2", "--seq-len", "64", "--batch-size", "8", "--eval-iters", "2",
    "--max-iters", "12", "--eval-interval", "4", "--lr", "3e-3", "--dtype", "float32",
    "--no-compile", "--no-progress", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _quiet_local_volume_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*executing locally.*Volume", category=UserWarning
        )
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("modal_corpus") / "stories.txt"
    write_txt(path, make_corpus(300, seed=5))
    return path


# --- the app definition ----------------------------------------------------------------


def test_app_definition_defaults():
    with mf.no_network():  # defining the app, image and volume is lazy and offline
        app = ma_app.build_app(ma_settings.Settings(source=REPO))
    assert mf.volume_name(app.volume) == "tinystories-volume"
    assert set(_registered(app.app)) == {"prepare", "train", "sample", "sample_batch"}
    train, prepare, sample = (mf.function_options(f) for f in (app.train, app.prepare, app.sample))
    assert train["gpu"] == "T4"
    assert prepare["gpu"] is None and sample["gpu"] is None  # no GPU paid for outside training
    for options in (train, prepare, sample):
        assert list(options["volumes"]) == ["/data"]
        assert mf.volume_name(options["volumes"]["/data"]) == "tinystories-volume"
        assert options["image"] is mf.impl(app.image)
    assert (train["timeout"], prepare["timeout"], sample["timeout"]) == (6 * 3600, 7200, 600)
    assert (prepare["cpu"], prepare["memory"]) == (4.0, 16 * 1024)


def _registered(app) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return app.registered_functions


def test_app_definition_settings():
    settings = ma_settings.Settings(gpu="A10G", volume="scratch", source=REPO, train_timeout=3600)
    with mf.no_network():
        app = ma_app.build_app(settings)
    options = mf.function_options(app.train)
    assert (options["gpu"], options["timeout"]) == ("A10G", 3600)
    assert mf.volume_name(options["volumes"]["/data"]) == "scratch"
    with pytest.raises(ValueError, match="24 h"):
        ma_settings.Settings(source=REPO, train_timeout=25 * 3600)


def test_image_builds_the_local_wheel():
    with mf.no_network():
        app = ma_app.build_app(ma_settings.Settings(source=REPO))
        commands = mf.dockerfile_commands(app.image)
        files = mf.copied_files(app.image)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert commands[0].startswith(f"FROM python:{py}")  # cloudpickle: the local Python
    runs = [c for c in commands if c.startswith("RUN ")]

    def index(text: str) -> int:
        return next(i for i, c in enumerate(runs) if text in c)

    apt = index("apt-get install -y build-essential cmake")
    torch = index("pip install torch==")
    wheel = index("pip wheel --no-deps --wheel-dir /root/wheels /root/tinystories")
    install = index("/root/wheels/tinystories-*.whl)[train,server]")
    assert apt < torch < wheel < install  # torch before the source: edits keep its layer
    assert "ENV TINYSTORIES_VOLUME_ROOT=/data" in commands
    # the copy=True layer: exactly the checkout's build inputs, nothing else
    remote = {r: local for local, r in files}
    for name in (
        "pyproject.toml",
        "CMakeLists.txt",
        "README.md",
        "bindings/core.cpp",
        "csrc/run/tinystories.h",
        "python/tinystories/modal/app.py",
        "training/loop.py",
    ):
        assert f"/root/tinystories/{name}" in remote, name
        assert remote[f"/root/tinystories/{name}"] == REPO / name
    tops = {r.split("/")[3] for r in remote}
    assert tops == set(ma_settings.SOURCE_ITEMS)
    assert not any("__pycache__" in r or r.endswith(".pyc") for r in remote)


def test_copied_source_builds_the_wheel(tmp_path):
    """The image's copy and build steps, offline: the files the copy=True layer bakes in
    are enough to build the wheel (engine, bindings, training, this module)."""
    pytest.importorskip("scikit_build_core")
    pytest.importorskip("pybind11")
    import zipfile

    with mf.no_network():
        files = mf.copied_files(ma_app.build_app(ma_settings.Settings(source=REPO)).image)
    src = tmp_path / "tinystories"
    for local, remote in files:
        dest = src / Path(remote).relative_to(ma_settings.REMOTE_SOURCE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(local.read_bytes())
    # the image's BUILD_WHEEL, with the build requirements taken from here (no index)
    command = ma_image.BUILD_WHEEL.replace(ma_settings.REMOTE_WHEELS, str(tmp_path / "wheels"))
    command = command.replace(ma_settings.REMOTE_SOURCE, str(src)).split()[1:]
    done = subprocess.run(
        [sys.executable, *command, "--no-build-isolation", "--no-index", "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("tinystories-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("tinystories/_core") and n.endswith(".so") for n in names)
    for name in ("tinystories/modal/app.py", "tinystories/training/loop.py"):
        assert name in names
    assert any(n.endswith("/scripts/tinystories-run") for n in names)


def test_find_source(tmp_path, monkeypatch):
    monkeypatch.delenv(ma_settings.SOURCE_ENV, raising=False)
    assert ma_settings.find_source(REPO) == REPO.resolve()
    assert ma_settings.find_source(cwd=REPO / "python" / "tinystories") == REPO.resolve()
    monkeypatch.setenv(ma_settings.SOURCE_ENV, str(REPO))
    assert ma_settings.find_source(cwd=tmp_path) == REPO.resolve()
    monkeypatch.delenv(ma_settings.SOURCE_ENV)
    # outside a checkout: the installed wheel's own sources
    assert ma_settings.find_source(cwd=tmp_path) == ma_settings.shipped_source() is not None
    monkeypatch.setattr(ma_settings, "shipped_source", lambda: None)
    with pytest.raises(ma_settings.SourceNotFound, match="--source DIR"):
        ma_settings.find_source(cwd=tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "tinystories"\n')
    with pytest.raises(ma_settings.SourceNotFound, match="not a complete checkout"):
        ma_settings.find_source(tmp_path)


# --- the remote functions, run locally through .local() --------------------------------


def _plan(corpus: Path, *extra: str) -> ma_plan.TrainingPlan:
    from tinystories.cli.train import build_parser, config_kwargs

    args = build_parser().parse_args(["--data", str(corpus), *TINY_FLAGS, *extra])
    return ma_plan.plan_training(config_kwargs(args), out=args.out, data_dir=args.data_dir)


@pytest.fixture
def local_volume(tmp_path, monkeypatch):
    """A temp folder as the volume root, and a record of the functions' volume commits."""
    root = tmp_path / "volume"
    root.mkdir()
    monkeypatch.setenv(ma_settings.ROOT_ENV, str(root))
    commits: list[str] = []
    monkeypatch.setattr(ma_jobs, "committer", lambda name: lambda: commits.append(name))
    return root, commits


def test_remote_functions_run_locally(corpus, tmp_path, local_volume, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sentencepiece")
    from tinystories import Generator

    root, commits = local_volume
    volume = mf.LocalVolume(root)
    app = ma_app.build_app(ma_settings.Settings(source=REPO))
    plan = _plan(corpus)
    assert plan.config["out_dir"] == "out" and plan.config["data"].startswith("corpus/")

    # client: the corpus goes to the volume once (content-addressed)
    assert ma_volume.upload(volume, corpus, plan.data[0].dest, skip_existing=True)
    assert not ma_volume.upload(volume, corpus, plan.data[0].dest, skip_existing=True)
    assert volume.uploads == [plan.data[0].dest]

    # prepare: vocabulary and shards on the volume
    ready = app.prepare.local(plan.config, plan.fetch)
    assert ready["tokenizer"] == "out/data/tok96.bin" and ready["train_tokens"] > 0
    vocab = root / "out" / "data" / "tok96.model"
    stamp = vocab.stat().st_mtime_ns
    assert commits == ["tinystories-volume"]

    # train: checkpoints at 4, 8, 12, export; a commit after each
    result = app.train.local(plan.config)
    assert result["iters"] == 12 and result["model"] == "out/model.bin"
    assert result["tokenizer"] == "out/tokenizer.bin"
    assert len(commits) == 1 + 3 + 1
    for name in ("ckpt.pt", "metrics.jsonl", "model.bin", "tokenizer.bin"):
        assert (root / "out" / name).is_file()
    assert vocab.stat().st_mtime_ns == stamp  # train() found the prepared data

    # a second prepare skips everything; resume continues from the volume's checkpoint
    app.prepare.local(plan.config, plan.fetch)
    assert vocab.stat().st_mtime_ns == stamp
    capsys.readouterr()
    more = {**plan.config, "resume": True, "max_iters": 16}
    assert app.train.local(more)["iters"] == 16
    assert "resuming from" in capsys.readouterr().out

    # sample: the engine on the volume's files streams what it streams locally
    options = dict(max_new_tokens=30, temperature=0.8, top_p=0.9, top_k=0, seed=42)
    pieces = list(app.sample.local("out/model.bin", "out/tokenizer.bin", "Once upon a", options))
    local = Generator(root / "out" / "model.bin", root / "out" / "tokenizer.bin")
    assert pieces == list(local.stream("Once upon a", **options)) and "".join(pieces)

    # client: the results come back to --out
    out = tmp_path / "local-out"
    for name in ma_settings.RESULT_FILES:
        ma_volume.download_file(
            volume, f"out/{name}", out / name, progress=False, log=lambda m: None
        )
        assert (out / name).read_bytes() == (root / "out" / name).read_bytes()


def test_prepare_fetches_a_corpus_url(corpus, tmp_path, local_volume):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("torch")
    root, commits = local_volume
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(corpus.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{corpus.name}"
        plan = _plan(Path("unused"), "--data", url, "--data-dir", "shared-data")
        assert plan.fetch == [{"url": url, "dest": f"downloads/{corpus.name}"}]
        assert plan.config["data_dir"] == "shared-data"
        ready = ma_app.build_app(ma_settings.Settings(source=REPO)).prepare.local(
            plan.config, plan.fetch
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (root / "downloads" / corpus.name).read_bytes() == corpus.read_bytes()
    assert ready["tokenizer"] == "shared-data/tok96.bin"
    assert len(commits) == 2  # after the download, after the shards


def test_rescheduled_call_resumes(tmp_path, monkeypatch):
    config = {"out_dir": "run", "resume": False}
    assert ma_jobs.resume_if_rescheduled(config, tmp_path) is config  # not in a container
    monkeypatch.setattr(modal, "current_function_call_id", lambda: "fc-1")
    assert ma_jobs.resume_if_rescheduled(config, tmp_path)["resume"] is False  # first attempt
    assert (tmp_path / "run" / ".modal-call").read_text() == "fc-1"
    assert ma_jobs.resume_if_rescheduled(config, tmp_path)["resume"] is False  # no checkpoint yet
    (tmp_path / "run" / "ckpt.pt").write_bytes(b"")
    assert ma_jobs.resume_if_rescheduled(config, tmp_path)["resume"] is True  # restarted
    monkeypatch.setattr(modal, "current_function_call_id", lambda: "fc-2")
    assert ma_jobs.resume_if_rescheduled(config, tmp_path)["resume"] is False  # a new call


def test_sampling_imports_neither_torch_nor_modal_runtime(random_model_files, tmp_path):
    model, tokenizer, _, _ = random_model_files[("gqa_shared", 0)]
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tinystories.cli import main\n"
        f"assert main(['generate', 'a', '-m', {str(model)!r}, '-z', {str(tokenizer)!r}, "
        "'-s', '3', '-n', '5']) == 0\n"
        "assert 'modal' not in sys.modules and 'torch' not in sys.modules\n"
        "from tinystories.modal.jobs import sample_body\n"
        f"root = Path({str(model.parent)!r})\n"
        f"text = ''.join(sample_body({model.name!r}, {tokenizer.name!r}, 'a', "
        "{'seed': 3, 'max_new_tokens': 5}, root=root))\n"
        "assert 'torch' not in sys.modules, 'sampling imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_serialized_functions_run_in_a_fresh_process(random_model_files, tmp_path):
    """What a container does with a function: unpickle it (no Modal client at hand) in a
    process that has not imported the app, then call it; here ``sample`` on a tmp volume."""
    model, tokenizer, _, _ = random_model_files[("gqa_shared", 1)]
    root = tmp_path / "volume"
    (root / "m").mkdir(parents=True)
    (root / "m" / "model.bin").write_bytes(model.read_bytes())
    (root / "m" / "tokenizer.bin").write_bytes(tokenizer.read_bytes())
    with mf.no_network():
        app = ma_app.build_app(ma_settings.Settings(source=REPO))
        for name in ("prepare", "train", "sample"):
            (tmp_path / f"{name}.pkl").write_bytes(mf.serialized_function(getattr(app, name)))
    code = (
        "import sys\n"
        "from modal._serialization import deserialize\n"
        "fns = {n: deserialize(open(n + '.pkl', 'rb').read(), None) "
        "for n in ('prepare', 'train', 'sample')}\n"
        "assert all(callable(f) for f in fns.values())\n"
        "text = ''.join(fns['sample']('m/model.bin', 'm/tokenizer.bin', 'a', "
        "{'seed': 7, 'max_new_tokens': 8}))\n"
        "assert 'torch' not in sys.modules\n"
        "print(text)\n"
    )
    env = {**os.environ, ma_settings.ROOT_ENV: str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    from tinystories import Generator

    expected = Generator(model, tokenizer).generate("a", seed=7, max_new_tokens=8)
    assert done.stdout == expected + "\n"


# --- paths and data plans --------------------------------------------------------------


def test_data_plans(corpus, tmp_path):
    assert ma_plan.plan_data("--data", "") is None
    assert ma_plan.plan_data("--data", "volume:/corpus/x.txt").dest == "corpus/x.txt"
    named = ma_plan.plan_data("--data", "tinystories")
    assert named.url.endswith("TinyStories_all_data.tar.gz")
    assert named.dest == "downloads/TinyStories_all_data.tar.gz"
    local = ma_plan.plan_data("--data", str(corpus))
    assert local.upload == corpus and local.dest.endswith("/stories.txt")
    copy = tmp_path / "stories.txt"
    copy.write_bytes(corpus.read_bytes())
    assert ma_plan.plan_data("--data", str(copy)).dest == local.dest  # same content, same place
    copy.write_text("different")
    assert ma_plan.plan_data("--data", str(copy)).dest != local.dest
    with pytest.raises(FileNotFoundError, match="volume:PATH"):
        ma_plan.plan_data("--data", str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match=r"'\.\.'"):
        ma_plan.plan_data("--data", "volume:../etc/passwd")
    assert ma_plan.remote_dir("out") == "out" and ma_plan.remote_dir("runs/a/") == "runs/a"
    assert ma_plan.remote_dir("/home/me/runs/b") == "b"


def test_config_kwargs_are_train_config_fields(corpus):
    pytest.importorskip("torch")
    from tinystories.training.config import TrainConfig

    plan = _plan(corpus)
    TrainConfig(**plan.config)  # the remote side rebuilds it from these


# --- the command lines ----------------------------------------------------------------


def test_dry_run_prints_the_plan(corpus, tmp_path, monkeypatch, capsys):
    from tinystories.cli.train import main as train_main

    for name in [k for k in os.environ if k.startswith("MODAL_TOKEN")]:
        monkeypatch.delenv(name)
    argv = ["--modal", "--dry-run", "--data", str(corpus), "--source", str(REPO), *TINY_FLAGS]
    with mf.no_network():
        assert train_main(argv) == 0
    out = capsys.readouterr().out
    for text in (
        "dry run", "volume:   tinystories-volume (created if missing), mounted at /data",
        "apt-get install build-essential cmake", "pip install torch==", f"copy {REPO}",
        "pip wheel --no-deps", "[train,server]", "train    GPU T4, timeout 6 h",
        "prepare  no GPU", "sample   no GPU, timeout 10 min", f"upload {corpus}",
        "12 iterations, start from scratch", "download model.bin, tokenizer.bin",
    ):  # fmt: skip
        assert text in out, text
    with mf.no_network():
        argv += [
            "--gpu",
            "A100",
            "--volume",
            "mine",
            "--resume",
            "--timeout-hours",
            "2",
            "--no-download",
        ]
        assert train_main(argv) == 0
    out = capsys.readouterr().out
    for text in (
        "GPU A100, timeout 2 h",
        "volume:   mine",
        "resume from /data/out/ckpt.pt",
        "no download",
    ):
        assert text in out, text


def test_dry_run_without_a_checkout(tmp_path, monkeypatch, capsys):
    from tinystories.cli.train import main as train_main

    monkeypatch.delenv(ma_settings.SOURCE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ma_settings, "shipped_source", lambda: None)  # a package without them
    assert train_main(["--modal", "--dry-run", "--max-iters", "5"]) == 1
    assert "--source DIR" in capsys.readouterr().err


def _tracked(root: Path) -> set[str]:
    """The checkout's files under SOURCE_ITEMS, as git tracks them."""
    listed = subprocess.run(
        ["git", "ls-files", "--", *ma_settings.SOURCE_ITEMS],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return set(listed)


def test_the_wheel_ships_the_checkout_sources():
    """The installed package carries exactly the checkout's tracked source files, and an
    image built from them bakes in the same files as one built from the checkout."""
    shipped = ma_settings.shipped_source()
    assert shipped is not None, "the installed wheel carries no tinystories/_source"
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare the shipped files with")
    files = {
        str(p.relative_to(shipped))
        for p in shipped.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts  # pip compiles what it installs
    }
    assert files == _tracked(REPO)
    with mf.no_network():
        from_wheel = mf.copied_files(ma_app.build_app(ma_settings.Settings(source=shipped)).image)
        from_checkout = mf.copied_files(ma_app.build_app(ma_settings.Settings(source=REPO)).image)
    assert sorted(r for _, r in from_wheel) == sorted(r for _, r in from_checkout)
    by_remote = dict((r, local) for local, r in from_checkout)
    for local, remote in from_wheel:
        assert local.read_bytes() == by_remote[remote].read_bytes(), remote


@pytest.mark.parametrize(
    "command",
    [["-m", "tinystories.train", "--modal", "--dry-run", "--data", "volume:corpus.txt"],
     ["-m", "tinystories", "serve", "--modal", "--dry-run"],
     ["-m", "tinystories", "generate", "--modal", "--dry-run", "--samples", "64", "Tom"]],
)  # fmt: skip
def test_dry_runs_from_an_empty_directory_use_the_shipped_sources(command, tmp_path):
    env = env_without_modal_credentials(tmp_path)
    env.pop(ma_settings.SOURCE_ENV, None)
    done = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the sources shipped in the installed wheel" in done.stdout
    assert str(ma_settings.shipped_source()) in done.stdout


COMMANDS = {
    "train": ["-m", "tinystories.train", "--modal", "--data", "stories.txt"],
    "generate": ["-m", "tinystories", "generate", "--modal", "Once upon a time"],
    "volume": ["-m", "tinystories.volume", "ls"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_credentials(command, tmp_path):
    env = env_without_modal_credentials(tmp_path)
    done = subprocess.run(
        [sys.executable, *COMMANDS[command]],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1
    assert "needs Modal credentials" in done.stderr and "`modal token new`" in done.stderr
    assert "Nothing was started" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    # only the commands that take --dry-run suggest it
    assert ("--dry-run" in done.stderr) == (command == "train")


def test_credentials_detected(tmp_path):
    env = env_without_modal_credentials(tmp_path)
    code = "from tinystories.modal.check import has_credentials as h; print(h())"
    run = partial(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True)
    assert run(env=env).stdout.strip() == "False"
    with_env = {**env, "MODAL_TOKEN_ID": "ak-x", "MODAL_TOKEN_SECRET": "as-y"}
    assert run(env=with_env).stdout.strip() == "True"
    (tmp_path / "no-modal.toml").write_text('[default]\ntoken_id = "ak-x"\ntoken_secret = "as-y"\n')
    assert run(env=env).stdout.strip() == "True"


@pytest.mark.parametrize("command", sorted(COMMANDS) + ["dry-run"])
def test_missing_extra(command, tmp_path):
    argv = COMMANDS.get(command, ["-m", "tinystories.train", "--modal", "--dry-run"])
    code = (
        "import runpy, sys\n"
        "sys.modules['modal'] = None  # as if the extra were not installed\n"
        f"sys.argv = ['x'] + {argv[2:]!r}\n"
        f"runpy.run_module({argv[1]!r}, run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 1
    assert "pip install 'tinystories[modal]'" in done.stderr
    assert "`modal token new`" in done.stderr and "Traceback" not in done.stderr


# --- volume tools ---------------------------------------------------------------------


def _volume_cli(volume, *argv: str) -> int:
    from tinystories.cli.volume import build_parser, run

    return run(build_parser().parse_args(["--no-progress", *argv]), volume)


def test_volume_tools(tmp_path, capsys, monkeypatch):
    volume = mf.LocalVolume(tmp_path / "vol")
    local = tmp_path / "local"
    (local / "run" / "data").mkdir(parents=True)
    (local / "run" / "model.bin").write_bytes(os.urandom(5000))
    (local / "run" / "data" / "tok.bin").write_bytes(b"tok")
    (local / "big.bin").write_bytes(os.urandom(3000))

    assert _volume_cli(volume, "upload", str(local / "run"), "out") == 0
    assert _volume_cli(volume, "upload", str(local / "big.bin"), "/files/big.bin") == 0
    with pytest.raises(FileExistsError):
        _volume_cli(volume, "upload", str(local / "big.bin"), "files/big.bin")
    assert _volume_cli(volume, "upload", str(local / "big.bin"), "files/big.bin", "--force") == 0
    capsys.readouterr()

    assert _volume_cli(volume, "ls") == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines()] == ["files/", "out/"]
    assert _volume_cli(volume, "ls", "out", "-r") == 0
    listing = capsys.readouterr().out
    assert "out/model.bin" in listing and "4.9 KiB" in listing and "out/data/tok.bin" in listing

    # download: a file to a file, a file into a folder, a folder keeping its layout
    down = tmp_path / "down"
    down.mkdir()
    assert _volume_cli(volume, "download", "out/model.bin", str(down / "m.bin")) == 0
    assert (down / "m.bin").read_bytes() == (local / "run" / "model.bin").read_bytes()
    assert _volume_cli(volume, "download", "files/big.bin", str(down)) == 0
    assert (down / "big.bin").read_bytes() == (local / "big.bin").read_bytes()
    assert _volume_cli(volume, "download", "out", str(down / "tree")) == 0
    assert (down / "tree" / "data" / "tok.bin").read_bytes() == b"tok"
    assert not list(down.rglob("*.part"))

    # rm
    assert _volume_cli(volume, "rm", "files/big.bin") == 0
    assert not (volume.root / "files" / "big.bin").exists()
    with pytest.raises(modal.exception.InvalidError):
        _volume_cli(volume, "rm", "out/data")
    assert _volume_cli(volume, "rm", "out/data", "-r") == 0
    with pytest.raises(ValueError, match="root"):
        _volume_cli(volume, "rm", "/", "-r")

    # clean: leftovers by default, checkpoints on request, everything with --all
    (volume.root / "out" / "ckpt.pt").write_bytes(b"c")
    (volume.root / "out" / "ckpt.pt.tmp").write_bytes(b"t")
    (volume.root / "downloads").mkdir()
    (volume.root / "downloads" / "x.tar.gz.part").write_bytes(b"p")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert _volume_cli(volume, "clean") == 1  # asked, declined
    assert (volume.root / "out" / "ckpt.pt.tmp").exists()
    assert _volume_cli(volume, "clean", "--yes") == 0
    assert not (volume.root / "out" / "ckpt.pt.tmp").exists()
    assert not (volume.root / "downloads" / "x.tar.gz.part").exists()
    assert (volume.root / "out" / "ckpt.pt").exists() and (
        volume.root / "out" / "model.bin"
    ).exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert _volume_cli(volume, "clean", "--checkpoints") == 0
    assert not (volume.root / "out" / "ckpt.pt").exists()
    assert (volume.root / "out" / "model.bin").exists()
    assert _volume_cli(volume, "clean", "--all", "--yes") == 0
    assert list(volume.root.iterdir()) == []
    assert _volume_cli(volume, "clean") == 0
    assert "nothing to clean" in capsys.readouterr().out


def test_download_progress_reports_bytes(tmp_path):
    volume = mf.LocalVolume(tmp_path / "vol")
    (volume.root / "m.bin").write_bytes(os.urandom(4500))

    class Bar:
        n = 0

        def update(self, k):
            Bar.n += k

    with open(tmp_path / "x", "wb") as f:
        volume.read_file_into_fileobj("m.bin", ma_volume._CountingWriter(f, Bar()))
    assert Bar.n == 4500


# --- serve --modal -------------------------------------------------------------------


def test_serve_app_definition():
    from tinystories.modal import serve as ma_serve

    serve = ma_settings.ServeSettings(
        min_containers=1, max_containers=3, scaledown_window=120, concurrent=16
    )
    with mf.no_network():
        sa = ma_serve.build_serve_app(ma_settings.Settings(source=REPO), serve)
    assert set(_registered(sa.app)) == {"web"}
    options = mf.function_options(sa.web)
    assert options["gpu"] is None and list(options["volumes"]) == ["/data"]
    cells = mf._closure(mf._impl(sa.web)._load)
    assert (cells["min_containers"], cells["max_containers"]) == (1, 3)
    assert (cells["scaledown_window"], cells["max_concurrent_inputs"]) == (120, 16)
    assert "ASGI" in str(cells["webhook_config"])
    with pytest.raises(ValueError, match="min_containers"):
        ma_settings.ServeSettings(min_containers=5, max_containers=2)


def test_serve_body_serves_the_volume_model(random_model_files):
    """The web function's body: the same app over the volume's files, answering here."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from tinystories import Generator
    from tinystories.server import serve_in_background

    model, tokenizer, _, _ = random_model_files[("gqa_shared", 0)]
    app = ma_jobs.serve_app(
        model.name, tokenizer.name, root=model.parent, name="remote", parallel=4
    )
    with serve_in_background(app) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 6, "seed": 3})
    want = Generator(model, tokenizer).generate("a", max_new_tokens=6, seed=3)
    assert r.json()["choices"][0]["text"] == want and r.json()["model"] == "remote"


def test_serve_dry_run_prints_the_plan_without_credentials(tmp_path):
    env = env_without_modal_credentials(tmp_path)
    command = [sys.executable, "-m", "tinystories", "serve", "--modal", "--dry-run",
               "--max-containers", "6", "--model-path", "out/model.bin"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "tinystories-serve" in out and "[train,server]" in out
    assert "/data/out/model.bin on volume tinystories-volume" in out and "0 to 6 containers" in out
    bare = subprocess.run(command[:5], capture_output=True, text=True, env=env, cwd=REPO)
    assert bare.returncode == 1 and "needs Modal credentials" in bare.stderr


# --- fan-out sampling ------------------------------------------------------------------


def test_split_seeds():
    runs = ma_plan.split_seeds(5, 70, 3)
    assert [len(r) for r in runs] == [24, 23, 23]
    assert sum(runs, []) == list(range(5, 75))
    assert ma_plan.split_seeds(1, 2, 8) == [[1], [2]]  # never an empty container
    with pytest.raises(ValueError):
        ma_plan.split_seeds(1, 0, 1)


def test_fan_out_runs_each_batch_and_keeps_the_order(random_model_files, local_volume):
    """Each container's body through .local(), the map emulated in order: the records
    come back seed by seed, each what generating it here gives."""
    from tinystories import Generator

    root, _ = local_volume
    model, tokenizer, _, _ = random_model_files[("gqa_shared", 0)]
    for f in (model, tokenizer):
        (root / f.name).write_bytes(f.read_bytes())
    ma = ma_app.build_app(ma_settings.Settings(source=REPO))

    class LocalMap:  # Function.map's contract: one call per item, results in order
        def map(self, *columns):
            return [ma.sample_batch.local(*args) for args in zip(*columns, strict=True)]

    options = {"max_new_tokens": 8, "temperature": 0.9}
    runs = ma_plan.split_seeds(11, 7, 3)
    fake = ma_app.ModalApp(ma.settings, ma.app, ma.image, ma.volume, ma.prepare, ma.train,
                           ma.sample, LocalMap(), ma.image_steps)  # fmt: skip
    records = list(ma_app.fan_out_samples(fake, model.name, tokenizer.name, "a", options, runs))
    assert [r["seed"] for r in records] == list(range(11, 18))
    here = Generator(model, tokenizer)
    for r in records:
        assert r["text"] == here.generate("a", seed=r["seed"], **options)
        assert r["finish_reason"] in ("stop", "length") and r["tokens"] <= 8


def test_fan_out_dry_run_shows_the_split(tmp_path):
    env = env_without_modal_credentials(tmp_path)
    command = [sys.executable, "-m", "tinystories", "generate", "--modal", "--dry-run",
               "--samples", "70", "-s", "5", "Tom"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "70 samples of 'Tom'" in done.stdout and "over 3 containers" in done.stdout
    assert "container 3: seeds 52..74 (23)" in done.stdout
    bad = subprocess.run([*command[:-2], str(2**64 - 2), "Tom"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=120)  # fmt: skip
    assert bad.returncode == 1 and "2**64 - 1" in bad.stderr


# --- multi-GPU training ----------------------------------------------------------------


def test_multi_gpu_train_runs_under_torchrun(corpus, local_volume, monkeypatch):
    """--gpu TYPE:N: the train function's torchrun path, here with 2 CPU processes (gloo):
    the same losses as one process (DDP deals out one process's micro-batches)."""
    pytest.importorskip("torch")
    pytest.importorskip("sentencepiece")
    root, _ = local_volume
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = ma_app.build_app(ma_settings.Settings(source=REPO))
    plan = _plan(corpus, "--grad-accum", "2")
    ma_volume.upload(mf.LocalVolume(root), corpus, plan.data[0].dest, skip_existing=True)
    app.prepare.local(plan.config, plan.fetch)
    one = ma_jobs.train_body({**plan.config, "out_dir": "one"}, root=root)
    two = ma_jobs.distributed_train_body({**plan.config, "out_dir": "two"}, 2, root=root,
                                         volume="")  # fmt: skip
    assert two["iters"] == one["iters"] == 12 and two["model"] == "two/model.bin"
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=1e-4)
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], abs=1e-4)
    assert (root / "two" / "model.bin").is_file()
    command = ma_jobs.torchrun_command(4, "c.json", "r.json", "vol")
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert command[5:] == ["-m", "tinystories.modal.worker", "c.json", "r.json", "vol"]
    with mf.no_network():
        four = ma_app.build_app(ma_settings.Settings(source=REPO, gpu="A100:4"))
    plan_text = ma_plan.describe_plan(four)
    assert "with 4 GPUs, in 4 processes" in plan_text and "--nproc_per_node=4" in plan_text
