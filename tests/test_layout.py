"""The top-level packages resolve to this repo, layers import downward only, and the hospital
image ships only what a hospital runs."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "client", "shared_model", "simulation", "moehealth")
# What each layer may import from this repo (besides itself). shared_model is what both sides
# agree on; client is what a hospital runs; server is the coordinator; simulation and the
# moehealth CLI / composition root sit on top and may use everything.
ALLOWED = {
    "shared_model": set(),
    "client": {"shared_model"},
    "server": {"shared_model"},
    "simulation": {"shared_model", "client", "server"},
    "moehealth": {"shared_model", "client", "server", "simulation"},
}


def _repo_imports(file: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of this repo's packages, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(file.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in PACKAGES]
    return found


@pytest.mark.parametrize("name", ["server", "client", "shared_model", "simulation"])
def test_package_resolves_to_this_repo(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == REPO / name


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_the_layers_below_it(layer: str) -> None:
    upward = [f"{file.relative_to(REPO)}:{line} imports {target}"
              for file in (REPO / layer).rglob("*.py")
              for line, target in _repo_imports(file)
              if target != layer and target not in ALLOWED[layer]]
    assert not upward, "\n".join(upward)


def test_shared_model_imports_no_flwr() -> None:
    offenders = [str(f.relative_to(REPO)) for f in (REPO / "shared_model").rglob("*.py")
                 if re.search(r"^\s*(from|import) flwr\b", f.read_text(), re.MULTILINE)]
    assert not offenders
    code = ("import pkgutil, importlib, sys, shared_model\n"
            "for m in pkgutil.walk_packages(shared_model.__path__, 'shared_model.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in ('flwr', 'client', 'server') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_hospital_image_holds_no_server_or_simulation_code() -> None:
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile.supernode").read_text()
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+\s*$", dockerfile, re.MULTILINE)
    sources = {s for line in copied for s in line.split()}
    assert {"client", "shared_model"} <= {s.rstrip("/") for s in sources}, sources
    assert not {"server", "simulation", "."} & {s.rstrip("/") for s in sources}, sources


def test_pyproject_is_a_flower_app() -> None:
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["tool"]["flwr"]["app"]["components"] == {"serverapp": "moehealth.serverapp:app",
                                                         "clientapp": "client.app:app"}
    assert data["project"]["scripts"]["moehealth"] == "moehealth.cli:main"
    assert "federations" not in data["tool"]["flwr"]


def test_no_private_flower_name_is_used() -> None:
    """Flower only through its public API: no attribute our code reads starts with one
    underscore and is a private method or attribute of Flower's own source."""
    import flwr

    flower_private: set[str] = set()
    for path in Path(flwr.__file__).parent.rglob("*.py"):
        text = path.read_text(errors="ignore")
        flower_private |= set(re.findall(r"def (_[a-z]\w*)", text))
        flower_private |= set(re.findall(r"self\.(_[a-z]\w*)", text))
    used = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and re.match(r"_[a-z]", node.attr):
                    used.setdefault(node.attr, set()).add(str(path.relative_to(REPO)))
    assert "_check_and_log_replies" in flower_private  # the check can see what it looks for
    shared = {name: sorted(paths) for name, paths in used.items() if name in flower_private}
    assert not shared, f"private Flower names used: {shared}"
