"""How much memory a run needs, estimated before it starts: the model's parameters, the whole
recording's buffers, and the working memory of each DiT row. A run that cannot fit its budget is
refused in one line before any work, not killed out of memory halfway.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig, to_jnp_dtype
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline.settings import EditSettings, GenerationSettings, WindowSettings
from musickv_jax.sampling import rows as rows_lib
from musickv_jax.sampling import windows as windows_lib

GIB = 2**30


def gib(size: float) -> str:
  return f"{size / GIB:.3g} GiB"


def device_memory_bytes() -> int:
  """The memory of this process's first device: its allocator's limit on GPU/TPU, the host's RAM on
  CPU (and wherever the device keeps no statistics). Only a local device can be asked: in a
  multi-process run the first global device belongs to process 0."""
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except jax.errors.JaxRuntimeError:
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


FLASH_ATTENTION = ("splash", "cudnn")  # kernels that never hold a row's (heads, S, S) logits


def dit_row_bytes(config: ModelConfig, frames: int) -> int:
  """An upper estimate of the working memory of one DiT row of `frames` frames: a layer's
  activations (about 24 tensors of (S, width)) in the matmul dtype's width (float32: 4 bytes,
  bfloat16: 2), and, unless a flash kernel computes the attention, its logits (a few (heads, S, S)
  tensors, float32 whatever the dtype: the softmax runs in float32). At T = 384, float32, it is
  twice what XLA reports for the compiled CPU program. The one estimate behind the memory budget of
  long recordings, batch jobs and the accelerator table (musickv-benchmark --memory_plan)."""
  dit = config.dit
  tokens = dit_tokens(config, frames)
  logit_sets = 2 if config.is_sa3 and dit.differential else 1  # differential attention: two sets of logits
  logits = 0 if dit.attention in FLASH_ATTENTION else 4 * 3 * logit_sets * dit.num_heads * tokens
  return tokens * (_width(config) * 24 * dit.embed_dim + logits)


def dit_tokens(config: ModelConfig, frames: int) -> int:
  """The DiT's sequence for a latent of `frames` frames: Stable Audio 3's memory tokens in front of
  its patches, Stable Audio Open's global token in front of its frames."""
  if config.is_sa3:
    return frames // config.dit.patch_size + config.dit.num_memory_tokens
  return frames + 1


def _width(config: ModelConfig) -> int:
  """Bytes of one activation in the matmul dtype (float32: 4, bfloat16: 2)."""
  return 4 if config.dit.dtype in ("float32", "float64") else 2


def kv_store_bytes(config: ModelConfig, steps: int, n_layers: int, rows: int, frames: int) -> int:
  """The self-attention K/V a run keeps over all its steps: the cached mode's recorded source (a
  row per CFG branch) or the K/V an inversion records (its one conditional row): steps x vital
  layers x rows x tokens x (k, v) x the attention's width (k1, k2 and v for differential
  attention), in the matmul dtype."""
  dit = config.dit
  per_token = (3 if config.is_sa3 and dit.differential else 2) * dit.embed_dim
  return steps * n_layers * rows * dit_tokens(config, frames) * per_token * _width(config)


def check_run(model: LoadedModel, settings: EditSettings | GenerationSettings, frames: int, use_cfg: bool, *,
              kv_from_inversion: bool = False) -> None:
  """Refuses (SettingsError, one line) before anything is allocated a run of one job that cannot fit
  this device's memory by the estimate: the model, every prompt's DiT rows of `frames` frames (two
  with CFG) and the K/V it keeps over its steps (the cached mode, an edit from the inversion's K/V)."""
  config = model.config
  gen = settings.generation if isinstance(settings, EditSettings) else settings
  branches = rows_lib.branches(use_cfg)
  rows = branches * len(gen.prompts)
  kv, field, advice = 0, "prompts", "ask for fewer {prompts}"
  if isinstance(settings, EditSettings) and (kv_from_inversion or settings.injection_mode == "cached"):
    layers, steps = len(settings.vital_layers or ()), gen.num_inference_steps
    kv = kv_store_bytes(config, steps, layers, 1 if kv_from_inversion else branches, frames)
    field = "kv_from_inversion" if kv_from_inversion else "injection_mode"
    advice = ("edit without {field}" if kv_from_inversion else "use {field}=joint") + \
        ", or fewer {num_inference_steps} or {vital_layers}"
  model_bytes, per_row, budget = params_bytes(model), dit_row_bytes(config, frames), device_memory_bytes()
  need = model_bytes + dit_fixed_bytes(config) + rows * per_row + kv
  if need > budget:
    kept = f", the K/V kept over the steps {gib(kv)}" if kv else ""
    raise SettingsError(f"this run needs about {gib(need)} (model {gib(model_bytes)}, {rows} DiT rows of {frames} "
                        f"frames {gib(rows * per_row)}{kept}) but this device has {gib(budget)}; {advice}",
                        field=field, mentions=("prompts", "num_inference_steps", "vital_layers"))


