"""Converted checkpoints: an Orbax parameter tree, the model config as JSON, the tokenizer.

Layout of a converted directory:
  params/                  Orbax (StandardCheckpointHandler) tree {'dit', 'vae', 't5', 'conditioner'}
  config.json              ModelConfig
  tokenizer/               T5 tokenizer files (tokenizer.json, ...)
  musickv_checkpoint.json  format version, params dtype, provenance, the size of every file
                           under params/ (a copy cut short is caught before Orbax reads it);
                           written last

A checkpoint is written into a hidden sibling directory (see musickv_jax.files) synchronously,
and renamed into place only when complete: an interrupted or failed write never leaves
something that loads, Ctrl-C leaves nothing at all, and the staging folder of a killed
process is removed by the next save into the same parent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from musickv_jax import files
from musickv_jax.config import ModelConfig, to_jnp_dtype
from musickv_jax.errors import CheckpointError, ConfigError
from musickv_jax.models.sao import ModelParams, abstract_params
from musickv_jax.text import load_tokenizer
from musickv_jax.text_gemma import load_gemma_tokenizer

FORMAT = "musickv-jax/1"
MARKER = "musickv_checkpoint.json"
PROBE_PRESET_FILE = "probe_preset.json"  # the checkpoint's own vital layers, once probed (research/probing.py)
_CONTENTS = {"params", "config.json", "tokenizer", MARKER, PROBE_PRESET_FILE}


@dataclasses.dataclass
class LoadedModel:
  """What loading gives: ready-to-use params, config and tokenizer."""

  config: ModelConfig
  params: ModelParams
  tokenizer: Any
  path: Path
  info: dict


def is_converted_checkpoint(path: str | Path) -> bool:
  return (Path(path) / MARKER).is_file()


def check_replaceable(directory: str | Path, overwrite: bool) -> Path:
  """The absolute output path if a checkpoint may be written there: it must not exist, or, with
  `overwrite`, be an empty folder or a converted checkpoint (never a folder of other files)."""
  final = Path(directory).expanduser().absolute()
  if not final.exists() and not final.is_symlink():
    return final
  if not overwrite:
    raise CheckpointError(f"{final} already exists; choose another output directory or set {{overwrite}}",
                          field="output", mentions=("overwrite",))
  if not final.is_dir() or final.is_symlink():
    raise CheckpointError(f"{final} exists and is not a directory; {{overwrite}} replaces only a converted "
                          "checkpoint or an empty folder", field="output", mentions=("overwrite",))
  entries = {p.name for p in final.iterdir()}
  if entries and not (is_converted_checkpoint(final) and entries <= _CONTENTS):
    raise CheckpointError(f"{final} holds files that are not a converted checkpoint; {{overwrite}} replaces only a "
                          "converted checkpoint or an empty folder, so choose another output directory",
                          field="output", mentions=("overwrite",))
  return final


def _tree_dtype(params) -> str:
  dtypes = {np.dtype(leaf.dtype).name for leaf in jax.tree.leaves(params)}
  return dtypes.pop() if len(dtypes) == 1 else "mixed"


def orbax_checkpointer():
  """(orbax.checkpoint, a synchronous checkpointer that works on this process alone). Every
  process of a multi-host job reads and writes its own files: Orbax must not wait for the others
  (their work differs), so this process is its own primary host and the only active one."""
  me = jax.process_index()
  options = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                               barrier_sync_key_prefix=f"musickv-process-{me}")
  handler = ocp.StandardCheckpointHandler(multiprocessing_options=options)
  return ocp, ocp.Checkpointer(handler, multiprocessing_options=options)


def save_checkpoint(directory: str | Path, config: ModelConfig, params: ModelParams | dict, *, tokenizer=None,
                    tokenizer_dir: str | Path | None = None, info: dict | None = None, overwrite: bool = False,
                    log: Callable[[str], None] = print) -> Path:
  """Writes a converted checkpoint atomically. `tokenizer` (an object with save_pretrained) or
  `tokenizer_dir` (a folder to copy) provides the tokenizer files."""
  final = check_replaceable(directory, overwrite)
  if isinstance(params, ModelParams):
    params = params.to_tree()
  final.parent.mkdir(parents=True, exist_ok=True)
  for stale in files.remove_stale_temporaries(final.parent, final.name):
    log(f"removed {stale}, left by an interrupted conversion")
  staging = files.temporary_path(final)
  try:
    staging.mkdir()
    ocp, checkpointer = orbax_checkpointer()
    checkpointer.save(staging / "params", args=ocp.args.StandardSave(params))
    (staging / "config.json").write_text(config.to_json())
    if tokenizer is not None:
      tokenizer.save_pretrained(str(staging / "tokenizer"))
    elif tokenizer_dir is not None:
      shutil.copytree(tokenizer_dir, staging / "tokenizer")
    marker = {"format": FORMAT, "params_dtype": _tree_dtype(params), **(info or {}),
              "files": _file_sizes(staging / "params")}
    (staging / MARKER).write_text(json.dumps(marker, indent=2))
    files.replace_directory(staging, final)
  except BaseException:
    files.remove_path(staging)
    raise
  return final


# ----------------------------------------------------------------------------- loading


def _describe_mismatch(expected: dict, found: dict) -> str:
  exp = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in jax.tree_util.tree_leaves_with_path(expected)}
  got = {jax.tree_util.keystr(p): tuple(l.shape) for p, l in jax.tree_util.tree_leaves_with_path(found)}
  lines = [f"missing {k} (expected shape {exp[k]})" for k in sorted(set(exp) - set(got))]
  lines += [f"unexpected {k} (shape {got[k]})" for k in sorted(set(got) - set(exp))]
  lines += [f"{k}: expected shape {exp[k]}, found {got[k]}" for k in sorted(set(exp) & set(got)) if exp[k] != got[k]]
  return "\n  ".join(lines)


def _file_sizes(folder: Path) -> dict[str, int]:
  return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_file_sizes(directory: Path, expected: dict) -> None:
  """The parameter files recorded at save time must all be there, at their full size."""
  found = _file_sizes(directory / "params") if (directory / "params").is_dir() else {}
  for name, size in expected.items():
    if name not in found:
      raise _damaged(directory, f"params/{name} is missing")
    if found[name] != size:
      raise _damaged(directory, f"params/{name} is {found[name]} bytes instead of {size}")


def _damaged(directory: Path, what: str) -> CheckpointError:
  return CheckpointError(f"{directory}: {what}; the checkpoint is damaged or incomplete (an interrupted copy?), "
                         "convert it again")


def _read_json(directory: Path, name: str) -> dict:
  try:
    data = json.loads((directory / name).read_text())
  except FileNotFoundError:
    raise _damaged(directory, f"{name} is missing") from None
  except (json.JSONDecodeError, UnicodeDecodeError):
    raise _damaged(directory, f"{name} is not valid JSON") from None
  if not isinstance(data, dict):
    raise _damaged(directory, f"{name} is not a JSON object")
  return data


def _quiet_orbax() -> None:
  for name in ("absl", "orbax", "orbax.checkpoint"):
    logging.getLogger(name).setLevel(logging.ERROR)


def load_converted(directory: str | Path, *, dtype: str | None = None, attention: str | None = None,
                   load_tokenizer_files: bool = True, device: jax.Device | None = None) -> LoadedModel:
  """A converted checkpoint directory -> LoadedModel(config, params, tokenizer).

  dtype: 'float32' / 'bfloat16' / 'float16' casts the parameters and sets the DiT and VAE
  compute dtype (T5 keeps its configured dtype); None keeps what was stored.
  attention: how the DiT computes attention (see models/attention_kernels.py); None: the config's.
  device: where the parameters are placed (default: this process's first device).
  """
  directory = Path(directory).expanduser().absolute()
  if not directory.is_dir():
    raise CheckpointError(f"{directory}: no such directory; convert a checkpoint first with "
                          "`musickv-convert --source ... --output DIR`")
  if not is_converted_checkpoint(directory):
    raise CheckpointError(f"{directory} is not a converted musickv-jax checkpoint (no {MARKER}); convert it with "
                          f"`musickv-convert --source {directory} --output DIR`")
  info = _read_json(directory, MARKER)
  if info.get("format") != FORMAT:
    raise CheckpointError(f"{directory}: checkpoint format {info.get('format')!r} is not {FORMAT!r}; convert again")
  try:
    config = ModelConfig.from_dict(_read_json(directory, "config.json"))
  except (ConfigError, TypeError, ValueError) as e:
    raise _damaged(directory, f"config.json does not describe a model ({e})") from None

  if isinstance(info.get("files"), dict):  # checkpoints converted before this record existed have none
    _check_file_sizes(directory, info["files"])
  _quiet_orbax()
  ocp, checkpointer = orbax_checkpointer()
  expected = abstract_params(config)
  # Orbax reports damaged files (cut short, missing chunks, bad metadata) with exceptions of many
  # kinds from deep inside tensorstore; every one of them means the same thing to the user.
  try:
    stored = checkpointer.metadata(directory / "params").item_metadata.tree
  except Exception as e:  # noqa: BLE001
    raise _damaged(directory, f"the parameter metadata cannot be read ({_first_line(e)})") from None
  if jax.tree.structure(expected) != jax.tree.structure(stored) or any(
      tuple(a.shape) != tuple(b.shape) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(stored))):
    raise CheckpointError(f"{directory}: stored parameters do not match its config.json:\n  "
                          + _describe_mismatch(expected, stored))
  sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
  target = jax.tree.map(lambda e, s: jax.ShapeDtypeStruct(e.shape, s.dtype, sharding=sharding), expected, stored)
  try:
    params = checkpointer.restore(directory / "params", args=ocp.args.StandardRestore(target))
  except Exception as e:  # noqa: BLE001  (see above)
    raise _damaged(directory, f"the parameters cannot be read ({_first_line(e)})") from None
  params = ModelParams.from_tree(params)
  if dtype is not None:
    config = config.with_dtype(dtype)
    params = cast_params(params, dtype)
  if attention is not None:
    config = config.with_attention(attention)
  tokenizer = None
  if load_tokenizer_files:
    tokenizer = (load_gemma_tokenizer(directory / "tokenizer") if config.is_sa3
                 else load_tokenizer(directory / "tokenizer", config.t5.max_length))
  return LoadedModel(config=config, params=params, tokenizer=tokenizer, path=directory, info=info)


def cast_params(params: ModelParams, dtype: str) -> ModelParams:
  """The DiT, VAE and conditioner parameters in `dtype`; T5 keeps its own (its config says how it runs)."""
  cast = to_jnp_dtype(dtype)
  convert = lambda tree: jax.tree.map(lambda x: x.astype(cast), tree)  # noqa: E731
  return params.replace(dit=convert(params.dit), vae=convert(params.vae), conditioner=convert(params.conditioner))


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  line = text.splitlines()[0] if text else type(error).__name__
  return line if len(line) <= 160 else line[:157] + "..."
