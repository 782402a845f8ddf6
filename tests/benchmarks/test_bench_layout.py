"""Every benchmark script prints through the one shared ``emit`` and is in the README."""

from __future__ import annotations

import ast

from tests.support import ROOT

BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.rglob("*.py") if p.name != "_benchlib.py")


def test_only_benchlib_defines_emit_or_prints_figures() -> None:
    for path in SCRIPTS:
        tree = ast.parse(path.read_text(), str(path))
        defined = {node.name for node in ast.walk(tree)
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert "emit" not in defined, f"{path.name} defines its own emit"
        for node in ast.walk(tree):  # a figure printed by hand: json.dumps({"bench": ...})
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                assert not {"bench", "unit"} <= keys, f"{path.name}:{node.lineno} prints a figure"


def test_readme_covers_every_script() -> None:
    readme = (BENCHMARKS / "README.md").read_text()
    for path in [*SCRIPTS, BENCHMARKS / "setup_peers.sh"]:
        assert path.name in readme, f"benchmarks/README.md does not mention {path.name}"


def test_scripts_that_emit_import_the_shared_helper() -> None:
    for path in SCRIPTS:
        source = path.read_text()
        if "emit(" in source:
            assert "from _benchlib import" in source, path.name
