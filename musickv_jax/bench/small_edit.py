"""A whole Stable Audio Open Small edit as a user runs it: `seconds` of audio, a source and one
edit, with the model's own defaults (ping-pong, 8 steps, guidance 1), real size, random weights
(the weights do not change the work).

  warm   one process, the model loaded and the programs compiled: pipeline.edit, the median of
         `repeats` runs after a first one
  cold   the command line from a fresh process (musickv-edit on a converted checkpoint on disk, no
         compilation cache): its wall time, and the same run's parts measured in a fresh process of
         their own (import, load, T5 and conditioning, compile, sampling, decode)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from musickv_jax.bench.job import EDITS, SOURCE, random_model
from musickv_jax.bench.measure import cpu_name
from musickv_jax.checkpoint import save_checkpoint
from musickv_jax.config import ModelConfig

def _edit_settings(seconds: float):
  from musickv_jax.pipeline import EditSettings, GenerationSettings

  return EditSettings(GenerationSettings(prompts=(SOURCE, EDITS[0]), audio_end_in_s=seconds))


def warm(config: ModelConfig, seconds: float, repeats: int, model=None) -> dict:
  """pipeline.edit on `model` (default: random weights of `config`): the first run, then the median
  of `repeats` runs."""
  from musickv_jax import pipeline

  model = random_model(config) if model is None else model
  settings = _edit_settings(seconds)
  start = time.perf_counter()
  pipeline.edit(model, settings)  # compiles
  first = time.perf_counter() - start
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = pipeline.edit(model, settings)
    runs.append(time.perf_counter() - start)
  gen = result.settings.generation
  return {"first_run_s": round(first, 2), "runs_s": [round(r, 2) for r in runs],
          "median_s": round(statistics.median(runs), 2), "sampler": gen.sampler, "steps": gen.num_inference_steps,
          "guidance_scale": gen.guidance_scale, "audio_s": round(result.audio.shape[-1] / result.sample_rate, 2)}


def cold(config: ModelConfig, seconds: float, log=print, model=None) -> dict:
  """musickv-edit in a fresh process on a converted checkpoint of `model` (default: random weights
  of `config`) written to a temporary folder, no compilation cache; then its parts in another."""
  env = os.environ | {"MUSICKV_COMPILATION_CACHE": "0"}
  with tempfile.TemporaryDirectory(prefix="musickv-small-bench-") as folder:
    checkpoint = Path(folder) / "ckpt"
    model = random_model(config) if model is None else model
    log(f"writing a {config.name} checkpoint with random weights to {checkpoint}")
    save_checkpoint(checkpoint, config, model.params, tokenizer=model.tokenizer, log=lambda message: None)
    del model
    start = time.perf_counter()
    command = [sys.executable, "-c", "from musickv_jax.cli.launch import edit; edit()", "--model", str(checkpoint),
               "--prompts", SOURCE, EDITS[0], "--audio_end_in_s", str(seconds), "--output_path",
               str(Path(folder) / "out")]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
      raise RuntimeError(f"musickv-edit failed: {done.stderr[-2000:]}")
    parts = subprocess.run([sys.executable, "-m", "musickv_jax.bench.edit_parts", str(checkpoint), SOURCE, EDITS[0],
                            str(seconds)], env=env, capture_output=True, text=True)
    if parts.returncode != 0:
      raise RuntimeError(f"the parts run failed: {parts.stderr[-2000:]}")
  return {"command_line_wall_s": round(wall, 2), "parts": json.loads(parts.stdout.strip().splitlines()[-1])}


def run(config: ModelConfig, *, seconds: float = 11.0, repeats: int = 3, log=print) -> dict:
  import jax

  report = {"device": str(jax.devices()[0]), "cpu": cpu_name(), "config": config.name, "seconds": seconds,
            "prompts": [SOURCE, EDITS[0]], "warm": warm(config, seconds, repeats)}
  log(f"warm edit: {report['warm']}")
  report["cold"] = cold(config, seconds, log)
  log(f"cold command line: {report['cold']}")
  return report


def summary(report: dict) -> str:
  w, c = report["warm"], report["cold"]
  parts = ", ".join(f"{k[:-2].replace('_', ' ')} {v} s" for k, v in c["parts"].items())
  return (f"{report['config']}: a {report['seconds']:g} s edit (source + 1 edit, {w['sampler']} {w['steps']} steps, "
          f"guidance {w['guidance_scale']:g}) on {report['cpu']}:\n"
          f"  warm (model loaded, programs compiled): {w['median_s']} s (runs {w['runs_s']})\n"
          f"  cold command line: {c['command_line_wall_s']} s wall; parts: {parts}")
