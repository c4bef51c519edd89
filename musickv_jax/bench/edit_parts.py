"""The parts of one cold edit, timed in a fresh process (bench/small_edit.py and bench/sa3.py run it so):

  python -m musickv_jax.bench.edit_parts CHECKPOINT SOURCE_PROMPT EDIT_PROMPT SECONDS

prints one JSON line: import_s (this module's imports), load_s (the converted checkpoint),
t5_and_conditioning_s (the plan: text encoder and conditioning), compile_s and sampling_s (the first
run of the sampler less the second), decode_s.

`warm_parts` times the same parts of an edit in a process where they are already compiled (the
model loaded, pipeline.edit run once): the median of each over `repeats` runs."""

from __future__ import annotations

import time

_START = time.perf_counter()

import json  # noqa: E402  (the imports are what import_s measures)
import statistics  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402

from musickv_jax.checkpoint import load_converted  # noqa: E402
from musickv_jax.pipeline import EditSettings, GenerationSettings, common  # noqa: E402
from musickv_jax.pipeline import plan as plan_lib  # noqa: E402

IMPORT_S = time.perf_counter() - _START


def _settings(model, source: str, edit: str, seconds: float) -> EditSettings:
  return EditSettings(GenerationSettings(prompts=(source, edit), audio_end_in_s=seconds)).for_model(model.config)


def _plan(model, settings: EditSettings):
  plan = plan_lib.build_plan(model, settings)
  jax.block_until_ready(plan.conditioning)
  return plan


def _decode(model, settings: EditSettings, latents) -> None:
  common.decode(model, latents, *common.output_span(settings.generation, model.config))


def measure(checkpoint: str, source: str, edit: str, seconds: float) -> dict[str, float]:
  parts = {"import_s": IMPORT_S}
  mark = time.perf_counter()
  model = load_converted(checkpoint)
  jax.block_until_ready(model.params)
  parts["load_s"] = time.perf_counter() - mark
  settings = _settings(model, source, edit, seconds)
  mark = time.perf_counter()
  plan = _plan(model, settings)
  parts["t5_and_conditioning_s"] = time.perf_counter() - mark
  mark = time.perf_counter()
  plan_lib.run_plan(model, plan)
  first = time.perf_counter() - mark
  mark = time.perf_counter()
  latents, _ = plan_lib.run_plan(model, plan)
  parts["sampling_s"] = time.perf_counter() - mark
  parts["compile_s"] = first - parts["sampling_s"]
  mark = time.perf_counter()
  _decode(model, settings, latents)
  parts["decode_s"] = time.perf_counter() - mark
  return {name: round(value, 2) for name, value in parts.items()}


def warm_parts(model, source: str, edit: str, seconds: float, repeats: int) -> dict[str, float]:
  """The plan (text encoder and conditioning), sampling and decode of an edit in this process, each
  the median of `repeats` timed runs after an untimed one (which compiles whatever is not yet)."""
  settings = _settings(model, source, edit, seconds)
  runs: dict[str, list[float]] = {"t5_and_conditioning_s": [], "sampling_s": [], "decode_s": []}
  for repeat in range(repeats + 1):
    times = {}
    mark = time.perf_counter()
    plan = _plan(model, settings)
    times["t5_and_conditioning_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    latents, _ = plan_lib.run_plan(model, plan)
    times["sampling_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    _decode(model, settings, latents)
    times["decode_s"] = time.perf_counter() - mark
    if repeat:
      for name, value in times.items():
        runs[name].append(value)
  return {name: round(statistics.median(values), 3) for name, values in runs.items()}


if __name__ == "__main__":
  checkpoint_arg, source_arg, edit_arg, seconds_arg = sys.argv[1:5]
  print(json.dumps(measure(checkpoint_arg, source_arg, edit_arg, float(seconds_arg))))
