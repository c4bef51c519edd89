"""How much memory a run needs, estimated before it starts: the model's parameters, the whole
recording's buffers, and the working memory of each DiT row. A run that cannot fit its budget is
refused in one line before any work, not killed out of memory halfway.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline.settings import WindowSettings
from musickv_jax.sampling import windows as windows_lib

GIB = 2**30


def gib(size: float) -> str:
  return f"{size / GIB:.3g} GiB"


def device_memory_bytes() -> int:
  """The memory of the first device: its allocator's limit on GPU/TPU, the host's RAM on CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def dit_row_bytes(config: ModelConfig, frames: int) -> int:
  """An upper estimate of the working memory of one DiT row of `frames` frames: a layer's
  activations (about 24 tensors of (S, width)) and its attention logits (a few (heads, S, S)
  tensors), float32. At T = 384 it is twice what XLA reports for the compiled CPU program."""
  dit = config.dit
  tokens = frames + 1  # the global token in front
  return 4 * tokens * (24 * dit.embed_dim + 3 * dit.num_heads * tokens)


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
