"""The four top-level packages resolve to this repo, and shared_model stays free of flwr/client/server."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["server", "client", "shared_model", "simulation"])
def test_package_resolves_to_this_repo(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == REPO / name


def test_shared_model_source_imports_nothing_forbidden() -> None:
    forbidden = {"flwr", "client", "server", "simulation"}
    for file in (REPO / "shared_model").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{file} imports {name}"


def test_importing_shared_model_loads_no_flwr() -> None:
    code = ("import pkgutil, importlib, sys, shared_model\n"
            "for m in pkgutil.walk_packages(shared_model.__path__, 'shared_model.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in ('flwr', 'client', 'server') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_pyproject_is_a_flower_app() -> None:
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["tool"]["flwr"]["app"]["components"] == {"serverapp": "server.app:app",
                                                         "clientapp": "client.app:app"}
    assert data["project"]["scripts"]["moehealth"] == "moehealth.cli:main"
    assert "federations" not in data["tool"]["flwr"]
