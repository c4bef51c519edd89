"""Files that ship with the package: model configs and editing presets.

`configs/` at the top of a clone is where people edit them. A wheel carries the same folder
inside the package (pyproject.toml maps it to `musickv_jax/configs`), so an installed package
and a clone find the same files.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def configs_dir() -> Path:
  """The folder of model configs (`<name>.json`) with `presets/` inside it."""
  for candidate in (_PACKAGE / "configs", _PACKAGE.parent / "configs"):  # installed wheel, then a clone
    if (candidate / "presets").is_dir():
      return candidate
  raise FileNotFoundError(f"musickv-jax's configs/ folder is missing from {_PACKAGE} and {_PACKAGE.parent}; "
                          "reinstall the package")


def presets_dir() -> Path:
  return configs_dir() / "presets"
