"""What a finished edit job leaves: its record (edit.json: provenance, every setting and what it
resolved to, the files and roles, how the recording was read) and its files, written as one set
(the WAVs, input.wav for a recording, edit.json, spectrograms.png, index.html), in the folder
musickv-edit, a batch job and a studio edit all share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musickv_jax import files
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.jobs.prepare import PreparedJob
from musickv_jax.pipeline.results import EditResult
from musickv_jax.writers.edit import outputs_record, write_edit_outputs
from musickv_jax.writers.record import provenance
from musickv_jax.writers.sets import OutputSet, write_npy


def edit_record(model: LoadedModel, prepared: PreparedJob, result: EditResult, seconds: float, command: str,
                *, input_audio: str | None = None, extra: dict | None = None) -> dict:
  """edit.json of a job. command: how it was asked (a command line or its equivalent);
  input_audio: how the record names the recording (default: its path as given)."""
  request = prepared.request
  real_audio = request.is_recording
  record = provenance(model, seconds, command) | result.describe() | {
      "preset": prepared.resolved.preset.name if prepared.resolved.preset else None,
      "outputs": outputs_record(result, real_audio)} | (extra or {})
  record["editing"]["schedule"] = prepared.resolved.schedule_name
  record["resolved"]["shared_initial_noise"] = request.init_latents is None and not real_audio
  if real_audio:
    recording = request.recording
    record["real_audio"] |= {
        "input_audio": input_audio if input_audio is not None else recording.path,
        "inverted_latent": recording.inverted_latent, "input_start_s": recording.start_s,
        "input_end_s": recording.end_s,
        "source_sample_rate": prepared.recording.source_rate if prepared.recording is not None else None}
  return record


def stage_job(outputs: OutputSet, prepared: PreparedJob, result: EditResult, record: dict, *,
              input_label: str | None = None, wav_subtype: str = "FLOAT", latents: str | Path | None = None) -> None:
  """Stages every file of a finished job in `outputs` (the caller commits). latents: also write the
  final latents (n, C, T) there (a name in the set, or a path of its own)."""
  request = prepared.request
  if input_label is None:
    input_label = (request.recording.path or "") if request.is_recording else ""
  write_edit_outputs(outputs, result, record, recording=prepared.recording, input_label=str(input_label),
                     wav_subtype=wav_subtype)
  if latents is not None:
    write_npy(outputs.path(latents), np.asarray(result.latents))


def write_job_folder(folder: Path, prepared: PreparedJob, result: EditResult, record: dict, *,
                     wav_subtype: str = "FLOAT") -> None:
  """A job's folder, put in place whole: staged beside it, then renamed over any earlier one (a
  recomputed job replaces its old folder only once the new one is complete). Adds latents.npy."""
  staging = files.temporary_path(folder)
  try:
    with OutputSet(staging, announce=False) as outputs:
      stage_job(outputs, prepared, result, record, wav_subtype=wav_subtype, latents="latents.npy")
      outputs.commit()
    files.replace_directory(staging, folder)
  except BaseException:
    files.remove_path(staging)
    raise
