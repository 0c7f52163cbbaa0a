"""Imports flow one way: each package imports only the packages below it (README, "Layers").

Every import counts, at the top of a module or inside a function (lazy), under TYPE_CHECKING too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> what it may import, bottom-up
ALLOWED: dict[str, set[str]] = {
    "protos": set(),
    "storage": {"protos"},
    "core": {"protos", "storage"},
    "feature_store": {"core", "storage", "protos"},
    "training": {"core", "storage", "feature_store", "protos"},
    "retrieval": {"core", "storage", "feature_store", "protos"},
    "ranking": {"core", "storage", "feature_store", "protos"},
    "orchestrator": {"core", "storage", "protos"},  # retrieval and ranking only over gRPC
}
ALLOWED["evaluation"] = {"training", "retrieval", "ranking", "orchestrator"} | set().union(*ALLOWED.values())
ALLOWED["recsys"] = {"evaluation", *ALLOWED["evaluation"]}
ALLOWED["loadtest"] = {"recsys", *ALLOWED["recsys"]}


def packages() -> set[str]:
    return {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"}


def imports_of(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported top-level package) for every absolute import of one of our packages."""
    ours = packages()
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ours and top != package:
                    found.append((str(path.relative_to(ROOT)), node.lineno, name))
    return found


def test_every_package_has_a_layer() -> None:
    assert packages() <= set(ALLOWED), f"place {sorted(packages() - set(ALLOWED))} in ALLOWED"


def test_no_package_imports_one_above_it() -> None:
    wrong = [f"{f}:{line} imports {name}" for package in sorted(packages())
             for f, line, name in imports_of(package) if name.split(".")[0] not in ALLOWED[package]]
    assert not wrong, "\n".join(wrong)


def test_training_imports_no_service() -> None:
    wrong = [(f, line, name) for f, line, name in imports_of("training")
             if name.split(".")[0] in {"retrieval", "ranking", "orchestrator", "evaluation"}]
    assert not wrong
