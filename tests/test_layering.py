"""The layers of docs/architecture.md ("Layers"; the README's "Layout" table repeats them),
checked on the real import graph (every import statement, at any depth, resolved to the
top-level package it names, relative imports included)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"schemas", "catalog", "gendata", "rewards", "trainer", "masters"}
ALLOWED = {
    "schemas": set(),
    "gendata": {"schemas"},
    "rewards": {"schemas"},
    "catalog": {"schemas"},
    "trainer": {"schemas"},
    "masters": OURS - {"masters"},
}


def imported_packages(path: Path, package: str) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add((alias.name.split(".")[0], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside its own package
                found.add((package, node.lineno))
            elif node.module:
                found.add((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            found.add((node.args[0].value.split(".")[0], node.lineno))
    return found


# the distributed engine is the conductor's business: the layers below never import it
CONDUCTOR_ONLY = {"ray"}


def violations(root: Path) -> list[str]:
    out = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for imported, line in imported_packages(path, package):
                if imported in OURS and imported != package and imported not in allowed:
                    out.append(f"{path.relative_to(root)}:{line} imports {imported}")
                elif imported in CONDUCTOR_ONLY and package != "masters":
                    out.append(f"{path.relative_to(root)}:{line} imports {imported}")
    return out


def test_every_package_exists():
    for package in ALLOWED:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_layers_hold():
    assert violations(ROOT) == []


@pytest.mark.parametrize("package,code", [
    ("trainer", "from catalog.store import Catalog\n"),
    ("schemas", "import masters\n"),
    ("gendata", "def f():\n    import rewards.x\n"),
    ("rewards", "import importlib\nimportlib.import_module('gendata.y')\n"),
    ("gendata", "import ray\n"),
    ("catalog", "def f():\n    from ray.util import queue\n"),
])
def test_checker_catches_a_violation(tmp_path, package, code):
    for p in ALLOWED:
        (tmp_path / p).mkdir()
        (tmp_path / p / "__init__.py").write_text("")
    (tmp_path / package / "bad.py").write_text(code)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(f"{package}/bad.py")
