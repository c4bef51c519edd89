"""The provenance record every command writes beside its outputs: what ran, on what, with which
versions; the command adds its result's own description (Generation.describe(), ...)."""

from __future__ import annotations

import shlex
from importlib import metadata

import jax

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.cli.runner import invocation


def _version(package: str) -> str | None:
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def command_line() -> str:
  return " ".join(shlex.quote(a) for a in invocation())


def provenance(model: LoadedModel, seconds: float) -> dict:

  return {
      "command": command_line(), "model": str(model.path), "model_name": model.config.name,
      "dtype": model.config.dit.dtype, "device": str(jax.local_devices()[0]), "seconds": round(seconds, 2),
      "versions": {name: _version(name) for name in ("musickv-jax", "jax", "flax")},
  }
