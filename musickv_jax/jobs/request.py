"""What one edit asks, in the library's own terms, and what it resolves to on a model.

An `EditRequest` is what a person (musickv-edit's flags, a studio form) or a manifest line asks
for. A field left None is not asked: it takes the preset's value, then the model's own (steps,
guidance, sampler, length, vital layers). `resolve(request, model)` gives the `EditSettings` the
edit runs with, with the notes a person should read about defaults that adapted to the model.
Every other field's default here is the one default of the whole project: musickv-edit's flags
and the studio's controls take theirs from `DEFAULTS`.

Precedence, in one place: a value asked for wins; then the preset (the one named, else the
model's default preset: musickv for Stable Audio Open 1.0, musickv-small for Stable Audio Open
Small); then the model's sampling defaults. A recording's edit has the recording's length and
takes the deterministic sampler its inversion runs backwards unless a sampler is asked for.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.errors import ScheduleError, SettingsError
from musickv_jax.pipeline import kv_schedules, limits, presets, variation
from musickv_jax.pipeline import settings as settings_lib
from musickv_jax.pipeline.settings import EditSettings, GenerationSettings, InversionSettings, WindowSettings


@dataclasses.dataclass(frozen=True)
class ScheduleRequest:
  """The injection schedule asked for. name None: linear_ramp where the preset is time-varying,
  else constant. weight: the constant and window schedules' weight; ramp: FROM, TO of linear_ramp
  and cosine; window: START, END fractions of the steps; layer_schedules: per_layer's names."""

  name: str | None = None  # linear_ramp, constant, cosine, window, per_layer, or a .npy file's path
  weight: float = 1.0
  ramp: tuple[float, float] = (0.0, 1.0)
  window: tuple[float, float] = (0.0, 1.0)
  layer_schedules: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RecordingRequest:
  """A recording to edit: a file (any rate, WAV / FLAC / MP3 / OGG) and its segment, and how it is
  inverted; or an inversion saved earlier (`inverted_latent`, with or without the file)."""

  path: str | None = None
  start_s: float = 0.0
  end_s: float | None = None  # None: the end of the file
  downmix: bool = False  # mix more than 2 channels down to stereo
  variant: str = "reference"  # the v objective's inversion: reference or consistent
  order: int = 2  # 2: DPM-Solver++(2M) inversion; 1: first order
  sample_latent: bool = False  # encode with a sample of the VAE posterior instead of its mean
  inverted_latent: str | None = None  # an inversion saved by musickv-invert: edited without inverting again
  kv_from_inversion: bool = False  # edit with the K/V recorded while inverting (no source regenerated)


@dataclasses.dataclass(frozen=True)
class EditRequest:
  """One MusicKV edit as asked: prompt 0 describes the source, the others are edits (see module)."""

  prompts: tuple[str, ...]
  negative_prompt: str | None = None
  audio_start_in_s: float = 0.0
  audio_end_in_s: float | None = None  # None: the preset's length, at most the model's window
  num_inference_steps: int | None = None  # None: the model's
  guidance_scale: float | None = None  # None: the preset's, else the model's
  sampler: str | None = None  # None: the model's (a recording: its inversion's deterministic sampler)
  sigma_schedule: str = "exponential"
  seed: int = 0
  latent_length: str = "full"
  preset: str | presets.EditPreset | None = None  # a shipped name, a file, or a preset; None: the model's
  vital_layers: tuple[int, ...] | None = None  # None: the preset's
  skip_layers: tuple[int, ...] | None = None  # None: the preset's
  schedule: ScheduleRequest = ScheduleRequest()
  allow_unbounded_schedule: bool = False
  injection_mode: str = "joint"
  edit_all: bool = False
  recording: RecordingRequest | None = None
  windows: WindowSettings = WindowSettings()
  # how a recording is edited: inversion, flowedit or sdedit (pipeline.recording)
  method: str = "inversion"
  init_noise_level: float | None = None  # SDEdit's start; None: variation.DEFAULT_NOISE_LEVEL
  flowedit_samples: int = 1
  flowedit_start: float = settings_lib.DEFAULT_FLOWEDIT_START
  flowedit_source_guidance: float | None = None  # None: the edit's guidance
  regions: tuple[tuple[float, float], ...] = ()  # only these spans (seconds) follow the edit
  region_crossfade_s: float = settings_lib.DEFAULT_CROSSFADE_S
  init_latents: np.ndarray | None = dataclasses.field(default=None, compare=False)  # exact x_T (n, C, T)
  step_noise: np.ndarray | None = dataclasses.field(default=None, compare=False)  # (steps, 1, C, T)

  @property
  def is_recording(self) -> bool:
    return self.recording is not None


DEFAULTS = EditRequest(prompts=())  # every default of an edit, for the commands' flags and the studio's controls


