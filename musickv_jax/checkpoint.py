"""Converted checkpoints: an Orbax parameter tree, the model config as JSON, the tokenizer.

Layout of a converted directory:
  params/                  Orbax (StandardCheckpointer) tree {'dit', 'vae', 't5', 'conditioner'}
  config.json              ModelConfig
  tokenizer/               T5 tokenizer files (tokenizer.json, ...)
  musickv_checkpoint.json  format version, params dtype, provenance; written last

A checkpoint is written into a hidden sibling directory and renamed into place only when
complete, so an interrupted or failed write never leaves something that loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

from musickv_jax.config import ModelConfig, to_jnp_dtype
from musickv_jax.models.sao import abstract_params
from musickv_jax.text import load_tokenizer

FORMAT = "musickv-jax/1"
MARKER = "musickv_checkpoint.json"


class CheckpointError(ValueError):
  """A converted checkpoint is missing, incomplete or does not fit the model."""


@dataclasses.dataclass
class LoadedModel:
  """What one `load_model` call gives: ready-to-use params, config and tokenizer."""

  config: ModelConfig
  params: dict
  tokenizer: Any
  path: Path
  info: dict


def is_converted_checkpoint(path: str | Path) -> bool:
  return (Path(path) / MARKER).is_file()


def _tree_dtype(params) -> str:
  dtypes = {np.dtype(leaf.dtype).name for leaf in jax.tree.leaves(params)}
  return dtypes.pop() if len(dtypes) == 1 else "mixed"


def save_checkpoint(directory: str | Path, config: ModelConfig, params: dict, tokenizer_dir: str | Path | None,
                    *, info: dict | None = None, overwrite: bool = False, tokenizer=None) -> Path:
  """Writes a converted checkpoint atomically. `tokenizer` (an object with save_pretrained) or
  `tokenizer_dir` (a folder to copy) provides the tokenizer files."""
  import orbax.checkpoint as ocp

  final = Path(directory).expanduser().absolute()
  if final.exists() and not overwrite:
    raise CheckpointError(f"{final} already exists; choose another output directory or pass --overwrite")
  final.parent.mkdir(parents=True, exist_ok=True)
  staging = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
  try:
    staging.mkdir()
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(staging / "params", params)
    checkpointer.wait_until_finished()
    (staging / "config.json").write_text(config.to_json())
    if tokenizer is not None:
      tokenizer.save_pretrained(str(staging / "tokenizer"))
    elif tokenizer_dir is not None:
      shutil.copytree(tokenizer_dir, staging / "tokenizer")
    marker = {"format": FORMAT, "params_dtype": _tree_dtype(params), **(info or {})}
    (staging / MARKER).write_text(json.dumps(marker, indent=2))
    if final.exists():  # overwrite: swap in the new one, then drop the old
      retired = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
      os.rename(final, retired)
      os.rename(staging, final)
      shutil.rmtree(retired, ignore_errors=True)
    else:
      os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


def _describe_mismatch(expected: dict, found: dict) -> str:
  exp = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in jax.tree_util.tree_leaves_with_path(expected)}
  got = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in jax.tree_util.tree_leaves_with_path(found)}
  lines = [f"missing {k} (expected shape {exp[k]})" for k in sorted(set(exp) - set(got))]
  lines += [f"unexpected {k} (shape {got[k]})" for k in sorted(set(got) - set(exp))]
  lines += [f"{k}: expected shape {exp[k]}, found {got[k]}" for k in sorted(set(exp) & set(got)) if exp[k] != got[k]]
  return "\n  ".join(lines)


def load_model(directory: str | Path, *, dtype: str | None = None, load_tokenizer_files: bool = True) -> LoadedModel:
  """A converted checkpoint directory -> LoadedModel(config, params, tokenizer).

  dtype: 'float32' / 'bfloat16' / 'float16' casts the parameters and sets the DiT and VAE
  compute dtype (T5 keeps its configured dtype); None keeps what was stored.
  """
  import orbax.checkpoint as ocp

  directory = Path(directory).expanduser().absolute()
  if not directory.is_dir():
    raise CheckpointError(f"{directory}: no such directory; convert a checkpoint first with "
                          "`python -m convert --source ... --output DIR`")
  if not is_converted_checkpoint(directory):
    raise CheckpointError(f"{directory} is not a converted musickv-jax checkpoint (no {MARKER}); convert it with "
                          f"`python -m convert --source {directory} --output DIR`")
  info = json.loads((directory / MARKER).read_text())
  if info.get("format") != FORMAT:
    raise CheckpointError(f"{directory}: checkpoint format {info.get('format')!r} is not {FORMAT!r}; convert again")
  config = ModelConfig.from_json_file(directory / "config.json")

  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(directory / "params").item_metadata.tree
  expected = abstract_params(config)
  if jax.tree.structure(expected) != jax.tree.structure(stored) or any(
      tuple(a.shape) != tuple(b.shape) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(stored))):
    raise CheckpointError(f"{directory}: stored parameters do not match its config.json:\n  "
                          + _describe_mismatch(expected, stored))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda e, s: jax.ShapeDtypeStruct(e.shape, s.dtype, sharding=sharding), expected, stored)
  params = checkpointer.restore(directory / "params", target)
  if dtype is not None:
    config = config.with_dtype(dtype)
    cast = to_jnp_dtype(dtype)
    params = {name: (tree if name == "t5" else jax.tree.map(lambda x: x.astype(cast), tree))
              for name, tree in params.items()}
  tokenizer = load_tokenizer(directory / "tokenizer", config.t5.max_length) if load_tokenizer_files else None
  return LoadedModel(config=config, params=params, tokenizer=tokenizer, path=directory, info=info)
