"""One studio edit: what the page or the API asks (EditRequest), resolved into the library's
settings by the same code as musickv-edit's flags (cli.options), so that an edit in the studio
equals `musickv-edit` with the same settings. Every refusal is one line (RequestError)."""

from __future__ import annotations

import dataclasses
import math
import shlex
from pathlib import Path

from musickv_jax.audio import LoadedAudio, load_audio
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.cli import edit as edit_command
from musickv_jax.cli import options
from musickv_jax.cli.runner import Flags, UsageError
from musickv_jax.errors import MusicKVError
from musickv_jax.pipeline import EditSettings, InversionSettings, WindowSettings

SCHEDULES = ("linear_ramp", "constant", "window")

# the studio's names for the flags a message may name (the API's parameters, the page's controls)
STUDIO_NAMES = {"prompts": "prompts", "audio_end_in_s": "duration_s", "input_end_s": "duration_s",
                "input_start_s": "start_s", "input_audio": "audio", "schedule_weight": "strength"}


class RequestError(Exception):
  """A request the studio refuses: one line, shown in the page; the server keeps serving."""


@dataclasses.dataclass(frozen=True)
class EditRequest:
  """What one edit asks. None: the default (the preset's, else the model's)."""

  source_prompt: str
  edit_prompts: tuple[str, ...]
  audio: str | None = None  # a recording to edit (a file path); None: generate the source
  start_s: float = 0.0  # a recording's segment: from start_s ...
  duration_s: float | None = None  # ... for duration_s (0 or None: to the end); a generated source's length
  num_inference_steps: int | None = None
  guidance_scale: float | None = None
  seed: int = 0
  vital_layers: str = ""  # comma-separated; empty: the preset's
  preset: str | None = None  # None: the model's own
  schedule: str | None = None  # linear_ramp, constant, window; None: the preset's
  strength: float | None = None  # the constant and window schedules' weight
  window: tuple[float, float] | None = None  # the window schedule's START, END fractions of the steps

  def flag_values(self) -> dict:
    """The musickv-edit flags this request sets explicitly (what it leaves out takes the defaults)."""
    if not self.source_prompt.strip():
      raise RequestError("source_prompt is empty: describe the source (with a recording: the recording as it is)")
    edits = tuple(p for p in self.edit_prompts if p.strip())
    if not edits:
      raise RequestError("edit_prompt is empty: give the edit (one or more prompts, one a line)")
    for name in ("start_s", "duration_s", "guidance_scale", "strength"):
      value = getattr(self, name)
      if value is not None and not math.isfinite(float(value)):
        raise RequestError(f"{name} must be a finite number, got {value}")
    values: dict = {"prompts": [self.source_prompt.strip(), *(p.strip() for p in edits)],
                    "edit_all": len(edits) > 1, "seed": int(self.seed)}
    if not 0 <= values["seed"] < 2 ** 32:
      raise RequestError(f"seed must be between 0 and 2**32 - 1, got {self.seed}")
    if self.num_inference_steps is not None:
      values["num_inference_steps"] = int(self.num_inference_steps)
    if self.guidance_scale is not None:
      values["guidance_scale"] = float(self.guidance_scale)
    if self.vital_layers.strip():
      values["vital_layers"] = [v.strip() for v in self.vital_layers.split(",")]
    if self.preset:
      values["preset"] = self.preset
    if self.schedule:
      if self.schedule not in SCHEDULES:
        raise RequestError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
      values["schedule"] = self.schedule
    if self.strength is not None:
      values["schedule_weight"] = float(self.strength)
    if self.window is not None:
      values["window"] = [f"{float(v):g}" for v in self.window]
    if self.audio:
      values["input_audio"] = self.audio
      values["input_start_s"] = float(self.start_s or 0.0)
      if self.duration_s:
        values["input_end_s"] = values["input_start_s"] + float(self.duration_s)
    elif self.duration_s is not None:
      values["audio_end_in_s"] = float(self.duration_s)
    return values


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A request resolved against a model: the settings musickv-edit would run with."""

  request: EditRequest
  values: options.Values
  chosen: options.EditFlags
  settings: EditSettings
  recording: LoadedAudio | None
  inversion: InversionSettings | None
  windows: WindowSettings
  notes: tuple[str, ...]

  def command_line(self, model_source: str) -> str:
    """The musickv-edit command that makes the same edit."""
    return equivalent_command(model_source, self.values)


def edit_defaults() -> options.Values:
  """musickv-edit's flag defaults (nothing given)."""
  fv = Flags()
  edit_command.define(fv)
  fv(["musickv-edit"])
  return options.Values.from_flags(fv)


def equivalent_command(model_source: str, values: options.Values) -> str:
  """musickv-edit with the flags given explicitly (the prompts first)."""
  args = ["musickv-edit", "--model", model_source, "--prompts", *values.prompts]
  for name in sorted(values.explicit - {"prompts"}):
    value = values.values[name]
    if isinstance(value, bool):
      args.append(f"--{name}" if value else f"--no{name}")
    elif isinstance(value, list):
      args.append(f"--{name}={','.join(str(v) for v in value)}")
    else:
      args.append(f"--{name}={value}")
  return " ".join(shlex.quote(a) for a in args)


def name_of(field: str) -> str:
  """A library field, as the studio calls it."""
  flag = options.FLAG_OF_FIELD.get(field, field)
  return STUDIO_NAMES.get(flag, flag)


def one_line(error: BaseException, upload: str | None = None) -> str:
  """The message of a refusal, in the studio's names, the upload's temporary path shortened to its name."""
  if isinstance(error, MusicKVError):
    text = error.describe(name_of)
  else:
    text = str(error)
  for flag, name in STUDIO_NAMES.items():
    text = text.replace(f"--{flag}", name)
  if upload:
    text = text.replace(str(upload), Path(upload).name)
  return text.splitlines()[0] if text else type(error).__name__


def resolve(request: EditRequest, model: LoadedModel, defaults: options.Values) -> Resolved:
  """The settings of the request on this model, checked as musickv-edit checks them (the
  recording read, resampled and checked too). Raises RequestError (one line)."""
  try:
    values = defaults.over(request.flag_values())
    real_audio = bool(values.input_audio)
    chosen = options.edit_settings(values, model)
    fitted = options.fit_to_model(chosen, values, model.config, real_audio=real_audio)
    settings = fitted.settings
    settings.validate(model.config)
    recording, inversion = None, None
    if real_audio:
      recording = _load(values, model)
      gen = settings.generation
      inversion = options.inversion_settings(values, gen.prompts[0], gen.num_inference_steps, gen.audio_end_in_s)
    notes = tuple(fitted.notes) + (tuple(recording.warnings) if recording is not None else ())
    return Resolved(request, values, chosen, settings, recording, inversion, options.window_settings(values), notes)
  except (UsageError, MusicKVError, OSError) as e:
    raise RequestError(one_line(e, request.audio)) from None


def _load(values: options.Values, model: LoadedModel) -> LoadedAudio:
  # the same reading and checks as musickv-edit --input_audio (options.load_recording, without printing)
  return load_audio(values.input_audio, sample_rate=model.config.sample_rate,
                    max_seconds=model.config.conditioner.seconds_max, start_s=values.input_start_s,
                    end_s=values.input_end_s, downmix=values.downmix, channels=model.config.vae.audio_channels)
