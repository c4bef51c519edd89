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


DOC = REPO / "docs" / "architecture.md"


def _contract_layers() -> list[str]:
  import tomllib

  contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
  return next(c for c in contracts if c["id"] == "layers")["layers"]


def test_the_map_states_the_layers_exactly_as_the_contract():
  text = DOC.read_text()
  block = text[text.index("## Layers"):text.index("## From a request")]
  listed = block[block.index("```") + 3:block.index("```", block.index("```") + 3)].strip().splitlines()
  assert [line.strip() for line in listed] == _contract_layers()


def test_every_one_place_of_the_map_exists():
  """Each "one place" of docs/architecture.md names a module attribute that exists (a rename or a
  move that forgets the map fails here)."""
  import importlib
  import re

  text = DOC.read_text()
  table = text[text.index("## Where each decision lives"):text.index("## Data, not state")]
  places = re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`", "\n".join(row.split("|")[2] for row in table.splitlines()
                                                                   if row.startswith("| ") and "---" not in row
                                                                   and not row.startswith("| decision")))
  assert len(places) >= 20
  for place in places:
    parts = place.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module, then attributes
      try:
        target = importlib.import_module("musickv_jax." + ".".join(parts[:split]))
      except ModuleNotFoundError:
        continue
      for attribute in parts[split:]:
        target = getattr(target, attribute)
      break
    else:
      raise AssertionError(f"{place}: no such module under musickv_jax")


def test_the_cfg_rule_is_written_once():
  """"Whether CFG runs" and "rows per prompt row" are asked of sampling.rows, never recomputed."""
  import re

  offenders = []
  for path in (REPO / "musickv_jax").rglob("*.py"):
    if path.name == "rows.py":
      continue
    text = path.read_text()
    for pattern in (r"2 if [\w.]*use_cfg else 1", r"2 \* \w+ if [\w.]*use_cfg else", r"!= 1\.0\)\) or negative"):
      if re.search(pattern, text):
        offenders.append(f"{path.relative_to(REPO)}: {pattern}")
  assert not offenders, offenders
