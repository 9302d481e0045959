"""Imports follow the data flow: each stage imports only the stages before it (docs/ARCHITECTURE.md).

An AST walk over every module of ``src/relrec``, imports inside functions included, so a
function-level import cannot hide a backwards edge or a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "relrec"

# foundations every stage may use, then the stages in data-flow order
FOUNDATIONS = ("errors", "manifest", "config", "vectors", "run")
STAGES = ("data", "content", "model", "index", "evaluate", "rerank", "train", "related",
          "studies", "serve", "cli")
ORDER = {name: position for position, name in enumerate(FOUNDATIONS + STAGES)}
# never imported by serve, even though they come before it
SERVE_NEVER = {"train", "evaluate", "studies"}
# function-level relrec imports allowed, with the reason
LAZY_ALLOWED = {
    ("relrec", "relrec.related"): "`from relrec import RelatedItems` without loading torch "
                                  "for users of relrec.config alone",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("relrec",) + parts).removesuffix(".__init__")
        yield name, path


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            if target == "relrec" or target.startswith("relrec."):
                yield target, id(node) not in top_level, node.lineno


def test_every_module_belongs_to_a_known_stage():
    unknown = {name for name, _ in _modules() if _stage(name) not in ORDER and name != "relrec"}
    assert not unknown, f"modules outside the stages of docs/ARCHITECTURE.md: {sorted(unknown)}"


def test_stages_import_only_earlier_stages():
    backwards = []
    for name, path in _modules():
        source = _stage(name)
        for target, _, line in _imports(path):
            destination = _stage(target)
            if source is None or destination is None or destination == source:
                continue
            if ORDER[destination] > ORDER[source]:
                backwards.append(f"{path.relative_to(PACKAGE)}:{line} {name} -> {target}")
            if source == "serve" and destination in SERVE_NEVER:
                backwards.append(f"{path.relative_to(PACKAGE)}:{line} serve -> {target}")
            if source == "model" and destination == "data":
                backwards.append(f"{path.relative_to(PACKAGE)}:{line} model -> {target}")
    assert not backwards, "imports against the data flow:\n" + "\n".join(backwards)


def test_no_function_level_relrec_imports():
    hidden = [f"{path.relative_to(PACKAGE)}:{line} {target}"
              for name, path in _modules() for target, inner, line in _imports(path)
              if inner and (name, target) not in LAZY_ALLOWED]
    assert not hidden, "function-level relrec imports (move them to the top):\n" + "\n".join(hidden)


def test_the_walk_sees_a_backwards_import_inside_a_function(tmp_path):
    """The checker itself: a function-level import from a later stage is found."""
    module = tmp_path / "example.py"
    module.write_text("def f():\n    from relrec.train.pipeline import train_run\n")
    assert list(_imports(module)) == [("relrec.train.pipeline", True, 2)]
