"""Conversion end to end: read a source layout, map every component through its name table,
check it against the model's abstract parameters, and write a converted checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_dtypes
import numpy as np

from musickv_jax import files
from musickv_jax.checkpoint import check_replaceable, save_checkpoint
from musickv_jax.convert import tables
from musickv_jax.convert.rules import apply_rules
from musickv_jax.convert.sa3_dit_tables import duration_rules, sa3_dit_rules
from musickv_jax.convert.same_tables import same_rules
from musickv_jax.convert.sources import SourceCheckpoint, read_source
from musickv_jax.convert.t5gemma_tables import t5gemma_prefix, t5gemma_rules
from musickv_jax.errors import CheckpointError, ConversionError, TokenizerError
from musickv_jax.models.sao import COMPONENTS, abstract_params, count_params
from musickv_jax.text import load_tokenizer
from musickv_jax.text_gemma import load_gemma_tokenizer

_NUMPY_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def component_rules(source: SourceCheckpoint):
  cfg = source.config
  if cfg.is_sa3:
    return {"dit": sa3_dit_rules(cfg.dit), "vae": same_rules(cfg.vae),
            "t5": t5gemma_rules(cfg.t5, prefix=t5gemma_prefix(source.state_dicts["t5"])),
            "conditioner": duration_rules(cfg.conditioner)}
  return {
      "dit": tables.dit_rules(cfg.dit, source.layout),
      "vae": tables.vae_rules(cfg.vae, source.layout),
      "t5": tables.t5_rules(cfg.t5),
      "conditioner": tables.conditioner_rules(cfg.conditioner, source.layout),
  }


def convert_source(source: SourceCheckpoint, *, dtype: str = "float32", allow_unexpected: bool = False,
                   log: Callable[[str], None] = print) -> dict:
  """Our parameter tree from a read source, every leaf stored in `dtype`."""
  if dtype not in _NUMPY_DTYPES:
    raise ConversionError(f"unsupported {{field}} {dtype!r}; use one of {sorted(_NUMPY_DTYPES)}", field="dtype")
  abstract = abstract_params(source.config)
  rules = component_rules(source)
  params = {}
  for name in COMPONENTS:
    start = time.perf_counter()
    params[name], allowed = apply_rules(
        rules[name], source.state_dicts[name], abstract[name], component=name, source=source.origins[name],
        ignore=source.ignore.get(name, lambda n: False), allow_unexpected=allow_unexpected, dtype=_NUMPY_DTYPES[dtype])
    for key in allowed:
      log(f"  warning: ignored unexpected tensor {key} in {name}")
    log(f"  {name:<12} {count_params(params[name]):>14,d} params  ({time.perf_counter() - start:.1f} s)")
  return params


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> Path:
  """Before anything is read: the output must be new (or, with overwrite, a converted checkpoint
  or an empty folder), writable, and must neither be, contain nor lie inside an input."""
  try:
    final = check_replaceable(output, overwrite)
  except CheckpointError as e:
    raise ConversionError(e.template, field=e.field, mentions=e.mentions) from None
  for given in inputs:
    source = given.expanduser().absolute()
    if final == source or final in source.parents or source in final.parents:
      raise ConversionError(f"{{field}} {final} would overlap the input {source}; write the converted checkpoint "
                            "somewhere else", field="output")
  try:
    files.check_writable(final)
  except OSError as e:
    raise ConversionError(f"{{field}} {final}: cannot write there ({e.strerror or e})", field="output") from None
  return final


def convert_checkpoint(source: str | Path, output: str | Path, *, t5_dir: str | Path | None = None,
                       model_config: str | Path | None = None, hf_token: str | None = None,
                       dtype: str = "float32", overwrite: bool = False, allow_unexpected: bool = False,
                       log: Callable[[str], None] = print) -> Path:
  """Converts any supported checkpoint into a musickv-jax checkpoint directory; returns its path."""
  local_inputs = [Path(p) for p in (source, t5_dir, model_config) if p and Path(p).expanduser().exists()]
  final = _check_output(Path(output), local_inputs, overwrite)
  log(f"reading {source}")
  src = read_source(str(source), t5_dir=Path(t5_dir) if t5_dir else None,
                    model_config=Path(model_config) if model_config else None, hf_token=hf_token)
  log(f"layout: {src.layout}; model: DiT depth {src.config.dit.depth} width {src.config.dit.embed_dim}, "
      f"{src.config.vae.sample_rate} Hz, max {src.config.max_audio_seconds:.2f} s")
  try:
    tokenizer = (load_gemma_tokenizer(src.tokenizer_dir) if src.config.is_sa3
                 else load_tokenizer(src.tokenizer_dir, src.config.t5.max_length))
  except TokenizerError as e:
    raise ConversionError(str(e)) from None
  params = convert_source(src, dtype=dtype, allow_unexpected=allow_unexpected, log=log)
  info = {"source": str(source), "layout": src.layout, "scheduler": src.scheduler,
          "params": {name: count_params(tree) for name, tree in params.items()}}
  try:
    path = save_checkpoint(final, src.config, params, tokenizer=tokenizer, info=info, overwrite=overwrite, log=log)
  except CheckpointError as e:
    raise ConversionError(e.template, field=e.field, mentions=e.mentions) from None
  total_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
  log(f"wrote {path}: {sum(info['params'].values()):,d} params, {total_bytes / 2**20:,.1f} MiB "
      f"({dtype})")
  return path
