"""docs/architecture.md lists every module of the product, and no module that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("stream", "training", "schemas")


def listed_modules(document: str) -> set[str]:
    """The module paths named in the "Modules" section's table."""
    section = document[document.index("## Modules") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    pattern = rf"`((?:{'|'.join(PACKAGES)})/[\w/]+\.py)`"
    return {path for row in rows for path in re.findall(pattern, row.split("|")[1])}


def product_modules(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for package in PACKAGES
        for path in (root / package).rglob("*.py")
        if path.name != "__init__.py"
    }


def test_module_table_is_complete() -> None:
    listed = listed_modules((REPO / "docs" / "architecture.md").read_text())
    actual = product_modules(REPO)
    assert actual - listed == set(), "modules missing from docs/architecture.md"
    assert listed - actual == set(), "docs/architecture.md lists modules that do not exist"


def test_a_module_outside_the_table_is_noticed(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "stream" / "new.py").write_text("")
    table = "## Modules\n\n| module | job |\n|---|---|\n| `stream/old.py` | gone |\n\n## Next\n"
    assert product_modules(tmp_path) - listed_modules(table) == {"stream/new.py"}
    assert listed_modules(table) - product_modules(tmp_path) == {"stream/old.py"}