def dit_fixed_bytes(config: ModelConfig) -> int:
  """Working memory of a DiT call besides its rows: the scanned layer's parameters sliced out of the
  stacked tree (twice: the slice and its copy in the matmul layout). Measured: the compiled CPU edit
  step of SAO Small at 2 rows holds 85 MiB of temporaries, 60 MiB of which the rows explain."""
  width = config.dit.embed_dim
  if config.is_sa3:  # (differential) qkv, out, cross q / kv / out, SwiGLU in and out, local conditioning
    per_layer = (5 if config.dit.differential else 3) * width ** 2 + width ** 2 + 4 * width ** 2 + 12 * width ** 2 \
        + 2 * width ** 2 + config.dit.local_add_cond_dim * width
  else:
    per_layer = 12 * width ** 2 + 2 * width * config.dit.cond_token_dim
  return 2 * per_layer * (4 if config.dit.dtype in ("float32", "float64") else 2)


@functools.lru_cache(maxsize=16)
def config_params_bytes(config: ModelConfig) -> int:
  """The bytes of every parameter (DiT, VAE, T5, conditioners) as a run holds them: the DiT and VAE
  in the model's dtype, T5 and the conditioners in float32."""
  from musickv_jax.models.sao import (
    abstract_params,  # eval_shape of the modules: no weights
  )

  tree = abstract_params(config.with_attention("xla"))
  itemsize = np.dtype(to_jnp_dtype(config.dit.dtype)).itemsize
  sizes = {name: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(part)) for name, part in tree.items()}
  return itemsize * (sizes["dit"] + sizes["vae"]) + 4 * (sizes["t5"] + sizes["conditioner"])


def check_rows(config: ModelConfig, model_bytes: int, dit_rows: int, frames: int, budget_gib: float | None,
               *, what: str = "a batch") -> None:
  """Refuses (SettingsError, one line) `dit_rows` DiT rows of `frames` frames that, with the model,
  do not fit the memory budget (None: the device's memory)."""
  given = budget_gib is not None
  budget = budget_gib * GIB if given else device_memory_bytes()
  per_row = dit_row_bytes(config, frames)
  fixed = model_bytes + dit_fixed_bytes(config)
  need = fixed + dit_rows * per_row
  if need > budget:
    fitting = max(0, int((budget - fixed) // per_row))
    has = f"the memory budget ({{field}}) is {gib(budget)}" if given else f"this device has {gib(budget)}"
    raise SettingsError(f"{what} of {dit_rows} DiT rows of {frames} frames needs about {gib(need)} (model "
                        f"{gib(model_bytes)}, {gib(per_row)} a row) but {has}; {fitting} rows fit: lower "
                        "{rows_per_device}", field="memory_budget_gib", mentions=("rows_per_device",))


def params_bytes(model: LoadedModel) -> int:
  return sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(model.params))


def song_bytes(config: ModelConfig, n_samples: int, n_outputs: int) -> int:
  """Whole-recording buffers: the input and every output's audio (float32, twice: decoded and
  written), the latents of every output (and the solver's history of them)."""
  audio = 2 * 4 * config.vae.audio_channels * n_samples * (n_outputs + 1)
  latents = 4 * 4 * config.dit.io_channels * config.frames_for_samples(n_samples) * (n_outputs + 1)
  return audio + latents


def windows_per_batch(model: LoadedModel, settings: WindowSettings, layout: windows_lib.WindowLayout,
                      rows_per_window: int, n_samples: int, n_outputs: int, devices: int = 1) -> int:
  """How many windows a device runs as rows of one batch: the settings' number, else as many as
  the memory budget holds, at most its share of the windows. Raises SettingsError when the
  recording does not fit the budget."""
  config = model.config
  given = settings.memory_budget_gib is not None
  budget = settings.memory_budget_gib * GIB if given else device_memory_bytes()
  model_bytes, song = params_bytes(model), song_bytes(config, n_samples, n_outputs)
  per_window = rows_per_window * dit_row_bytes(config, layout.width)
  available = budget - model_bytes - song
  if available < per_window:
    has = f"the memory budget ({{field}}) is {gib(budget)}" if given else f"this device has {gib(budget)}"
    advice = ("edit a shorter segment ({start_s} / {end_s})" if song > per_window
              else "use a shorter {window_s} or fewer prompts")
    raise SettingsError(f"a {n_samples / config.sample_rate:.1f} s recording needs about "
                        f"{gib(model_bytes + song + per_window)} (model {gib(model_bytes)}, the whole recording's "
                        f"audio and latents {gib(song)}, one window's {rows_per_window} DiT rows "
                        f"{gib(per_window)}) but {has}; {advice}", field="memory_budget_gib",
                        mentions=("start_s", "end_s", "window_s"))
  fitting = int(available // per_window)
  if settings.windows_per_batch is not None:
    # the estimate is an upper one: an explicit number is checked only against an explicit budget
    if given and settings.windows_per_batch > fitting:
      raise SettingsError(f"{{field}} {settings.windows_per_batch} needs about "
                          f"{gib(model_bytes + song + settings.windows_per_batch * per_window)} (an upper "
                          f"estimate) but {{memory_budget_gib}} is {gib(budget)}; use at most {fitting}",
                          field="windows_per_batch", mentions=("memory_budget_gib",))
    return min(settings.windows_per_batch, layout.n_windows)
  return max(1, min(fitting, math.ceil(layout.n_windows / devices)))
