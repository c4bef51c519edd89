"""Whether a finished job may be reused: what a job asks for (`request_record`, recorded in its
edit.json as "request"), and the comparison of that record with what is asked now.

A job's record holds what decides its result, resolved as far as it can be without loading the
model: the generation settings (a value not asked for is null: the preset's or the model's), the
vital and skip layers, the schedule's values, the preset, the model (a hub id as given, a local
path made absolute), the T5 folder, the dtype, the recording's content (sha256 of its bytes,
whatever its name), segment, inversion and windows, and the WAV format. How a run goes (devices,
rows per device, memory budget) is not part of it. With the same model, equal records give the
same edit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from musickv_jax.convert.sources import is_hub_id
from musickv_jax.jobs.request import EditRequest, asked_settings
from musickv_jax.pipeline import kv_schedules, presets


def model_identity(source: str) -> str:
  """A model as an identity: a hub id as given, a local path made absolute."""
  text = source.strip()
  return text if is_hub_id(text) else str(Path(text).expanduser().resolve())


def file_digest(path: str | Path) -> str:
  """sha256 of a file's bytes (a recording's content, whatever its name)."""
  digest = hashlib.sha256()
  with open(Path(path).expanduser(), "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return f"sha256:{digest.hexdigest()}"


@dataclasses.dataclass(frozen=True)
class RunIdentity:
  """What decides a job's result besides its request: the model and how its outputs are written."""

  model: str
  t5: str | None = None
  dtype: str = "float32"
  wav_subtype: str = "FLOAT"


def request_record(request: EditRequest, run: RunIdentity) -> dict:
  """What a job asks for (see the module), as JSON values: it compares equal to the record it is
  read back from."""
  asked = asked_settings(request)  # without the model: what depends on it stays open
  record = asked.settings.generation.to_json_dict()
  if request.is_recording and request.audio_end_in_s is None:
    record["audio_end_in_s"] = None  # a recording's own length
  record |= asked.settings.to_json_dict()
  record["schedule"] = kv_schedules.to_json(asked.settings.schedule)
  preset = request.preset
  record["preset"] = preset.name if isinstance(preset, presets.EditPreset) else preset
  record |= {"model": model_identity(run.model), "t5": str(Path(run.t5).expanduser().absolute()) if run.t5 else None,
             "dtype": run.dtype, "wav_subtype": run.wav_subtype,
             "input_audio": file_digest(request.recording.path) if request.is_recording else None}
  if request.is_recording:
    recording, windows = request.recording, request.windows
    record |= {"input_start_s": recording.start_s, "input_end_s": recording.end_s, "downmix": recording.downmix,
               "inversion": recording.variant, "inversion_order": recording.order,
               "sample_latent": recording.sample_latent, "window_s": windows.window_s, "overlap_s": windows.overlap_s}
  return json.loads(json.dumps(record))


def read_record(folder: Path) -> dict | str:
  """A finished job's edit.json, or why it cannot be verified (no record, or no request in it)."""
  try:
    record = json.loads((folder / "edit.json").read_text())
  except (OSError, ValueError):
    return "its edit.json is missing or unreadable"
  if not isinstance(record, dict) or not isinstance(record.get("request"), dict):
    return "its edit.json does not record what it was asked (written by an earlier version)"
  return record


def _shown(value) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


# fields added to the record after it was first written, with the value an older record (without
# them) was made with: such a record still matches a request that asks that value
ADDED_FIELDS = {"init_noise_level": 1.0, "regions": [], "region_crossfade_s": 0.25, "method": "inversion",
                "flowedit_samples": 1, "flowedit_start": 0.8, "flowedit_source_guidance": None}


def request_differences(recorded: dict, asked: dict) -> list[str]:
  """The fields where a finished job's request and what is asked now differ, each with its values."""
  out = []
  for key in [*asked, *(k for k in recorded if k not in asked)]:
    old, new = recorded.get(key, ADDED_FIELDS.get(key)), asked.get(key)
    if old == new:
      continue
    if key == "input_audio" and old is not None and new is not None:
      out.append("input_audio (the recording's content)")
    elif key == "schedule" and old is not None and new is not None:
      out.append("schedule (its values)")
    else:
      out.append(f"{key} ({_shown(old)} -> {_shown(new)})")
  return out


@dataclasses.dataclass
class FinishedJobs:
  """The jobs already done (id -> the seconds they took), and the finished ones that differ from
  what is asked or cannot be verified (id -> one line saying why)."""

  done: dict[str, float] = dataclasses.field(default_factory=dict)
  changed: dict[str, str] = dataclasses.field(default_factory=dict)


def check_finished(jobs: Sequence[tuple[str, str, dict | None]], out_dir: Path) -> FinishedJobs:
  """jobs: (id, where it was asked (e.g. "manifest line 3"), its request_record, or None where it
  could not be built: that job is left to run and fail with its own message). Compares the record
  of every finished job folder under out_dir with what is asked now."""
  found = FinishedJobs()
  for job_id, where, asked in jobs:
    folder = out_dir / job_id
    if not folder.is_dir() or asked is None:
      continue
    record = read_record(folder)
    label = f"job {job_id} ({where})"
    if isinstance(record, str):
      found.changed[job_id] = f"{label}: cannot verify: {record}"
      continue
    differences = request_differences(record["request"], asked)
    if differences:
      found.changed[job_id] = f"{label}: finished with other settings: {', '.join(differences)}"
    else:
      found.done[job_id] = float(record.get("seconds", 0.0))
  return found
