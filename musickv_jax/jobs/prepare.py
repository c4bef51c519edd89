"""Preparing an edit job from a request: every check an edit makes (before any costly work), the
recording read and inverted (or its inversion taken from a cache, or read from a saved file), and
the plan. musickv-edit, musickv-edit-batch and the studio all prepare their jobs here, and run
them with jobs.runner.

A recording is checked in full before it is inverted (an inversion costs as many DiT calls as the
edit): the edit's settings, the windows of a recording longer than the model's window, the memory
of its rows, whether the K/V can be recorded."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from musickv_jax.audio import LoadedAudio, load_audio
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import SettingsError
from musickv_jax.jobs import batching
from musickv_jax.jobs.inversions import InversionCache, InversionKey, audio_digest
from musickv_jax.jobs.request import (
  EditRequest,
  ResolvedEdit,
  check_combinations,
  resolve,
)
from musickv_jax.pipeline import recording as recording_lib
from musickv_jax.pipeline.results import EncodedRecording, Inversion
from musickv_jax.pipeline.settings import EditSettings, WindowSettings
from musickv_jax.sampling.sampler import Listener


_LONG_END = ("{field} does not apply to a recording longer than one window (each window is conditioned on its "
             "start and the recording's length); leave it out")


@dataclasses.dataclass
class PreparedJob:
  """A request made ready to run: its job (plan, or a long recording's inversion), how it resolved,
  the recording as the model hears it, and how its inversion was had."""

  id: str
  resolved: ResolvedEdit
  job: batching.EditJob
  recording: LoadedAudio | None = None
  inversion_cached: bool | None = None  # None: no inversion ran here (a generated source, a saved inversion)
  inversion_seconds: float = 0.0
  # what a person should read: how the recording was read (when prepare read it), a saved inversion's fit
  warnings: tuple[str, ...] = ()

  @property
  def request(self) -> EditRequest:
    return self.resolved.request

  @property
  def settings(self) -> EditSettings:
    return self.job.settings


def read_recording(model: LoadedModel, request: EditRequest) -> LoadedAudio | None:
  """The request's recording at the model's rate and channels (its segment, downmixed if asked),
  checked as every edit checks it; None when the request has no recording file."""
  recording = request.recording
  if recording is None or recording.path is None:
    return None
  cfg = model.config
  # longer than one window: edited over windows (pipeline.long_recording), up to the seconds conditioning's reach
  return load_audio(recording.path, sample_rate=cfg.sample_rate, max_seconds=cfg.conditioner.seconds_max,
                    start_s=recording.start_s, end_s=recording.end_s, downmix=recording.downmix,
                    channels=cfg.vae.audio_channels)


def prepare(model: LoadedModel, request: EditRequest, job_id: str = "edit", *, model_key: str = "",
            inversions: InversionCache | None = None, recording: LoadedAudio | None = None,
            on_step: Listener | None = None, log: Callable[[str], None] = lambda message: None) -> PreparedJob:
  """The request's job on this model. Raises SettingsError (one line, naming the setting) for a
  request that cannot run, before any inversion.

  model_key: the model's name in `inversions` (a server with several models). recording: the
  request's recording already read (read_recording; its warnings are then the caller's to show),
  else read here. on_step: the inversion's
  progress. log: what is about to happen (a long inversion)."""
  check_combinations(request)
  if request.recording is None and (request.windows.window_s is not None or request.windows.overlap_s is not None):
    raise SettingsError("{field} applies to recordings; this edit has none", field="window_s")
  resolved = resolve(request, model)
  settings = resolved.settings
  if request.recording is None:
    job = batching.plan_job(model, job_id, settings, init_latents=request.init_latents,
                            step_noise=request.step_noise)
    return PreparedJob(job_id, resolved, job)
  warnings = []
  if recording is None:
    recording = read_recording(model, request)
    warnings += list(recording.warnings) if recording is not None else []
  if request.recording.inverted_latent:
    inversion = _saved_inversion(model, request, settings, recording, warnings)
    job = batching.plan_job(model, job_id, settings, inversion, windows=request.windows)
    return PreparedJob(job_id, resolved, job, recording, None, 0.0, tuple(warnings))
  if settings.method != "inversion":
    encoded = _encode(model, request, resolved, recording, log)
    job = batching.plan_job(model, job_id, settings, encoded, windows=request.windows)
    return PreparedJob(job_id, resolved, job, recording, None, 0.0, tuple(warnings))
  inversion, cached, seconds = _invert(model, request, resolved, recording, model_key, inversions, on_step, log)
  job = batching.plan_job(model, job_id, settings, inversion, kv_from_inversion=request.recording.kv_from_inversion,
                          windows=request.windows)
  return PreparedJob(job_id, resolved, job, recording, cached, seconds, tuple(warnings))


def _saved_inversion(model: LoadedModel, request: EditRequest, settings: EditSettings, recording: LoadedAudio | None,
                     warnings: list[str]) -> Inversion:
  """An inversion saved by musickv-invert, checked against the recording (when given) and the edit."""
  n_samples = int(recording.audio.shape[-1]) if recording is not None else None
  inversion = recording_lib.load_inversion(request.recording.inverted_latent, model.config, n_samples=n_samples)
  warnings += inversion.notes_for(settings)
  if settings.regions and recording is not None:  # what a region edit pastes back outside its regions
    inversion = dataclasses.replace(inversion, encoded=np.asarray(recording_lib.encode_audio(model, recording.audio)))
  asked = request.windows.geometry()
  if inversion.windows is not None and asked != WindowSettings() and asked != inversion.windows:
    warnings.append(f"the recording was inverted over other windows; its own (window_s {inversion.windows.window_s}, "
                    f"overlap_s {inversion.windows.overlap_s}) are used")
  return inversion


def _encode(model: LoadedModel, request: EditRequest, resolved: ResolvedEdit, recording: LoadedAudio,
            log: Callable[[str], None]) -> EncodedRecording:
  """Every check of an edit that inverts nothing (FlowEdit, SDEdit), then the recording encoded."""
  audio = np.asarray(recording.audio)
  checks = recording_lib.check_recording_edit(model, int(audio.shape[-1]), resolved.settings,
                                              resolved.inversion_settings(), request.windows)
  if checks.geometry is not None and request.audio_end_in_s is not None:
    raise SettingsError(_LONG_END, field="audio_end_in_s")
  for message in checks.messages:
    log(message)
  return recording_lib.encode_recording(model, audio, resolved.settings, request.windows)


def _invert(model: LoadedModel, request: EditRequest, resolved: ResolvedEdit, recording: LoadedAudio,
            model_key: str, inversions: InversionCache | None, on_step: Listener | None,
            log: Callable[[str], None]) -> tuple[Inversion, bool, float]:
  """Every check of the edit and the inversion, then the inversion (or the cache's): (inversion,
  whether it came from the cache, seconds it took)."""
  cfg = model.config
  kv_from_inversion = request.recording.kv_from_inversion
  inversion_settings = resolved.inversion_settings().for_model(cfg)
  audio = recording.audio
  n_samples = int(audio.shape[-1])
  checks = recording_lib.check_recording_edit(model, n_samples, resolved.settings, inversion_settings, request.windows,
                                              kv_from_inversion=kv_from_inversion)
  if checks.geometry is not None and request.audio_end_in_s is not None:
    raise SettingsError(_LONG_END, field="audio_end_in_s")
  record_layers = checks.record_layers
  key = InversionKey(model_key, audio_digest(audio), inversion_settings,
                     dataclasses.astuple(request.windows.geometry()), record_layers)
  found = inversions.get(key) if inversions is not None else None
  if found is not None:
    return found, True, 0.0
  for message in checks.messages:
    log(message)
  start = time.perf_counter()
  inversion = recording_lib.invert_audio(model, np.asarray(audio), inversion_settings, record_layers=record_layers,
                                         windows=request.windows, on_step=on_step)
  if inversions is not None:
    inversions.put(key, inversion)
  return inversion, False, time.perf_counter() - start
