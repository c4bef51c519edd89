"""Writing outputs as one set: every file is written to a hidden temporary first and renamed into
place together at `commit()`. A run that fails, is interrupted or is killed before that leaves no
partial output under a final name, and an existing file of the same name stays as it was;
temporaries of killed runs are removed by the next run into the same folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from musickv_jax import files
from musickv_jax.finite import require_finite
from musickv_jax.interrupts import raise_if_interrupted


class OutputSet:
  """with OutputSet(directory) as outputs: write to outputs.path(name) ...; outputs.commit()"""

  def __init__(self, directory: Path, announce: bool = True):
    self.directory = Path(directory)
    self.announce = announce
    self._pending: list[tuple[Path, Path]] = []

  def __enter__(self) -> "OutputSet":
    self.directory.mkdir(parents=True, exist_ok=True)
    for stale in files.remove_stale_temporaries(self.directory):
      print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
    return self

  def path(self, name: str | Path) -> Path:
    """The temporary to write output `name` to (relative to the directory, or a path of its own)."""
    final = self.directory / name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = files.temporary_path(final)
    self._pending.append((tmp, final))
    return tmp

  def commit(self) -> list[Path]:
    """Renames every output into place (and announces it)."""
    raise_if_interrupted()
    done = []
    for tmp, final in self._pending:
      os.replace(tmp, final)
      done.append(final)
      if self.announce:
        print(f"wrote {final}")
    self._pending = []
    return done

  def __exit__(self, exc_type, exc, tb):
    for tmp, _ in self._pending:
      files.remove_path(tmp)
    self._pending = []
    return False


# The last line of defence: each stage checks its own results (musickv_jax.finite); what reaches a
# writer non-finite came from a stage that did not, and is refused all the same.
UNCHECKED_STAGE = "the run"


def write_json(path: Path, data: dict) -> None:
  require_finite(data, stage=UNCHECKED_STAGE, what=f"values in {files.final_name(path)}")
  path.write_text(json.dumps(data, indent=2, default=str, allow_nan=False) + "\n")


def write_npy(path: Path, array) -> None:
  require_finite(array, stage=UNCHECKED_STAGE, what=f"values in {files.final_name(path)}")
  with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary's name
    np.save(f, np.asarray(array), allow_pickle=False)

