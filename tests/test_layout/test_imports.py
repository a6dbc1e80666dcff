"""The import rules that keep the layers apart, checked on every module's source.

- ``stream`` (what a worker runs) never imports ``training``: serving a model must not pull
  in the training loop or the evaluation.
- No product module (``stream``, ``training``, ``schemas``) imports ``bench`` or ``testkit``
  (the support the tests and benchmarks share): neither is installed with the product.
- ``stream.core`` (the batch pipeline) does no I/O of its own: it imports no Kafka client,
  faust, RocksDB or transformers, and of xdrec only ``stream.core``, ``stream.settings``,
  ``stream.cpu`` and ``schemas``, so that nothing of those comes in through another module.

An import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("stream", "training", "schemas")
NOT_PRODUCT = ("bench", "testkit")
CORE_FORBIDDEN = ("confluent_kafka", "faust", "aiokafka", "rocksdict", "transformers")
CORE_MAY_IMPORT = ("stream.core", "stream.settings", "stream.cpu", "schemas")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` imports (absolute names; relative imports resolved against
    ``package``, the package the source belongs to)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return found


def violations(root: Path) -> set[tuple[str, str]]:
    """(module, forbidden package) for every rule broken under ``root``."""
    broken: set[tuple[str, str]] = set()
    for top in PRODUCT:
        for path in sorted((root / top).rglob("*.py")):
            name = module_name(path, root)
            package_of = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for imported in imported_modules(path.read_text(), package_of):
                package = imported.split(".")[0]
                if package in NOT_PRODUCT or (top == "stream" and package == "training"):
                    broken.add((name, package))
                if name == "stream.core" or name.startswith("stream.core."):
                    if package in CORE_FORBIDDEN:
                        broken.add((name, package))
                    elif package in ("stream", "schemas") and not _within(imported):
                        broken.add((name, imported))
    return broken


def _within(module: str) -> bool:
    return any(module == allowed or module.startswith(allowed + ".") for allowed in CORE_MAY_IMPORT)


def test_layers_import_one_way() -> None:
    assert violations(REPO) == set(), "forbidden imports: move the shared code down a layer"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "stream.model.watcher",
            "from training.train import x",
            {("stream.model.watcher", "training")},
        ),
        (
            "stream.core.state",
            "def f():\n    import training.job\n",
            {("stream.core.state", "training")},
        ),
        ("training.job", "from bench.harness import y", {("training.job", "bench")}),
        ("stream.cli", "from testkit.deployment import y", {("stream.cli", "testkit")}),
        ("training.job", "from stream.model import transfer", set()),
        ("schemas.events", "import bench", {("schemas.events", "bench")}),
        ("stream.core.processor", "import rocksdict", {("stream.core.processor", "rocksdict")}),
        (
            "stream.core.state",
            "from stream.catalog.store.store import ItemCatalog",
            {("stream.core.state", "stream.catalog.store.store")},
        ),
        ("stream.core.state", "from stream.core.scoring import top_k\nimport torch", set()),
    ],
)
def test_a_wrong_import_is_caught(tmp_path: Path, module: str, source: str, expected: set) -> None:
    path = tmp_path / Path(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert violations(tmp_path) == expected


def test_relative_imports_resolve_to_their_package() -> None:
    assert imported_modules("from ..training import job", "stream.model") == {"stream.training"}
    assert imported_modules("from . import scorer", "stream.model") == {"stream.model"}
