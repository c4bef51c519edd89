"""What each way to edit a recording costs (musickv-benchmark --edit_methods): a recording of
`seconds` (a tone with a little noise), its source description and one edit, edited by each method
with the model's defaults, real size, random weights (the weights do not change the work):

  inversion   invert (one conditional DiT row a step), then regenerate source and edit
  flowedit    no inversion: each step evaluates the source and the edit rows (per noise draw)
  sdedit      no inversion: the steps from the noise level down (the default init_noise_level, 0.6)

For each: the DiT rows evaluated (jobs.compare.dit_calls: a row of one DiT call, twice with CFG),
and the wall time of the whole edit (pipeline.edit_audio) in one process, warm (the model loaded,
the programs compiled by a first run): the median of `repeats` runs, encode, inversion, sampling
and decode included."""

from __future__ import annotations

import statistics
import time

import numpy as np

from musickv_jax.bench.job import EDITS, SOURCE, random_model
from musickv_jax.bench.measure import cpu_name
from musickv_jax.config import ModelConfig

METHODS = ("inversion", "flowedit", "sdedit")


def recording(config: ModelConfig, seconds: float) -> np.ndarray:
  rate = config.sample_rate
  t = np.arange(int(seconds * rate)) / rate
  tone = 0.3 * np.sin(2 * np.pi * 220.0 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
  noise = 0.02 * np.random.default_rng(0).normal(size=(config.vae.audio_channels, t.size))
  return (tone[None] + noise).astype(np.float32)


def one_method(model, audio: np.ndarray, method: str, repeats: int) -> dict:
  from musickv_jax import pipeline
  from musickv_jax.pipeline.results import edit_dit_rows, inversion_dit_rows
  from musickv_jax.pipeline.variation import DEFAULT_NOISE_LEVEL

  settings = pipeline.EditSettings(pipeline.GenerationSettings(
      prompts=(SOURCE, EDITS[0]), init_noise_level=DEFAULT_NOISE_LEVEL if method == "sdedit" else 1.0),
      method=method).for_recording(model.config)
  inversion = pipeline.InversionSettings(prompt=SOURCE, num_inference_steps=settings.generation.num_inference_steps)

  def edit_once():
    start = time.perf_counter()
    result, _ = pipeline.edit_audio(model, audio, settings, inversion)
    return result, time.perf_counter() - start

  result, first = edit_once()
  runs = [edit_once()[1] for _ in range(repeats)]
  gen = result.settings.generation
  return {"method": method, "dit_rows": inversion_dit_rows(result.settings) + edit_dit_rows(result.settings,
                                                                                            recording=True),
          "inversion_dit_rows": inversion_dit_rows(result.settings), "first_run_s": round(first, 2),
          "runs_s": [round(r, 2) for r in runs], "median_s": round(statistics.median(runs), 2),
          "steps": gen.num_inference_steps, "sampler": gen.sampler, "guidance_scale": gen.guidance_scale,
          "init_noise_level": gen.init_noise_level if method == "sdedit" else None}


def run(config: ModelConfig, *, seconds: float = 10.0, repeats: int = 2, methods=METHODS, log=print) -> dict:
  import jax

  model = random_model(config)
  audio = recording(config, seconds)
  report = {"device": str(jax.devices()[0]), "cpu": cpu_name(), "config": config.name, "seconds": seconds,
            "prompts": [SOURCE, EDITS[0]], "methods": []}
  for method in methods:
    report["methods"].append(one_method(model, audio, method, repeats))
    log(f"{method}: {report['methods'][-1]}")
  return report


def summary(report: dict) -> str:
  lines = [f"{report['config']}: editing a {report['seconds']:g} s recording (source + 1 edit, the model's defaults) "
           f"on {report['cpu']}, warm, median of the runs:",
           "| method | DiT rows (of which inversion) | wall time (s) |", "|---|---|---|"]
  for m in report["methods"]:
    lines.append(f"| {m['method']} | {m['dit_rows']} ({m['inversion_dit_rows']}) | {m['median_s']} |")
  return "\n".join(lines)
