"""The output folder of a command: checked before any work (outputs are written as a set by
musickv_jax.outputs.sets)."""

from __future__ import annotations

import os
from pathlib import Path

from musickv_jax import files
from musickv_jax.cli.runner import UsageError


def check_output_dir(path: str | os.PathLike, flag: str = "output_path") -> Path:
  """The output folder must be a folder that exists or can be created, and be writable. Checked
  before any work with a probe file; nothing is created."""
  out = Path(path).expanduser().absolute()
  if out.exists() and not out.is_dir():
    raise UsageError(f"--{flag} {path}: exists and is not a directory")
  try:
    files.check_writable(out)
  except OSError as e:
    raise UsageError(f"--{flag} {path} is not a writable directory ({e.strerror or e})") from None
  return out
