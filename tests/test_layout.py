"""The package layout (ARCHITECTURE.md): which way imports run, the old module paths, the
entry points and the version, checked on the installed package."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import tinystories
from support.files import REPO

PACKAGE = Path(tinystories.__file__).parent

# Modules kept at their old paths; each warns and re-exports from its new home.
DEPRECATED = {
    "tinystories.model_file": ("tinystories.formats.llama2c", "write_model"),
    "tinystories.tokenizer_file": ("tinystories.formats.tokenizer_bin", "write_tokenizer"),
    "tinystories.pretrained": ("tinystories.hub", "fetch_model"),
    "tinystories.download": ("tinystories.hub.download", "download"),
    "tinystories.generator": ("tinystories.inference", "Generator"),
    "tinystories.modal_check": ("tinystories.modal.check", "require_modal"),
    "tinystories.modal_app": ("tinystories.modal", "build_app"),
    "tinystories.training.train": ("tinystories.training.loop", "TrainConfig"),
    "tinystories.training.data": ("tinystories.formats.corpus", "load_documents"),
    "tinystories.training.export": ("tinystories.training.checkpoint", "export_checkpoint"),
}
NEEDS = {
    "tinystories.modal_app": "modal",
    "tinystories.training.train": "torch",
    "tinystories.training.export": "torch",
}
# `python -m tinystories.X`: two-line modules that run tinystories.cli.X.
ENTRY_SHIMS = ("train", "data", "export", "eval", "volume")

# What each part of the package may import (besides itself). The layers, top down:
# cli -> training -> inference / formats / hub -> _core; metrics sits on inference;
# server serves inference over HTTP; modal runs training, inference and the server
# remotely; bench is a tool on the public API.
ALLOWED = {
    "_core": set(),
    "formats": {"_core"},
    "hub": {"_core", "formats"},
    "inference": {"_core", "formats", "hub"},
    "metrics": {"_core", "formats", "hub", "inference"},
    "training": {"_core", "formats", "hub", "inference", "metrics", "_deprecated"},
    "server": {"_core", "formats", "hub", "inference"},
    "modal": {"_core", "formats", "hub", "inference", "metrics", "training", "server"},
    "cli": {
        "_core",
        "formats",
        "hub",
        "inference",
        "metrics",
        "training",
        "modal",
        "server",
        "package",
    },
    "bench": {"_core", "formats", "hub", "inference", "server"},
    "package": {"_core", "formats", "hub", "inference"},  # tinystories/__init__.py
    "entry": {"cli"},  # __main__ and the python -m shims
    "_deprecated": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    # tinystories/_source is the wheel's copy of the sources it was built from, not modules
    found = {
        module_name(p): p
        for p in PACKAGE.rglob("*.py")
        if "_source" not in p.relative_to(PACKAGE).parts
    }
    found["tinystories._core"] = PACKAGE / "_core.pyi"  # compiled; its stub has no imports
    assert "tinystories.training.loop" in found, "the training side is installed in the package"
    return found


def part(name: str) -> str:
    """The layer of module ``name`` (see ALLOWED); 'deprecated' for the old paths."""
    if name in DEPRECATED:
        return "deprecated"
    rest = name.split(".")[1:]
    if not rest:
        return "package"
    if rest[0] in ENTRY_SHIMS or rest[0] == "__main__":
        return "entry"
    if rest[0] in ("bench_shapes", "bench_serve"):  # the benchmark's other halves
        return "bench"
    return rest[0]


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every tinystories module ``name`` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.add(sub if sub in known else source)
    return {t for t in targets if t == "tinystories" or t.startswith("tinystories.")}


def test_imports_run_one_way():
    known = modules()
    wrong = []
    for name, path in sorted(known.items()):
        here = part(name)
        if here == "deprecated":
            continue
        for target in imported(name, path, known):
            there = part(target)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{name} ({here}) imports {target} ({there})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_only_cli_and_modal_import_training():
    known = modules()
    wrong = [
        f"{name} imports {target}"
        for name, path in sorted(known.items())
        if part(name) not in ("training", "cli", "modal", "deprecated")
        for target in imported(name, path, known)
        if part(target) == "training"
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_old_module_paths_still_import_with_a_warning(old):
    new, name = DEPRECATED[old]
    if old in NEEDS:
        pytest.importorskip(NEEDS[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*{new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is not None


def test_new_modules_warn_about_nothing():
    """No module of the layout imports an old path (each would warn once imported)."""
    needs = {"tinystories.modal.": "modal", "tinystories.training.": "torch"}
    names = [
        name
        for name in modules()
        if name not in DEPRECATED
        and not name.endswith("__main__")
        and all(has(pkg) for prefix, pkg in needs.items() if name.startswith(prefix))
    ]
    code = (
        "import importlib, sys, warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        f"    for name in {names!r}:\n"
        "        importlib.import_module(name)\n"
        "ours = [str(w.message) for w in caught if 'is deprecated' in str(w.message)]\n"
        "sys.exit('\\n'.join(ours) or None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_engine_evaluation_names_moved_to_metrics():
    evaluate = importlib.import_module("tinystories.training.evaluate")
    from tinystories import metrics

    with pytest.warns(DeprecationWarning, match="tinystories.metrics"):
        assert evaluate.evaluate_engine is metrics.evaluate_engine


def has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def test_public_surface():
    from tinystories import (
        FormatError,
        Generator,
        PretrainedError,
        SamplingParams,
        Tokenizer,
        UnknownModelError,
        kernels,
    )

    assert issubclass(FormatError, ValueError)
    assert issubclass(PretrainedError, OSError) and not issubclass(PretrainedError, ValueError)
    assert issubclass(UnknownModelError, PretrainedError)
    assert issubclass(UnknownModelError, ValueError)
    assert callable(kernels) and Generator and Tokenizer and SamplingParams


def test_generating_loads_no_numpy(random_model_files):
    """Importing tinystories and generating leave NumPy unloaded: its BLAS threads start
    with it and spin for a while on the cores a fresh process's first generation wants
    (and `import tinystories` takes half the time). Asking for arrays loads it."""
    model, tokenizer, _, _ = next(iter(random_model_files.values()))
    code = (
        "import sys\n"
        "import tinystories\n"
        f"g = tinystories.Generator({str(model)!r}, {str(tokenizer)!r}, n_threads=2)\n"
        "g.generate('a', max_new_tokens=4, seed=1)\n"
        "list(g.stream('a', max_new_tokens=4, temperature=0.0))\n"
        "g.generate_batch(['a', 'b'], max_new_tokens=4, seed=[1, 2])\n"
        "g.tokenizer.decode(g.tokenizer.encode('a'))\n"
        "before = 'numpy' in sys.modules\n"
        "shape = g.logits([1, 2]).shape\n"
        "print(before, 'numpy' in sys.modules, shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    vocab = next(iter(random_model_files.values()))[2].vocab_size
    assert done.stdout.strip().split(maxsplit=2) == ["False", "True", f"(2, {vocab})"]


@pytest.mark.parametrize("command", [*ENTRY_SHIMS, "bench"])
def test_python_m_entry_points(command):
    done = subprocess.run(
        [sys.executable, "-m", f"tinystories.{command}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"python -m tinystories.{command}" in done.stdout


def test_version_written_once():
    assert importlib.metadata.version("tinystories") == tinystories.__version__
    done = subprocess.run(
        [sys.executable, "-m", "tinystories", "--version"], capture_output=True, text=True
    )
    assert done.stdout.strip() == f"tinystories {tinystories.__version__}"


def test_license_is_in_the_wheel_and_the_sdist(tmp_path, monkeypatch):
    """The MIT license pyproject.toml declares ships with the installed wheel and the sdist."""
    dist = importlib.metadata.distribution("tinystories")
    assert dist.metadata["License"] == "MIT"
    # the .dist-info's (the copy in tinystories/_source is a source file like the others)
    (license_file,) = [f for f in dist.files if f.name == "LICENSE" and "_source" not in f.parts]
    text = license_file.read_text()
    assert text.startswith("MIT License") and "the tinystories authors" in text
    build = pytest.importorskip("scikit_build_core.build")
    monkeypatch.chdir(REPO)
    name = build.build_sdist(str(tmp_path))  # no compiler, no network: the files packed
    with tarfile.open(tmp_path / name) as sdist:
        assert f"tinystories-{tinystories.__version__}/LICENSE" in sdist.getnames()


def test_defaults_written_once():
    """The CLI shows the defaults of TrainConfig, SamplingParams and the Modal settings."""
    from tinystories.cli import dispatch as cli
    from tinystories.cli.train import build_parser
    from tinystories.inference import SamplingParams
    from tinystories.modal.settings import DEFAULT_GPU, DEFAULT_VOLUME

    args = build_parser().parse_args([])
    config = importlib.import_module("tinystories.training.config").TrainConfig()
    assert (args.max_iters, args.lr, args.batch_size, args.seed) == (
        config.max_iters,
        config.learning_rate,
        config.batch_size,
        config.seed,
    )
    assert (args.gpu, args.volume) == (DEFAULT_GPU, DEFAULT_VOLUME)
    generate = cli.build_parser().parse_args(["generate"])
    sampling = SamplingParams()
    assert (generate.temperature, generate.top_p, generate.top_k, generate.seed) == (
        sampling.temperature,
        sampling.top_p,
        sampling.top_k,
        sampling.seed,
    )
    assert generate.max_new_tokens is sampling.max_new_tokens is None
