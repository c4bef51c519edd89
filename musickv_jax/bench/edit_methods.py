"""What each way to edit a recording costs (musickv-benchmark --edit_methods): a recording of
`seconds` (a tone with a little noise), its source description and one edit, edited by each method
with the model's defaults, real size, random weights (the weights do not change the work):

  inversion   invert (one conditional DiT row a step), then regenerate source and edit
  flowedit    no inversion: each step evaluates the source and the edit rows (per noise draw)
  sdedit      no inversion: the steps from the noise level down (init_noise_level 0.6)

For each: the DiT rows evaluated (jobs.compare.dit_calls: a row of one DiT call, twice with CFG),
and the wall time of the whole edit in one process, warm (the model loaded, the programs compiled
by a first run): the median of `repeats` runs, encode, inversion, sampling and decode included."""

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
  from musickv_jax import jobs
  from musickv_jax.audio import LoadedAudio
  from musickv_jax.jobs.compare import dit_calls

  request = jobs.EditRequest(prompts=(SOURCE, EDITS[0]), recording=jobs.RecordingRequest(path="(in memory)"),
                             method=method)
  loaded = LoadedAudio(audio=audio, sample_rate=model.config.sample_rate, source_rate=model.config.sample_rate,
                       source_channels=audio.shape[0], start_s=0.0, warnings=[])

  def edit_once():
    start = time.perf_counter()
    prepared = jobs.prepare(model, request, method, recording=loaded)  # no cache: every run inverts again
    outcome = next(jobs.run(model, jobs.plan_run([prepared.job], prepared.job.n_prompts)))
    if outcome.error is not None:
      raise outcome.error
    prepared.job.result(model, *outcome.latents[prepared.id])
    return prepared, time.perf_counter() - start

  prepared, first = edit_once()
  runs = [edit_once()[1] for _ in range(repeats)]
  gen = prepared.settings.generation
  return {"method": method, "dit_rows": dit_calls(prepared), "first_run_s": round(first, 2),
          "runs_s": [round(r, 2) for r in runs], "median_s": round(statistics.median(runs), 2),
          "steps": gen.num_inference_steps, "sampler": gen.sampler, "guidance_scale": gen.guidance_scale,
          "init_noise_level": gen.init_noise_level if method == "sdedit" else None,
          "inversion_s": round(prepared.inversion_seconds, 2)}


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
           "| method | DiT rows | wall time (s) | of which inversion (s) |", "|---|---|---|---|"]
  for m in report["methods"]:
    lines.append(f"| {m['method']} | {m['dit_rows']} | {m['median_s']} | {m['inversion_s']} |")
  return "\n".join(lines)