@dataclasses.dataclass(frozen=True)
class ResolvedEdit:
  """A request on a model: the settings it runs with, the preset they came from (None only without
  a model), the schedule's name as resolved, and what a person should be told about defaults that
  adapted to the model."""

  request: EditRequest
  settings: EditSettings
  preset: presets.EditPreset | None
  schedule_name: str
  notes: tuple[str, ...] = ()  # templates: {setting} where a setting's name goes (see described_notes)

  def described_notes(self, name_of: Callable[[str], str] = str) -> list[str]:
    """The notes with each setting named by name_of (its flag on the command line)."""
    return [re.sub(r"\{(\w+)\}", lambda m: name_of(m.group(1)), note) for note in self.notes]

  def inversion_settings(self) -> InversionSettings:
    """How the request's recording is inverted: with the source description, the edit's steps and
    seconds conditioning."""
    recording = self.request.recording or RecordingRequest()
    gen = self.settings.generation
    return InversionSettings(prompt=gen.prompts[0], num_inference_steps=gen.num_inference_steps,
                             variant=recording.variant, order=recording.order, seconds_total=gen.audio_end_in_s,
                             sample_latent=recording.sample_latent, seed=gen.seed)


def preset_of(request: EditRequest, config: ModelConfig | None) -> presets.EditPreset | None:
  """The request's preset: as given, a shipped name or a file, else the model's default one (None
  without a model)."""
  if isinstance(request.preset, presets.EditPreset):
    return request.preset
  if request.preset:
    return presets.load(request.preset)
  return presets.default_for(config) if config is not None else None


def schedule_spec(choice: ScheduleRequest, name: str, n_layers: int | None
                  ) -> np.ndarray | kv_schedules.ScheduleSpec:
  """A named schedule (built once the steps are known) or a .npy file's weights. n_layers: the
  vital layers' count, None while it depends on a model not given yet."""
  if name.endswith(".npy"):
    return kv_schedules.load_npy(name)
  if name == "per_layer":
    if n_layers is not None and len(choice.layer_schedules) != n_layers:
      raise ScheduleError(f"{{field}}=per_layer needs one schedule name per vital layer ({n_layers}) in "
                          f"{{layer_schedules}}, got {len(choice.layer_schedules)}", mentions=("layer_schedules",))
    return kv_schedules.ScheduleSpec("per_layer", layers=tuple(
        schedule_spec(choice, layer_name, 1) for layer_name in choice.layer_schedules))
  if name not in kv_schedules.NAMES:
    raise ScheduleError(f"{{field}}: unknown schedule {name!r}; use one of {', '.join(kv_schedules.NAMES)}, "
                        "per_layer, or a .npy file")
  params: dict[str, float] = {}
  if name == "constant":
    params = {"weight": choice.weight}
  elif name in ("linear_ramp", "cosine"):
    params = dict(zip(("start", "end"), choice.ramp))
  elif name == "window":
    params = dict(zip(("start", "end"), choice.window), weight=choice.weight)
  return kv_schedules.ScheduleSpec(name, tuple(params.items()))


def _generation(request: EditRequest, preset: presets.EditPreset | None) -> GenerationSettings:
  guidance = request.guidance_scale
  if guidance is None and preset is not None:
    guidance = preset.guidance_scale
  end = request.audio_end_in_s
  if end is None and preset is not None:
    end = preset.audio_end_in_s
  level = 1.0
  if request.method == "sdedit":
    level = variation.DEFAULT_NOISE_LEVEL if request.init_noise_level is None else request.init_noise_level
  return GenerationSettings(prompts=tuple(request.prompts), negative_prompt=request.negative_prompt,
                            audio_start_in_s=request.audio_start_in_s, audio_end_in_s=end,
                            num_inference_steps=request.num_inference_steps, guidance_scale=guidance,
                            sampler=request.sampler, sigma_schedule=request.sigma_schedule, seed=request.seed,
                            latent_length=request.latent_length, init_noise_level=level)


def asked_settings(request: EditRequest, config: ModelConfig | None = None) -> ResolvedEdit:
  """The request over its preset, before the defaults adapt to the model: a value asked for wins,
  then the preset. Without a model (config None) what depends on it stays open: what a request asks
  for, as a finished batch job recorded it."""
  preset = preset_of(request, config)
  layers = request.vital_layers if request.vital_layers is not None else (
      preset.vital_layers if preset is not None else None)
  skips = request.skip_layers if request.skip_layers is not None else (preset.skip_layers if preset else ())
  time_varying = preset.time_varying if preset is not None else True
  schedule_name = request.schedule.name or ("linear_ramp" if time_varying else "constant")
  schedule = schedule_spec(request.schedule, schedule_name, None if layers is None else len(layers)) \
      if layers != () else None
  settings = EditSettings(generation=_generation(request, preset), vital_layers=layers, skip_layers=tuple(skips),
                          schedule=schedule, injection_mode=request.injection_mode, edit_all=request.edit_all,
                          allow_unbounded_schedule=request.allow_unbounded_schedule,
                          regions=tuple(tuple(region) for region in request.regions),
                          region_crossfade_s=request.region_crossfade_s, method=request.method,
                          flowedit_samples=request.flowedit_samples, flowedit_start=request.flowedit_start,
                          flowedit_source_guidance=request.flowedit_source_guidance)
  return ResolvedEdit(request, settings, preset, schedule_name)


