"""One studio edit as the page or the API asks it (`StudioRequest`), in the library's request
(jobs.EditRequest): the same request musickv-edit builds from its flags, so a studio edit equals
musickv-edit with the same settings. Every refusal is one line (RequestError), naming the studio's
controls, never a command-line flag."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import DEFAULTS, EditRequest, RecordingRequest, ScheduleRequest
from musickv_jax.jobs.request import check_sizes
from musickv_jax.pipeline.settings import METHODS

SCHEDULES = ("linear_ramp", "constant", "window")
REGIONS_FORMAT = "START,END seconds, several separated by ';' (e.g. 4,7; 20,24)"  # the regions control's label

# the studio's names for the library's settings a message may name (the API's parameters, the page's controls)
STUDIO_NAMES = {"prompts": "prompts", "prompt": "source_prompt", "audio_end_in_s": "duration_s", "end_s": "duration_s",
                "start_s": "start_s", "path": "audio", "input_audio": "audio", "weight": "strength",
                "vital_layers": "vital layers", "skip_layers": "skip layers", "num_inference_steps": "steps",
                "guidance_scale": "guidance", "method": "method", "init_noise_level": "SDEdit level",
                "regions": "regions", "region_crossfade_s": "region crossfade", "methods": "methods"}


class RequestError(Exception):
  """A request the studio refuses: one line, shown in the page; the server keeps serving."""


def name_of(field: str) -> str:
  """A library setting, as the studio calls it."""
  return STUDIO_NAMES.get(field, field)


def one_line(error: BaseException, upload: str | None = None) -> str:
  """The message of a refusal, in the studio's names, the upload's temporary path shortened to its name."""
  text = error.describe(name_of) if isinstance(error, MusicKVError) else str(error)
  if upload:
    text = text.replace(str(upload), Path(upload).name)
  return text.splitlines()[0] if text.strip() else type(error).__name__


def _layers(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in text.split(",") if v.strip())
  except ValueError:
    raise RequestError(f"vital layers must be comma-separated integers (e.g. 20,3,4), got {text!r}") from None


def regions_from_text(text: str) -> tuple[tuple[float, float], ...]:
  """"4,7; 20,24" -> ((4.0, 7.0), (20.0, 24.0)) seconds (a new line also separates regions; empty:
  none, the whole clip follows the edit). Raises RequestError for an entry that is not START,END."""
  regions = []
  for entry in (part.strip() for part in text.replace("\n", ";").split(";")):
    if not entry:
      continue
    try:
      start, end = (float(value) for value in entry.split(","))
    except ValueError:
      raise RequestError(f"regions: {entry!r} is not START,END; write {REGIONS_FORMAT}") from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
      raise RequestError(f"regions: {entry!r} must have 0 <= START < END seconds")
    regions.append((start, end))
  return tuple(regions)


@dataclasses.dataclass(frozen=True)
class StudioRequest:
  """What one edit asks in the studio. None: the default (the preset's, else the model's)."""

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
  method: str = DEFAULTS.method  # how a recording is edited: inversion, flowedit or sdedit
  init_noise_level: float | None = None  # sdedit's level (0: the recording, 1: noise); None: the default
  regions: str = ""  # only these spans follow the edit: REGIONS_FORMAT; empty: the whole clip

  def edit_request(self) -> EditRequest:
    """The library's request (what this leaves out takes the defaults). Raises RequestError."""
    if not self.source_prompt.strip():
      raise RequestError("source_prompt is empty: describe the source (with a recording: the recording as it is)")
    edits = tuple(p.strip() for p in self.edit_prompts if p.strip())
    if not edits:
      raise RequestError("edit_prompt is empty: give the edit (one or more prompts, one a line)")
    for name in ("start_s", "duration_s", "guidance_scale", "strength", "init_noise_level"):
      value = getattr(self, name)
      if value is not None and not math.isfinite(float(value)):
        raise RequestError(f"{name_of(name)} must be a finite number, got {value}")
    if not 0 <= int(self.seed) < 2 ** 32:
      raise RequestError(f"seed must be between 0 and 2**32 - 1, got {self.seed}")
    if self.method not in METHODS:
      raise RequestError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
    if self.init_noise_level is not None and self.method != "sdedit":
      raise RequestError(f"SDEdit level is where SDEdit starts: choose method sdedit (method is {self.method})")
    if self.method != "inversion" and not self.audio:
      raise RequestError(f"method {self.method} edits a recording without inverting it: upload the recording "
                         "(audio), or choose method inversion")
    if self.schedule and self.schedule not in SCHEDULES:
      raise RequestError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
    defaults = ScheduleRequest()
    schedule = ScheduleRequest(name=self.schedule or None,
                               weight=defaults.weight if self.strength is None else float(self.strength),
                               window=defaults.window if self.window is None else tuple(map(float, self.window)))
    recording, end = None, None
    if self.audio:
      start = float(self.start_s or 0.0)
      recording = RecordingRequest(path=self.audio, start_s=start,
                                   end_s=start + float(self.duration_s) if self.duration_s else None)
    elif self.duration_s is not None:
      end = float(self.duration_s)
    request = EditRequest(prompts=(self.source_prompt.strip(), *edits), edit_all=len(edits) > 1, seed=int(self.seed),
                          num_inference_steps=None if self.num_inference_steps is None else int(self.num_inference_steps),
                          guidance_scale=None if self.guidance_scale is None else float(self.guidance_scale),
                          vital_layers=_layers(self.vital_layers) if self.vital_layers.strip() else None,
                          preset=self.preset or None, schedule=schedule, recording=recording, audio_end_in_s=end,
                          method=self.method, regions=regions_from_text(self.regions or ""),
                          init_noise_level=None if self.init_noise_level is None else float(self.init_noise_level))
    try:  # the caps of every request (pipeline.limits), before anything waits in the queue or is allocated
      check_sizes(request)
    except MusicKVError as e:
      raise RequestError(one_line(e)) from None
    return request
