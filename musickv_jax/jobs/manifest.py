"""The job manifest of musickv-edit-batch: one JSON object a line.

  {"id": "piano-to-guitar", "prompts": ["Piano solo", "Acoustic guitar, country, soft"], "seed": 3}
  {"id": "song-1", "input_audio": "audio/song.mp3", "prompts": ["clean indie guitar", "classical piano"]}

`id` (required, unique, letters / digits / . _ -, up to 100 characters: it names the job's
folder) and `prompts` (required: the source description, then at least one edit); optional, with
musickv-edit's flag names: input_audio, input_start_s, input_end_s, seed, num_inference_steps,
guidance_scale, audio_end_in_s, vital_layers, schedule (a name or a .npy path), edit_all,
preset, negative_prompt, latent_length, window_s, overlap_s (a recording longer than the model's
window is edited over overlapping windows, as musickv-edit does), edit_method, init_noise_level,
flowedit_samples, flowedit_start, flowedit_source_guidance, edit_region (a list of [START, END] or
"START,END"), region_crossfade_s. Relative paths are taken from the manifest's folder.
Every line is checked before any work starts; a bad line is reported with its number and skipped,
and never stops the good ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from musickv_jax.files import not_a_file

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
OPTIONAL_KEYS = ("input_audio", "input_start_s", "input_end_s", "seed", "num_inference_steps", "guidance_scale",
                 "audio_end_in_s", "vital_layers", "schedule", "edit_all", "preset", "negative_prompt",
                 "latent_length", "window_s", "overlap_s", "edit_method", "init_noise_level", "flowedit_samples",
                 "flowedit_start", "flowedit_source_guidance", "edit_region", "region_crossfade_s")
_PATH_KEYS = ("input_audio",)


@dataclasses.dataclass(frozen=True)
class JobSpec:
  """One valid manifest line: its id, prompts and the settings it overrides (flag name -> value)."""

  line: int
  id: str
  prompts: tuple[str, ...]
  overrides: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ManifestProblem:
  line: int
  id: str | None
  message: str

  def __str__(self) -> str:
    return f"manifest line {self.line}" + (f" (job {self.id})" if self.id else "") + f": {self.message}"


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value) -> bool:
  """A number that is not NaN or infinite (JSON as Python reads it takes NaN and Infinity)."""
  return _is_number(value) and math.isfinite(value)


def _check_value(key: str, value) -> str | None:
  """Why `value` cannot be the job's `key`, or None."""
  if key in ("seed", "num_inference_steps", "flowedit_samples"):
    return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
  if key in ("guidance_scale", "input_start_s", "flowedit_start", "region_crossfade_s"):
    return None if _is_finite(value) else "must be a finite number"
  if key in ("audio_end_in_s", "input_end_s", "window_s", "overlap_s", "init_noise_level", "flowedit_source_guidance"):
    return None if value is None or _is_finite(value) else "must be a finite number or null"
  if key == "edit_all":
    return None if isinstance(value, bool) else "must be true or false"
  if key == "vital_layers":
    if isinstance(value, str):
      value = [v for v in value.split(",") if v.strip()]
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) or
                                         (isinstance(v, str) and v.strip().lstrip("-").isdigit()) for v in value)
    return None if ok else "must be a list of layer numbers (or \"20,3,4\")"
  if key == "edit_region":
    spans = value if isinstance(value, list) else None
    ok = spans is not None and all(
        (isinstance(span, str) and span.count(",") == 1)
        or (isinstance(span, list) and len(span) == 2 and all(_is_finite(v) for v in span)) for span in spans)
    return None if ok else "must be a list of [START, END] seconds (or \"START,END\" strings)"
  if key in ("schedule", "preset", "latent_length", "input_audio", "edit_method"):
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"
  if key == "negative_prompt":
    return None if value is None or isinstance(value, str) else "must be a string"
  return None


def parse_line(number: int, text: str, base: Path) -> JobSpec | ManifestProblem:
  """One manifest line -> a JobSpec, or the problem with it."""
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    return ManifestProblem(number, None, f"not valid JSON ({e.msg} at column {e.colno})")
  if not isinstance(data, dict):
    return ManifestProblem(number, None, "expected a JSON object with \"id\" and \"prompts\"")
  job_id = data.get("id")
  if not isinstance(job_id, str) or not ID_PATTERN.match(job_id):
    return ManifestProblem(number, None, f"\"id\" is missing or not a folder-safe name (letters, digits, . _ -; "
                                         f"got {job_id!r})")
  unknown = sorted(set(data) - {"id", "prompts", *OPTIONAL_KEYS})
  if unknown:
    return ManifestProblem(number, job_id, f"unknown key(s) {unknown}; a job may set id, prompts, "
                                           + ", ".join(OPTIONAL_KEYS))
  prompts = data.get("prompts")
  if not isinstance(prompts, list) or len(prompts) < 2 or not all(isinstance(p, str) and p.strip() for p in prompts):
    return ManifestProblem(number, job_id, "\"prompts\" must list the source description and at least one edit, "
                                           "all non-empty strings")
  overrides = {}
  for key in OPTIONAL_KEYS:
    if key not in data:
      continue
    why = _check_value(key, data[key])
    if why:
      return ManifestProblem(number, job_id, f"\"{key}\" {why}, got {data[key]!r}")
    value = data[key]
    if key == "vital_layers" and isinstance(value, str):
      value = [v.strip() for v in value.split(",") if v.strip()]
    if key in _PATH_KEYS or (key == "schedule" and value.endswith(".npy")):
      path = Path(value).expanduser()
      value = str(path if path.is_absolute() else base / path)
      problem = not_a_file(value, f"\"{key}\" {data[key]}")
      if problem:
        where = f" (relative paths start at the manifest's folder, {base})" if not Path(value).exists() else ""
        return ManifestProblem(number, job_id, problem + where)
    overrides[key] = value
  return JobSpec(number, job_id, tuple(prompts), overrides)


def read_manifest(path: str | Path) -> tuple[list[JobSpec], list[ManifestProblem]]:
  """Every job of the manifest and every problem found, by line. Duplicate ids: the first keeps the
  id, each later line is a problem."""
  path = Path(path).expanduser()
  jobs, problems, seen = [], [], {}
  for number, text in enumerate(path.read_text().splitlines(), start=1):
    if not text.strip() or text.lstrip().startswith("#"):
      continue
    parsed = parse_line(number, text, path.parent.absolute())
    if isinstance(parsed, ManifestProblem):
      problems.append(parsed)
    elif parsed.id in seen:
      problems.append(ManifestProblem(number, parsed.id, f"duplicate id (first on line {seen[parsed.id]})"))
    else:
      seen[parsed.id] = number
      jobs.append(parsed)
  return jobs, problems