def resolve(request: EditRequest, model: LoadedModel | ModelConfig) -> ResolvedEdit:
  """The settings of the request on a model, validated (SettingsError, naming the field, before any
  work), with the notes on defaults that adapted to the model: steps, guidance and sampler left open
  are the model's (a recording's edit takes the deterministic sampler its inversion ran backwards);
  a recording's edit has the recording's length; a length nobody asked for (the preset's) is cut to
  the model's window."""
  config = model.config if isinstance(model, LoadedModel) else model
  check_sizes(request)
  asked = asked_settings(request, config)
  settings, notes = asked.settings, []
  real_audio = request.is_recording
  if real_audio and request.method == "inversion" and settings.generation.sampler is None and \
      config.diffusion.defaults.sampler != config.diffusion.deterministic_sampler:
    notes.append(f"a recording is edited with the {config.diffusion.deterministic_sampler} sampler, the ODE its "
                 "inversion ran backwards ({sampler} chooses another)")
  settings = settings.for_recording(config) if real_audio else settings.for_model(config)
  gen = settings.generation
  if request.audio_end_in_s is None:
    if real_audio:
      settings = dataclasses.replace(settings, generation=dataclasses.replace(gen, audio_end_in_s=None))
    elif gen.audio_end_in_s is not None and gen.audio_end_in_s > config.max_audio_seconds:
      maximum = config.max_audio_seconds
      notes.append(f"the preset's {gen.audio_end_in_s:g} s is longer than this model's {maximum:.2f} s window; "
                   f"generating {maximum:.2f} s ({{audio_end_in_s}} sets the length)")
      settings = dataclasses.replace(settings, generation=dataclasses.replace(gen, audio_end_in_s=maximum))
  settings.validate(config)
  return dataclasses.replace(asked, settings=settings, notes=tuple(notes))


def check_sizes(request: EditRequest) -> None:
  """Sizes over their caps (pipeline.limits: prompts and their text, steps, windows per batch),
  refused in one line before anything loads or is allocated."""
  limits.check_prompts(request.prompts, request.negative_prompt)
  limits.check_steps(request.num_inference_steps)
  limits.check_at_most(request.windows.windows_per_batch, limits.MAX_ROWS, "windows_per_batch", "windows")


def check_combinations(request: EditRequest) -> None:
  """Sizes over their caps and settings that cannot go together, refused in one line before
  anything loads."""
  check_sizes(request)
  recording = request.recording
  _check_method(request)
  if recording is None:
    return
  if recording.path is None and recording.inverted_latent is None:
    raise SettingsError("a recording's edit needs the recording ({field}) or its saved inversion "
                        "({inverted_latent})", field="input_audio", mentions=("inverted_latent",))
  if recording.kv_from_inversion and recording.inverted_latent:
    raise SettingsError("{field} needs the recording itself (the K/V are recorded while inverting), not a saved "
                        "inversion ({inverted_latent})", field="kv_from_inversion", mentions=("inverted_latent",))
  if request.init_latents is not None:
    raise SettingsError("{field} cannot be combined with a recording (the inverted recording is the initial "
                        "latent)", field="init_latents")
  if request.step_noise is not None:
    raise SettingsError("{field} applies to generated sources (a recording is edited with the deterministic "
                        "sampler its inversion ran backwards)", field="step_noise")


def _check_method(request: EditRequest) -> None:
  """The editing method's own settings, and what each method needs."""
  method, recording = request.method, request.recording
  if method not in settings_lib.METHODS:
    raise SettingsError(f"{{field}} must be one of {', '.join(settings_lib.METHODS)}, got {method!r}", field="method")
  if method != "inversion" and (recording is None or recording.path is None):
    raise SettingsError(f"{{field}} {method} edits a recording without inverting it: give the recording "
                        "({input_audio})", field="method", mentions=("input_audio",))
  if method != "inversion" and recording.inverted_latent:
    raise SettingsError(f"{{field}} {method} inverts nothing: leave out {{inverted_latent}} (a saved inversion is "
                        "for the inversion method)", field="method", mentions=("inverted_latent",))
  if method != "inversion" and recording.kv_from_inversion:
    raise SettingsError(f"{{field}} reads the K/V an inversion recorded; the {method} method inverts nothing",
                        field="kv_from_inversion")
  if request.init_noise_level is not None and method != "sdedit":
    raise SettingsError("{field} is where SDEdit starts: it needs {method}=sdedit", field="init_noise_level",
                        mentions=("method",))
  flowedit_asked = (request.flowedit_samples != DEFAULTS.flowedit_samples
                    or request.flowedit_start != DEFAULTS.flowedit_start
                    or request.flowedit_source_guidance is not None)
  if flowedit_asked and method != "flowedit":
    raise SettingsError("{field} and the other FlowEdit settings need {method}=flowedit", field="flowedit_samples",
                        mentions=("method",))
