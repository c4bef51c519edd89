"""The layers of docs/architecture.md hold: `lint-imports` (import-linter, contracts in
pyproject.toml) passes on the package, and fails on a scratch copy with one upward import, so the
contract is live."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"

# not in `make test-fast`: lint-imports runs twice (a few seconds each); the default suite runs it


def lint(root: Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(root))  # the package under `root`, not the installed one
  return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
  result = lint(REPO)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert "Contracts: 3 kept, 0 broken" in result.stdout  # layers, acyclic, no-gradio


def test_an_upward_import_breaks_the_contract(tmp_path):
  shutil.copytree(REPO / "musickv_jax", tmp_path / "musickv_jax", ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
  sampler = tmp_path / "musickv_jax" / "sampling" / "sampler.py"
  sampler.write_text(sampler.read_text().replace("import flax.struct\n",
                                                 "import flax.struct\n\nfrom musickv_jax.pipeline import plan\n", 1))
  result = lint(tmp_path)
  assert result.returncode != 0
  assert "BROKEN" in result.stdout and "musickv_jax.sampling.sampler -> musickv_jax.pipeline.plan" in result.stdout
