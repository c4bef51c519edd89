"""The parts of one cold edit, timed in a fresh process (bench/small_edit.py runs it so):

  python -m musickv_jax.bench.edit_parts CHECKPOINT SOURCE_PROMPT EDIT_PROMPT SECONDS

prints one JSON line: import_s (this module's imports), load_s (the converted checkpoint),
t5_and_conditioning_s (the plan: text encoder and conditioning), compile_s and sampling_s (the first
run of the sampler less the second), decode_s."""

from __future__ import annotations

import time

_START = time.perf_counter()

import json  # noqa: E402  (the imports are what import_s measures)
import sys  # noqa: E402

import jax  # noqa: E402

from musickv_jax.checkpoint import load_converted  # noqa: E402
from musickv_jax.pipeline import EditSettings, GenerationSettings, common  # noqa: E402
from musickv_jax.pipeline import plan as plan_lib  # noqa: E402

IMPORT_S = time.perf_counter() - _START


def measure(checkpoint: str, source: str, edit: str, seconds: float) -> dict[str, float]:
  parts = {"import_s": IMPORT_S}
  mark = time.perf_counter()
  model = load_converted(checkpoint)
  jax.block_until_ready(model.params)
  parts["load_s"] = time.perf_counter() - mark
  settings = EditSettings(GenerationSettings(prompts=(source, edit), audio_end_in_s=seconds)).for_model(model.config)
  mark = time.perf_counter()
  plan = plan_lib.build_plan(model, settings)
  jax.block_until_ready(plan.conditioning)
  parts["t5_and_conditioning_s"] = time.perf_counter() - mark
  mark = time.perf_counter()
  plan_lib.run_plan(model, plan)
  first = time.perf_counter() - mark
  mark = time.perf_counter()
  latents, _ = plan_lib.run_plan(model, plan)
  parts["sampling_s"] = time.perf_counter() - mark
  parts["compile_s"] = first - parts["sampling_s"]
  mark = time.perf_counter()
  common.decode(model, latents, *common.output_span(settings.generation, model.config))
  parts["decode_s"] = time.perf_counter() - mark
  return {name: round(value, 2) for name, value in parts.items()}


if __name__ == "__main__":
  checkpoint_arg, source_arg, edit_arg, seconds_arg = sys.argv[1:5]
  print(json.dumps(measure(checkpoint_arg, source_arg, edit_arg, float(seconds_arg))))
