"""The provenance record every command writes beside its outputs: what ran, on what, with which
versions; the command adds its result's own description (Generation.describe(), ...)."""

from __future__ import annotations

from importlib import metadata

import jax

from musickv_jax.checkpoint import LoadedModel


def _version(package: str) -> str | None:
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def provenance(model: LoadedModel, seconds: float, command: str) -> dict:
  """command: how the run was asked for (a command line, or its equivalent)."""

  return {
      "command": command, "model": str(model.path), "model_name": model.config.name,
      "dtype": model.config.dit.dtype, "device": str(jax.local_devices()[0]), "seconds": round(seconds, 2),
      "versions": {name: _version(name) for name in ("musickv-jax", "jax", "flax")},
  }
