"""The package's shape: imports only point down the layers of the code map, the library never
imports ``configs/`` or ``experiments/``, and the installed package works from any directory."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ei_snn_jax"

# Rank of each part of the library: a module may import only parts of lower or equal rank.
RANKS = {"errors": 0, "tree": 0, "rules": 0, "core": 1, "roles": 2, "layers": 2, "optim": 3, "models": 3, "data": 3,
         "analysis": 4, "training": 5}


def part_of(module: str) -> str:
  """'ei_snn_jax.core.circuit' -> 'core'; 'ei_snn_jax' (the package itself) -> ''."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def imported_modules(path: pathlib.Path) -> list[str]:
  """Every module ``path`` imports (``from X import a, b`` counts X.a and X.b when X is the
  package, since those are subpackages)."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module == "ei_snn_jax":
        out += [f"ei_snn_jax.{a.name}" for a in node.names]
      else:
        out.append(node.module)
  return out


LIBRARY_FILES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_part_of_the_library_has_a_rank():
  parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in LIBRARY_FILES}
  assert parts - {"__init__"} == set(RANKS)


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down(path):
  """No module imports configs/ or experiments/, nor a part above its own."""
  own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
  for module in imported_modules(path):
    top = module.split(".")[0]
    assert top not in ("configs", "experiments"), f"{path.name} imports {module}"
    if top == "ei_snn_jax" and own in RANKS and part_of(module):
      assert RANKS[part_of(module)] <= RANKS[own], f"{own}/{path.name} imports {module} (upward)"


def test_installed_package_imports_from_any_directory(tmp_path):
  """`pip install .` (or -e) makes the whole library importable outside the checkout, without
  the repository on sys.path and without loading configs/."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  code = ("import sys, ei_snn_jax.training.train, ei_snn_jax.layers, ei_snn_jax.data;"
          "from ei_snn_jax.training import config;"
          "assert config.base_config().model.arch == 'vgg16';"
          "assert not [m for m in sys.modules if m.split('.')[0] in ('configs', 'experiments')];"
          "print(ei_snn_jax.__file__)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, ("install the package first (python -m pip install -r "
                                "requirements.txt): " + proc.stderr[-2000:])
  assert pathlib.Path(proc.stdout.strip()).is_file()
