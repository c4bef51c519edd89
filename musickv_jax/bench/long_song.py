"""The cost of editing a recording longer than the model's window, per second of audio.

A synthetic recording of `seconds` seconds (tones) on a model of the named config with random
weights (the weights do not change the work), edited as musickv-edit edits it: encode the whole
recording, invert it over windows, edit it (the source regenerated and one edit, with CFG) over
windows, decode both. The sampling phases run with `steps` steps and with 1 and are extrapolated to
100 steps: per step = (T(steps) - T(1)) / (steps - 1). Everything runs once untimed first (compile).
"""

from __future__ import annotations

import time

import numpy as np

from musickv_jax.config import ModelConfig
from musickv_jax.pipeline import (
  EditSettings,
  GenerationSettings,
  InversionSettings,
  WindowSettings,
  common,
  kv_schedules,
  long_recording,
)
from musickv_jax.pipeline.recording import encode_audio
from musickv_jax.pipeline.results import SOURCE_GUIDANCE

FULL_STEPS = 100


def synthetic_recording(config: ModelConfig, seconds: float) -> np.ndarray:
  """(channels, samples): a melody of tones, so the recording is not silent."""
  n = int(seconds * config.sample_rate)
  t = np.arange(n) / config.sample_rate
  pitch = 220.0 * 2 ** (np.floor(t * 2) % 8 / 12)  # a new note every half second
  tone = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / config.sample_rate)
  return np.repeat(tone[None], config.vae.audio_channels, axis=0).astype(np.float32)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def run(config: ModelConfig, *, seconds: float = 120.0, steps: int = 2, windows: WindowSettings | None = None,
        log=print) -> dict:
  if steps < 2:
    raise ValueError("the long-recording benchmark needs at least 2 steps to extrapolate (steps and 1)")
  import jax

  from musickv_jax.bench.job import EDITS, SOURCE, random_model, vital_layers
  from musickv_jax.bench.measure import cpu_name

  windows = windows or WindowSettings()
  model = random_model(config)
  audio = synthetic_recording(config, seconds)
  n_samples = audio.shape[-1]
  layers = vital_layers(config)

  def invert(k, latents):
    return long_recording.invert_latents(model, latents, InversionSettings(SOURCE, k), windows, n_samples)

  def edit(k, inverted):
    settings = EditSettings(GenerationSettings(prompts=(SOURCE, EDITS[0]), num_inference_steps=k),
                            vital_layers=layers, schedule=kv_schedules.linear_ramp(k, len(layers)))
    latents, _ = long_recording.edit_latents(model, settings, np.repeat(inverted, 2, 0), windows, n_samples,
                                             source_guidance=SOURCE_GUIDANCE)
    return latents

  encoded = encode_audio(model, audio)  # warm-up: compiles the programs of the run (the `steps`-step
  inverted = invert(1, encoded)        # chunk program compiles inside its timed run: about a second at
  edited = edit(1, inverted)           # real size, against minutes of sampling)
  common.decode(model, edited, 0, n_samples)

  encode_s, encoded = _timed(lambda: np.asarray(encode_audio(model, audio)))
  invert_1, inverted = _timed(lambda: invert(1, encoded))
  invert_k, _ = _timed(lambda: invert(steps, encoded))
  edit_1, edited = _timed(lambda: edit(1, inverted))
  edit_k, _ = _timed(lambda: edit(steps, inverted))
  decode_s, _ = _timed(lambda: common.decode(model, edited, 0, n_samples))
  per_step_invert = (invert_k - invert_1) / (steps - 1)
  per_step_edit = (edit_k - edit_1) / (steps - 1)
  fixed = encode_s + decode_s + (invert_1 - per_step_invert) + (edit_1 - per_step_edit)
  total = fixed + FULL_STEPS * (per_step_invert + per_step_edit)
  layout = windows.layout(config, encoded.shape[-1])
  report = {"device": str(jax.devices()[0]), "cpu": cpu_name(), "config": config.name, "seconds": seconds,
            "latent_frames": int(encoded.shape[-1]), "windows": layout.n_windows,
            "window_frames": layout.width, "overlap_frames": layout.overlap, "steps_run": steps,
            "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2),
            "inversion_per_step_s": round(per_step_invert, 3), "edit_per_step_s": round(per_step_edit, 3),
            "fixed_s": round(fixed, 2), f"total_{FULL_STEPS}_steps_s": round(total, 1),
            "compute_s_per_audio_s": round(total / seconds, 2)}
  log(report)
  return report


def summary(report: dict) -> str:
  return (f"{report['seconds']:g} s recording ({report['config']}, {report['cpu']}, {report['device']}): "
          f"{report['windows']} windows of {report['window_frames']} frames; encode {report['encode_s']} s, "
          f"inversion {report['inversion_per_step_s']} s/step, edit (source + 1 edit, CFG) "
          f"{report['edit_per_step_s']} s/step, decode {report['decode_s']} s; {FULL_STEPS} steps: "
          f"{report[f'total_{FULL_STEPS}_steps_s']} s = {report['compute_s_per_audio_s']} s of compute per second "
          "of audio")
