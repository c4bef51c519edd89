"""Recordings longer than the model's window: one inversion and one edit over the whole latent.

The recording is encoded whole (the windowed VAE is exact), and its latent is covered by
overlapping windows of at most the model's length (sampling.windows). At every step of the
inversion and of the edit the DiT runs on every window (the windows are rows of the batch, in
groups sized to the memory budget) and the windows' predictions are fused with smooth weights
that sum to one; the solver steps the whole latent. In the edit, the source's window i injects
its K/V into every edit's window i (the joint mode, with windows as rows).

Conditioning per window, as SAO was trained (random crops of longer files, conditioned on the
crop's start in the file and the file's length): seconds_start = the window's start in the
recording, seconds_total = the recording's length. The prompts are the same for every window.
A recording that fits one window keeps today's single-window path (seconds_start 0,
seconds_total the model's maximum, as the reference).

On several local devices the groups of windows are spread over them (a 1-D `data` mesh, the
parameters replicated), each device running its groups one after another.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.editing import injection
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import common
from musickv_jax.pipeline.conditioning import guided_conditioning
from musickv_jax.pipeline.settings import EditSettings, InversionSettings
from musickv_jax.sampling import guided
from musickv_jax.sampling import inversion as inversion_lib
from musickv_jax.sampling import windows as windows_lib

# A few bars at common tempos (2 bars of 4/4 at 120 bpm), 8 % of the 47.55 s window: long enough
# for the raised-cosine crossfade to hide the seam between windows' predictions, short enough that
# the overlap costs little (a 4-minute song takes 6 windows instead of 5.05).
DEFAULT_OVERLAP_S = 4.0
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class WindowSettings:
  """How a recording longer than one window is covered: windows of `window_s` seconds (None: the
  model's maximum) overlapping by at least `overlap_s` (None: DEFAULT_OVERLAP_S or a quarter of
  the window, whichever is shorter); `windows_per_batch` windows evaluated as
  rows of one batch (None: as many as `memory_budget_gib` allows; None budget: the device's memory)."""

  window_s: float | None = None
  overlap_s: float | None = None  # None: DEFAULT_OVERLAP_S, at most a quarter of the window
  windows_per_batch: int | None = None
  memory_budget_gib: float | None = None

  def frames(self, config: ModelConfig) -> tuple[int, int]:
    """(window, overlap) in latent frames."""
    rate = config.sample_rate / config.vae.hop_length
    window = config.dit.sample_size if self.window_s is None else int(math.floor(self.window_s * rate + 1e-6))
    if self.overlap_s is None:
      return window, min(int(math.ceil(DEFAULT_OVERLAP_S * rate - 1e-6)), window // 4)
    return window, int(math.ceil(self.overlap_s * rate - 1e-6))

  def validate(self, config: ModelConfig) -> None:
    maximum = config.max_audio_seconds
    if self.window_s is not None and (not _is_real(self.window_s) or not 0 < self.window_s <= maximum + 1e-6):
      raise SettingsError(f"{{field}} {_seconds(self.window_s)} s does not fit the model: give more than 0 and at most "
                          f"{maximum:.2f} s (the default)", field="window_s")
    if self.overlap_s is not None and (not _is_real(self.overlap_s) or self.overlap_s < 0):
      raise SettingsError(f"{{field}} must be 0 or more seconds, got {_seconds(self.overlap_s)}", field="overlap_s")
    window, overlap = self.frames(config)
    if window < 1:
      raise SettingsError(f"{{field}} {self.window_s:g} s is shorter than one latent frame; give a longer window",
                          field="window_s")
    if overlap >= window:
      raise SettingsError(f"{{field}} ({self.overlap_s:g} s) must be shorter than the window "
                          f"({window * config.vae.hop_length / config.sample_rate:.2f} s, {{window_s}})",
                          field="overlap_s", mentions=("window_s",))
    if self.windows_per_batch is not None and (isinstance(self.windows_per_batch, bool)
                                               or not isinstance(self.windows_per_batch, (int, np.integer))
                                               or self.windows_per_batch < 1):
      raise SettingsError(f"{{field}} must be a whole number of at least 1, got {self.windows_per_batch!r}",
                          field="windows_per_batch")
    if self.memory_budget_gib is not None and (not _is_real(self.memory_budget_gib) or self.memory_budget_gib <= 0):
      raise SettingsError(f"{{field}} must be a positive number of GiB, got {_seconds(self.memory_budget_gib)}",
                          field="memory_budget_gib")

  def layout(self, config: ModelConfig, frames: int) -> windows_lib.WindowLayout:
    window, overlap = self.frames(config)
    return windows_lib.layout(frames, window, overlap)

  def needs_windows(self, config: ModelConfig, frames: int) -> bool:
    """Whether a latent of `frames` frames is longer than one window."""
    return frames > self.frames(config)[0]

  def to_json_dict(self) -> dict:
    return dataclasses.asdict(self)

  def geometry(self) -> "WindowSettings":
    """Where the windows fall (window, overlap) without how they run (batching, memory): what an
    inversion fixes for the edits that follow it."""
    return WindowSettings(window_s=self.window_s, overlap_s=self.overlap_s)

  def running_as(self, other: "WindowSettings | None") -> "WindowSettings":
    """This geometry, run with `other`'s batching and memory budget."""
    if other is None:
      return self
    return dataclasses.replace(self, windows_per_batch=other.windows_per_batch,
                               memory_budget_gib=other.memory_budget_gib)


def _gib(size: float) -> str:
  return f"{size / GIB:.3g} GiB"


def _seconds(value) -> str:
  """A number as the user wrote it (9, not 9.0), anything else as its repr."""
  return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else repr(value)


def _is_real(value) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and \
      math.isfinite(value)


# ----------------------------------------------------------------------------- memory


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
  latents = 4 * 4 * config.dit.io_channels * (-(-n_samples // config.vae.hop_length)) * (n_outputs + 1)
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
    has = f"the memory budget ({{field}}) is {_gib(budget)}" if given else f"this device has {_gib(budget)}"
    advice = ("edit a shorter segment ({start_s} / {end_s})" if song > per_window
              else "use a shorter {window_s} or fewer prompts")
    raise SettingsError(f"a {n_samples / config.sample_rate:.1f} s recording needs about "
                        f"{_gib(model_bytes + song + per_window)} (model {_gib(model_bytes)}, the whole recording's "
                        f"audio and latents {_gib(song)}, one window's {rows_per_window} DiT rows "
                        f"{_gib(per_window)}) but {has}; {advice}", field="memory_budget_gib",
                        mentions=("start_s", "end_s", "window_s"))
  fitting = int(available // per_window)
  if settings.windows_per_batch is not None:
    # the estimate is an upper one: an explicit number is checked only against an explicit budget
    if given and settings.windows_per_batch > fitting:
      raise SettingsError(f"{{field}} {settings.windows_per_batch} needs about "
                          f"{_gib(model_bytes + song + settings.windows_per_batch * per_window)} (an upper "
                          f"estimate) but {{memory_budget_gib}} is {_gib(budget)}; use at most {fitting}",
                          field="windows_per_batch", mentions=("memory_budget_gib",))
    return min(settings.windows_per_batch, layout.n_windows)
  return max(1, min(fitting, math.ceil(layout.n_windows / devices)))


def default_mesh(mesh: jax.sharding.Mesh | None) -> jax.sharding.Mesh | None:
  """The mesh the windows are spread over: the given one, else every local device (None for one)."""
  if mesh is not None or jax.local_device_count() == 1:
    return mesh
  from musickv_jax.jobs.batching import data_mesh

  return data_mesh()


def _on_mesh(tree, mesh: jax.sharding.Mesh | None):
  """Arrays replicated on the mesh's devices when there are several (one program then sees every
  input on the same devices), else as they are."""
  if mesh is None or mesh.size == 1:
    return tree
  from musickv_jax.jobs.batching import replicate

  return replicate(tree, mesh)


def _placed(model: LoadedModel, mesh: jax.sharding.Mesh | None):
  """The DiT parameters, replicated on the mesh's devices when there are several."""
  return _on_mesh(model.params["dit"], mesh)


def check_edit(model: LoadedModel, settings: EditSettings, window_settings: WindowSettings, n_samples: int,
               mesh: jax.sharding.Mesh | None = None) -> None:
  """Raises SettingsError, before any work, for a long edit that the long path would refuse:
  settings that do not apply per window, and a memory budget that cannot hold its rows."""
  cfg = model.config
  gen = settings.generation
  check_recording(cfg, n_samples, window_settings)
  _check_generation(settings)
  n = len(gen.prompts)
  use_cfg = gen.guidance_scale != 1.0 or gen.negative_prompt is not None  # the source runs at 1, the edits at this
  rows = injection.EditLayout.reference(n, settings.edit_all, use_cfg).rows
  mesh = default_mesh(mesh)
  windows_per_batch(model, window_settings, window_settings.layout(cfg, -(-n_samples // cfg.vae.hop_length)), rows,
                    n_samples, n, 1 if mesh is None else mesh.size)


def _check_generation(settings: EditSettings) -> None:
  gen = settings.generation
  if settings.injection_mode != "joint":
    raise SettingsError("a recording longer than one window is edited in the joint {field} (the cached mode "
                        "would hold every step's K/V of every window)", field="injection_mode")
  if gen.audio_end_in_s is not None:
    raise SettingsError("{field} does not apply to a recording longer than one window (each window is conditioned "
                        "on its start and the recording's length); leave it out", field="audio_end_in_s")
  if gen.audio_start_in_s != 0:
    raise SettingsError("{field} does not apply to a recording longer than one window (each window is conditioned "
                        "on its own start); leave it out", field="audio_start_in_s")


def check_recording(config: ModelConfig, n_samples: int, settings: WindowSettings) -> None:
  """A recording longer than one window must fit the seconds conditioning (its length is each
  window's seconds_total)."""
  settings.validate(config)
  seconds = n_samples / config.sample_rate
  top = config.conditioner.seconds_max
  if seconds > top + 1e-6:
    raise SettingsError(f"the recording is {seconds:.1f} s long; the model's seconds conditioning reaches "
                        f"{top:g} s: edit a segment of at most {top:g} s ({{field}} / {{end_s}})", field="start_s",
                        mentions=("end_s",))


# ----------------------------------------------------------------------------- conditioning


def window_conditioning(model: LoadedModel, prompts, layout: windows_lib.WindowLayout, windows: windows_lib.Windows,
                        seconds_total: float, *, negative_prompt: str | None, guidance: np.ndarray,
                        use_cfg: bool) -> guided.GuidedConditioning:
  """Each window's conditioning (its start, the recording's length), as the rows of every group:
  cross_tokens (groups, R, N, D) and global_cond (groups, R, Dg), rows [branch][window][prompt];
  guidance (G * n,). Padding windows copy window 0."""
  cfg = model.config
  n = len(prompts)
  branches = 2 if use_cfg else 1
  starts = layout.seconds_start(cfg.vae.hop_length, cfg.sample_rate)
  per_window = [guided_conditioning(model, prompts, negative_prompt=negative_prompt, seconds_start=start,
                                    seconds_total=seconds_total, guidance=guidance, use_cfg=use_cfg)
                for start in starts]
  groups, g = windows.groups, windows.per_group

  def grouped(name: str) -> jax.Array:
    stacked = jnp.stack([getattr(c, name) for c in per_window])  # (n_windows, branches * n, ...)
    padding = groups * g - stacked.shape[0]
    if padding:
      stacked = jnp.concatenate([stacked, jnp.repeat(stacked[:1], padding, axis=0)])
    tail = stacked.shape[2:]
    stacked = stacked.reshape((groups, g, branches, n) + tail)
    return jnp.swapaxes(stacked, 1, 2).reshape((groups, branches * g * n) + tail)

  return guided.GuidedConditioning(grouped("cross_tokens"), grouped("global_cond"),
                                   windows_lib.group_rows(jnp.asarray(guidance, jnp.float32), 0, g, n))


def grouped_steps(kv: guided.KVSteps, windows_per_group: int, n_prompts: int) -> guided.KVSteps:
  """KV controls of one run's rows -> the same for a group's rows (each window's edits blend from
  the same window's source)."""
  bypass = kv.bypass
  if bypass is not None and bypass.ndim == 2:
    bypass = windows_lib.group_rows(bypass, 1, windows_per_group, n_prompts)
  return dataclasses.replace(
      kv, inject_weight=windows_lib.group_rows(kv.inject_weight, 2, windows_per_group, n_prompts),
      source_index=windows_lib.group_source_index(kv.source_index, windows_per_group, n_prompts), bypass=bypass)


# ----------------------------------------------------------------------------- inversion and edit


def seconds_total(config: ModelConfig, n_samples: int) -> float:
  return n_samples / config.sample_rate


def invert_latents(model: LoadedModel, latents, settings: InversionSettings, window_settings: WindowSettings,
                   n_samples: int, *, on_step: common.Listener | None = None,
                   layout: windows_lib.WindowLayout | None = None, mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
  """Clean latents (1, C, L) of a long recording -> the latent at sigma_max, one inversion over
  windows, spread over the devices of `mesh` (default: every local device). `layout` overrides
  the settings' windows (tests: a one-window layout)."""
  cfg = model.config
  frames = int(np.shape(latents)[-1])
  if settings.seconds_total is not None and layout is None:
    raise SettingsError("{field} is set per window for a recording longer than one window (its start, the "
                        "recording's length); leave it out", field="seconds_total")
  layout = layout or window_settings.layout(cfg, frames)
  mesh = default_mesh(mesh)
  devices = 1 if mesh is None else mesh.size
  windows = layout.arrays(windows_per_batch(model, window_settings, layout, 1, n_samples, 1, devices), devices)
  total = settings.resolved_total(cfg) if layout.n_windows == 1 else seconds_total(cfg, n_samples)
  cond = window_conditioning(model, [settings.prompt], layout, windows, total, negative_prompt=None,
                             guidance=np.ones((1,), np.float32), use_cfg=False)
  plan = settings.plan()
  with common.progress(on_step):
    inverted, _ = inversion_lib.invert_in_chunks(_placed(model, mesh), *_on_mesh(
        (cond, jnp.asarray(latents, jnp.float32), plan, windows), mesh), dit_config=cfg.dit, mesh=mesh)
  return common.to_host(inverted)


def edit_latents(model: LoadedModel, settings: EditSettings, schedule: np.ndarray, x_init, guidance: np.ndarray,
                 window_settings: WindowSettings, n_samples: int, *, on_step: common.Listener | None = None,
                 layout: windows_lib.WindowLayout | None = None, mesh: jax.sharding.Mesh | None = None,
                 dit_params=None) -> tuple[np.ndarray, list[str]]:
  """The sampling part of a long edit (joint mode, windows as rows, spread over the devices of
  `mesh`, default every local device): x_init (n, C, L) -> final latents (n, C, L) and each
  prompt's role. dit_params: the DiT parameters already placed on the mesh (default: placed here)."""
  cfg = model.config
  gen = settings.generation
  n = len(gen.prompts)
  if layout is None:
    _check_generation(settings)
  frames = int(np.shape(x_init)[-1])
  layout = layout or window_settings.layout(cfg, frames)
  use_cfg = bool(np.any(guidance != 1.0)) or gen.negative_prompt is not None
  edit_layout = injection.EditLayout.reference(n, settings.edit_all, use_cfg)
  mesh = default_mesh(mesh)
  devices = 1 if mesh is None else mesh.size
  windows = layout.arrays(windows_per_batch(model, window_settings, layout, edit_layout.rows, n_samples, n, devices),
                          devices)
  total = gen.resolved_end(cfg) if layout.n_windows == 1 else seconds_total(cfg, n_samples)
  cond = window_conditioning(model, gen.prompts, layout, windows, total, negative_prompt=gen.negative_prompt,
                             guidance=guidance, use_cfg=use_cfg)
  kv = grouped_steps(injection.joint_steps(schedule, tuple(settings.vital_layers), cfg.dit, edit_layout,
                                           tuple(settings.skip_layers)), windows.per_group, n)
  with common.progress(on_step):
    params = dit_params if dit_params is not None else _placed(model, mesh)
    cond, x_init, plan, key, kv, windows = _on_mesh((cond, jnp.asarray(x_init), common.step_plan(gen),
                                                     common.sde_key(gen.seed), kv, windows), mesh)
    latents, _ = guided.sample_in_chunks(params, cond, x_init, plan, key, kv, None, windows, dit_config=cfg.dit,
                                         solver=gen.sampler, use_cfg=use_cfg, mesh=mesh)
  roles = ["source"] + ["edit" if p in edit_layout.edits else "plain" for p in range(1, n)]
  return common.to_host(latents), roles
