"""The settings of a generation, an edit and an inversion: typed, frozen, validated against a
model config before any work is done. Errors name the offending field (SettingsError.field).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import kv_schedules, limits, presets
from musickv_jax.sampling import inversion, kv, rf_schedules, schedules, solvers
from musickv_jax.sampling import windows as windows_lib

LATENT_LENGTHS = ("full", "fit")
NOISE_CONVENTIONS = ("diffusers", "stable-audio-tools")
METHODS = ("inversion", "flowedit", "sdedit")  # how a recording is edited (pipeline.methods)
MAX_FLOWEDIT_SAMPLES = 16  # FlowEdit's noise draws a step: each is a DiT call of every row
DEFAULT_FLOWEDIT_START = 0.8
DEFAULT_CROSSFADE_S = 0.25  # a region's edges: short enough to stay local, long enough to hide the seam
REFERENCE_VITAL_LAYERS = presets.REFERENCE_LAYERS  # the authors' layers of SAO 1.0 (presets: what other depths get)
MAX_SEED = 2**32 - 1  # JAX keys take 32-bit seeds: larger ones would silently alias smaller ones


def _check_seed(seed: int) -> None:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
    raise SettingsError(f"{{field}} must be an integer from 0 to {MAX_SEED}, got {seed!r}", field="seed")


def _check_steps(steps: int, field: str = "num_inference_steps") -> None:
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
    raise SettingsError(f"{{field}} must be an integer of at least 1, got {steps!r}", field=field)
  limits.check_steps(steps, field)


def _check_sigmas(sigma_schedule: str, sigma_min: float, sigma_max: float) -> None:
  if sigma_schedule not in schedules.SCHEDULES:
    raise SettingsError(f"{{field}} must be one of {', '.join(schedules.SCHEDULES)}, got {sigma_schedule!r}",
                        field="sigma_schedule")
  if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
    raise SettingsError(f"need 0 < {{field}} < {{sigma_max}}, got {sigma_min:g} and {sigma_max:g}",
                        field="sigma_min", mentions=("sigma_max",))


def _check_seconds_range(config: ModelConfig, value: float, field: str) -> None:
  lo, hi = config.conditioner.seconds_min, config.conditioner.seconds_max
  if not lo <= value <= hi:
    raise SettingsError(f"{{field}} {value:g} is outside the seconds conditioner's range [{lo:g}, {hi:g}]",
                        field=field)


def _check_layers(layers: Sequence[int], depth: int, field: str) -> None:
  for layer in layers:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < depth:
      raise SettingsError(f"{{field}}: layer {layer} is out of range; this model's layers are 0..{depth - 1}",
                          field=field)
  repeated = sorted({layer for layer in layers if list(layers).count(layer) > 1})
  if repeated:
    raise SettingsError(f"{{field}}: layer(s) {repeated} listed more than once", field=field)


# ----------------------------------------------------------------------------- generation


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  """Every setting that decides a generation (the sidecar JSON holds exactly these, resolved).

  num_inference_steps, guidance_scale and sampler left None take the model's own defaults
  (ModelConfig.diffusion.defaults: Stable Audio Open 1.0 100 steps of dpmpp-2m at guidance 7,
  Stable Audio Open Small 8 ping-pong steps at guidance 1); `for_model` fills them in. The sigma
  settings and the noise convention apply to the v objective (rectified flow starts from pure noise
  at t = 1 and takes its times from the model's schedule)."""

  prompts: tuple[str, ...]
  negative_prompt: str | None = None
  audio_start_in_s: float = 0.0
  audio_end_in_s: float | None = None  # None: the model's maximum
  num_inference_steps: int | None = None  # None: the model's default
  guidance_scale: float | None = None  # None: the model's default
  sampler: str | None = None  # None: the model's default
  sigma_schedule: str = "exponential"
  sigma_min: float = schedules.SIGMA_MIN
  sigma_max: float = schedules.SIGMA_MAX
  seed: int = 0
  latent_length: str = "full"
  noise_convention: str = "diffusers"  # x_T = noise * sqrt(sigma_max^2 + 1)
  # where sampling starts on the model's time axis, [0, 1]: 1 from pure noise; less from a
  # reference latent noised to that level (audio-to-audio / SDEdit, pipeline.variation); 0 samples
  # nothing (the result is the reference latent itself)
  init_noise_level: float = 1.0

  def resolved_end(self, config: ModelConfig) -> float:
    return config.max_audio_seconds if self.audio_end_in_s is None else float(self.audio_end_in_s)

  def for_model(self, config: ModelConfig) -> "GenerationSettings":
    """These settings with every setting left open taken from the model's defaults."""
    defaults = config.diffusion.defaults
    return dataclasses.replace(
        self, num_inference_steps=defaults.steps if self.num_inference_steps is None else self.num_inference_steps,
        guidance_scale=defaults.guidance_scale if self.guidance_scale is None else self.guidance_scale,
        sampler=defaults.sampler if self.sampler is None else self.sampler)

  def check_sizes(self) -> None:
    """Raises SettingsError for sizes over their caps (pipeline.limits): the prompts, their text and
    the steps asked for. Needs no model: a command checks them before it loads one."""
    limits.check_prompts(self.prompts, self.negative_prompt)
    limits.check_steps(self.num_inference_steps)

  def validate(self, config: ModelConfig) -> None:
    """Raises SettingsError for a request the model cannot serve, before any work is done."""
    self.for_model(config)._validate(config)

  def _validate(self, config: ModelConfig) -> None:
    if isinstance(self.prompts, str) or not self.prompts:
      raise SettingsError("no prompts given in {field}; give at least one", field="prompts")
    self.check_sizes()
    for i, prompt in enumerate(self.prompts):
      if not isinstance(prompt, str) or not prompt.strip():
        raise SettingsError(f"{{field}}: prompt {i + 1} is empty; every prompt needs text", field="prompts")
    if self.negative_prompt is not None and not self.negative_prompt.strip():
      raise SettingsError("{field} is empty; leave it out or give text", field="negative_prompt")
    _check_steps(self.num_inference_steps)
    samplers = config.diffusion.samplers
    if self.sampler not in samplers:
      known = "" if self.sampler in solvers.SOLVERS else "unknown sampler "
      raise SettingsError(f"{{field}}: {known}{self.sampler!r} does not sample this model ({config.diffusion.objective} "
                          f"objective); use one of {', '.join(samplers)}", field="sampler")
    _check_sigmas(self.sigma_schedule, self.sigma_min, self.sigma_max)
    if self.latent_length not in LATENT_LENGTHS:
      raise SettingsError(f"{{field}} must be one of {LATENT_LENGTHS}, got {self.latent_length!r}",
                          field="latent_length")
    if self.noise_convention not in NOISE_CONVENTIONS:
      raise SettingsError(f"{{field}} must be one of {NOISE_CONVENTIONS}, got {self.noise_convention!r}",
                          field="noise_convention")
    if not math.isfinite(self.guidance_scale):
      raise SettingsError(f"{{field}} must be a finite number, got {self.guidance_scale}", field="guidance_scale")
    if self.guidance_scale < 0:
      raise SettingsError(f"{{field}} must be 0 or more, got {self.guidance_scale:g}: below 0 guidance pushes the "
                          "audio away from its prompt; 1 is no guidance, 0 to 1 weaker than none (0: the "
                          "unconditional model), more than 1 stronger", field="guidance_scale")
    level = self.init_noise_level
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not (
        math.isfinite(level) and 0.0 <= level <= 1.0):
      raise SettingsError(f"{{field}} must be from 0 to 1 (1: from pure noise; 0: the recording itself), got "
                          f"{level!r}", field="init_noise_level")
    _check_seed(self.seed)
    start, end, maximum = self.audio_start_in_s, self.resolved_end(config), config.max_audio_seconds
    if not math.isfinite(start) or start < 0:
      raise SettingsError(f"{{field}} must be >= 0, got {start}", field="audio_start_in_s")
    if not math.isfinite(end) or end <= start:
      raise SettingsError(f"{{field}} ({end}) must be greater than {{audio_start_in_s}} ({start})",
                          field="audio_end_in_s", mentions=("audio_start_in_s",))
    if end > maximum + 1e-6:
      raise SettingsError(f"{{field}} {end:g} s is longer than the model's maximum of {maximum:.2f} s; ask for at "
                          f"most {maximum:.2f} s", field="audio_end_in_s")
    rate = config.sample_rate
    if int(end * rate) - int(start * rate) < 1:
      raise SettingsError(f"{{audio_start_in_s}} {start:g} to {{field}} {end:g} is shorter than one sample at "
                          f"{rate} Hz; ask for a longer span", field="audio_end_in_s",
                          mentions=("audio_start_in_s",))
    _check_seconds_range(config, start, "audio_start_in_s")
    _check_seconds_range(config, end, "audio_end_in_s")

  def to_json_dict(self) -> dict:
    return dataclasses.asdict(self) | {"prompts": list(self.prompts)}


# ----------------------------------------------------------------------------- editing


@dataclasses.dataclass(frozen=True)
class EditSettings:
  """A MusicKV edit: prompt 0 is the source, the edits take its K/V in the vital layers.

  vital_layers: None takes the model's default preset's (pipeline.presets.default_for: the
  authors' [20, 3, 4] for Stable Audio Open 1.0).
  schedule: (steps, n_vital) or (steps, n_vital, n_edits) weights (see pipeline.kv_schedules), a
  ScheduleSpec built once the steps are known, or None: the reference's time-varying ramp
  w_i = i / steps.
  edit_all: every prompt after the first is an edit (default: only the second; the rest are
  generated plainly, as the reference does).
  """

  generation: GenerationSettings
  vital_layers: tuple[int, ...] | None = None
  skip_layers: tuple[int, ...] = ()
  schedule: np.ndarray | kv_schedules.ScheduleSpec | None = dataclasses.field(default=None, compare=False)
  injection_mode: str = "joint"
  edit_all: bool = False
  allow_unbounded_schedule: bool = False
  # only these spans (seconds) follow the edit; elsewhere the result is the source (pipeline.regions)
  regions: tuple[tuple[float, float], ...] = ()
  region_crossfade_s: float = DEFAULT_CROSSFADE_S
  # how a recording is edited (pipeline.methods): inversion (invert, then regenerate), flowedit (no
  # inversion: velocity differences from the recording's latent), sdedit (from the recording's latent
  # noised to generation.init_noise_level)
  method: str = "inversion"
  flowedit_samples: int = 1  # noise draws the velocity difference is averaged over, at every step
  flowedit_start: float = DEFAULT_FLOWEDIT_START  # the model time FlowEdit starts at, (0, 1]
  flowedit_source_guidance: float | None = None  # the source branch's guidance (None: the edit's)

  @property
  def n_edits(self) -> int:
    return len(self.generation.prompts) - 1 if self.edit_all else 1

  def for_model(self, config: ModelConfig) -> "EditSettings":
    """These settings with every setting left open taken from the model (its sampling defaults,
    its default preset's vital layers)."""
    layers = presets.default_for(config).vital_layers if self.vital_layers is None else tuple(self.vital_layers)
    return dataclasses.replace(self, generation=self.generation.for_model(config), vital_layers=layers)

  def for_recording(self, config: ModelConfig) -> "EditSettings":
    """for_model for the edit of a recording: a sampler left open is, for the inversion method, the
    deterministic one that the inversion ran backwards (rectified flow's Euler, not the ping-pong
    sampler, whose fresh noise at every step would undo the reconstruction)."""
    gen = self.generation
    if gen.sampler is None and self.method == "inversion":  # FlowEdit and SDEdit run no inversion backwards
      gen = dataclasses.replace(gen, sampler=config.diffusion.deterministic_sampler)
    return dataclasses.replace(self, generation=gen).for_model(config)

  def resolved_schedule(self) -> np.ndarray:
    """The schedule's weights (settings resolved for a model: the steps are known)."""
    steps = self.generation.num_inference_steps
    n_layers = max(len(self.vital_layers), 1)
    if self.schedule is None:
      return kv_schedules.linear_ramp(steps, n_layers)
    if isinstance(self.schedule, kv_schedules.ScheduleSpec):
      return self.schedule.build(steps, n_layers)
    return np.asarray(self.schedule, np.float32)

  def validate(self, config: ModelConfig, *, min_prompts: int = 2) -> np.ndarray:
    """Raises SettingsError for an edit that cannot run; returns the validated schedule."""
    return self.for_model(config)._validate(config, min_prompts)

  def _validate(self, config: ModelConfig, min_prompts: int) -> np.ndarray:
    gen = self.generation
    if isinstance(gen.prompts, str) or len(gen.prompts) < min_prompts:
      raise SettingsError("editing needs at least two prompts in {field}: the source description first, then "
                          "the edit", field="prompts")
    gen.validate(config)
    if not self.vital_layers:
      raise SettingsError("{field} is empty; give at least one layer to inject into", field="vital_layers")
    _check_layers(self.vital_layers, config.dit.depth, "vital_layers")
    _check_layers(self.skip_layers, config.dit.depth, "skip_layers")
    if self.injection_mode not in kv.MODES:
      raise SettingsError(f"{{field}} must be one of {kv.MODES}, got {self.injection_mode!r}",
                          field="injection_mode")
    self._validate_method_and_regions()
    return kv_schedules.validate(self.resolved_schedule(), gen.num_inference_steps, len(self.vital_layers),
                                 self.n_edits, allow_unbounded=self.allow_unbounded_schedule)

  def _validate_method_and_regions(self) -> None:
    if self.method not in METHODS:
      raise SettingsError(f"{{field}} must be one of {', '.join(METHODS)}, got {self.method!r}", field="method")
    samples = self.flowedit_samples
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or not 1 <= samples <= MAX_FLOWEDIT_SAMPLES:
      raise SettingsError(f"{{field}} must be a whole number from 1 to {MAX_FLOWEDIT_SAMPLES}, got {samples!r}",
                          field="flowedit_samples")
    if not _is_real(self.flowedit_start) or not 0.0 < self.flowedit_start <= 1.0:
      raise SettingsError(f"{{field}} must be more than 0 and at most 1 (a time of the model's schedule), got "
                          f"{_seconds(self.flowedit_start)}", field="flowedit_start")
    guidance = self.flowedit_source_guidance
    if guidance is not None and (not _is_real(guidance) or guidance < 0):
      raise SettingsError(f"{{field}} must be a finite number, 0 or more (as the guidance scale), got {guidance!r}",
                          field="flowedit_source_guidance")
    if not _is_real(self.region_crossfade_s) or self.region_crossfade_s < 0:
      raise SettingsError(f"{{field}} must be 0 or more seconds, got {_seconds(self.region_crossfade_s)}",
                          field="region_crossfade_s")
    limits.check_at_most(len(self.regions), limits.MAX_REGIONS, "regions", "regions")
    for region in self.regions:
      if (len(region) != 2 or not all(_is_real(v) for v in region) or not 0 <= region[0] < region[1]):
        raise SettingsError(f"{{field}} {region!r}: a region is START,END seconds with 0 <= START < END",
                            field="regions")
    if self.method == "flowedit" and self.injection_mode != "joint":
      raise SettingsError("FlowEdit compares every edit row with its source row at every step: it needs the joint "
                          "{field}", field="injection_mode")
    if self.regions and self.injection_mode != "joint":
      raise SettingsError("region edits paste the source back at every step, which the source's own row does: they "
                          "need the joint {field}", field="injection_mode")

  def to_json_dict(self) -> dict:
    return {"vital_layers": None if self.vital_layers is None else list(self.vital_layers),
            "skip_layers": list(self.skip_layers),
            "injection_mode": self.injection_mode, "edit_all": self.edit_all,
            "allow_unbounded_schedule": self.allow_unbounded_schedule,
            "regions": [list(region) for region in self.regions], "region_crossfade_s": self.region_crossfade_s,
            "method": self.method, "flowedit_samples": self.flowedit_samples, "flowedit_start": self.flowedit_start,
            "flowedit_source_guidance": self.flowedit_source_guidance}


# ----------------------------------------------------------------------------- inversion


@dataclasses.dataclass(frozen=True)
class InversionSettings:
  """How a recording is inverted. The reference inverts with the source description, no guidance
  (scale 1), 100 deterministic DPM-Solver++(2M) steps, seconds_total = the model's maximum.
  Rectified flow inverts with its Euler ODE over the model's sampling times (variant and order apply
  to the v objective's DPM-Solver++ inversion). num_inference_steps None: the model's default."""

  prompt: str
  num_inference_steps: int | None = None
  variant: str = "reference"  # or "consistent"
  order: int = 2  # 1: first-order (DDIM-like)
  seconds_total: float | None = None  # None: the model's maximum, as the reference
  sample_latent: bool = False  # encode with a sample of the posterior instead of its mean
  seed: int = 0  # for sample_latent
  sigma_schedule: str = "exponential"
  sigma_min: float = schedules.SIGMA_MIN
  sigma_max: float = schedules.SIGMA_MAX

  def resolved_total(self, config: ModelConfig) -> float:
    return config.max_audio_seconds if self.seconds_total is None else float(self.seconds_total)

  def for_model(self, config: ModelConfig) -> "InversionSettings":
    if self.num_inference_steps is not None:
      return self
    return dataclasses.replace(self, num_inference_steps=config.diffusion.defaults.steps)

  def check_sizes(self) -> None:
    """Raises SettingsError for the description's text or the steps over their caps
    (pipeline.limits); needs no model."""
    limits.check_prompts(self.prompt, field="prompt")
    limits.check_steps(self.num_inference_steps)

  def validate(self, config: ModelConfig, frames: int | None = None) -> None:
    """frames: the clean latent's length, when known (it must fit the model's window)."""
    self.for_model(config)._validate(config, frames)

  def _validate(self, config: ModelConfig, frames: int | None) -> None:
    if not isinstance(self.prompt, str) or not self.prompt.strip():
      raise SettingsError("{field}: the source description is empty; describe the recording", field="prompt")
    self.check_sizes()
    _check_steps(self.num_inference_steps)
    if self.variant not in inversion.VARIANTS:
      raise SettingsError(f"{{field}} must be one of {inversion.VARIANTS}, got {self.variant!r}", field="variant")
    if self.order not in (1, 2):
      raise SettingsError(f"{{field}} must be 1 or 2, got {self.order}", field="order")
    _check_seed(self.seed)
    _check_sigmas(self.sigma_schedule, self.sigma_min, self.sigma_max)
    if frames is not None and frames > config.dit.sample_size:
      raise SettingsError(f"the recording needs {frames} latent frames; the model takes at most "
                          f"{config.dit.sample_size} ({config.max_audio_seconds:.2f} s)", field=None)
    total = self.resolved_total(config)
    if not math.isfinite(total):
      raise SettingsError(f"{{field}} must be a finite number, got {total}", field="seconds_total")
    _check_seconds_range(config, total, "seconds_total")

  def plan(self, config: ModelConfig, frames: int) -> inversion.InversionPlan:
    """The inversion's per-step arrays for these settings, a model and a latent of `frames` frames
    (rectified flow's times may depend on the length)."""
    steps = self.for_model(config).num_inference_steps
    if config.diffusion.is_rectified_flow:
      return inversion.make_rf_inversion_plan(rf_schedules.rf_times(steps, config.diffusion.shift, frames))
    return inversion.make_inversion_plan(steps, variant=self.variant, order=self.order, sigma_min=self.sigma_min,
                                         sigma_max=self.sigma_max, schedule=self.sigma_schedule)

  def to_json_dict(self) -> dict:
    return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- windows of a long recording


# A few bars at common tempos (2 bars of 4/4 at 120 bpm), 8 % of the 47.55 s window: long enough
# for the raised-cosine crossfade to hide the seam between windows' predictions, short enough that
# the overlap costs little (a 4-minute song takes 6 windows instead of 5.05).
DEFAULT_OVERLAP_S = 4.0


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
    limits.check_at_most(self.windows_per_batch, limits.MAX_ROWS, "windows_per_batch", "windows")
    if self.memory_budget_gib is not None and (not _is_real(self.memory_budget_gib) or self.memory_budget_gib <= 0):
      raise SettingsError(f"{{field}} must be a positive number of GiB, got {_seconds(self.memory_budget_gib)}",
                          field="memory_budget_gib")

  def layout(self, config: ModelConfig, frames: int) -> windows_lib.WindowLayout:
    """Where the windows of a latent of `frames` frames fall; SettingsError for more than
    limits.MAX_WINDOWS of them (windows far shorter than the model's)."""
    window, overlap = self.frames(config)
    layout = windows_lib.layout(frames, window, overlap)
    if layout.n_windows > limits.MAX_WINDOWS:
      seconds = config.seconds_of_frames(window)
      raise SettingsError(f"{{field}} {seconds:.2f} s covers the recording with {layout.n_windows} windows, more than "
                          f"{limits.MAX_WINDOWS}, the most one request may use; give a longer window",
                          field="window_s")
    return layout

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


def _seconds(value) -> str:
  """A number as the user wrote it (9, not 9.0), anything else as its repr."""
  return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else repr(value)


def _is_real(value) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and \
      math.isfinite(value)
