"""musickv-benchmark: our DiT call and edit step against diffusers in one run, on the same machine,
weights, shapes and threads; or a whole edit job done our way and the reference's way (--job).

  musickv-benchmark --config sao-1.0 --lengths 1024,384 --batch 4 --torch --json_out bench.json
  musickv-benchmark --config sa3-small --torch --json_out sa3.json   # SA3's DiT call: 2 rows of 323 frames
  musickv-benchmark --sa3_edit --json_out sa3_edit.json   # a 30 s SA3 Small-Music edit: warm, cold, diffusers
  musickv-benchmark --job --torch --job_steps 5 --json_out job.json
  musickv-benchmark --long_seconds 120 --json_out long.json   # a recording longer than the window
  musickv-benchmark --lower_for=tpu,cuda --json_out lowering.json   # every program lowered, no accelerator
  musickv-benchmark --memory_plan --json_out memory.json   # edit rows that fit each accelerator

Without --torch only our side runs. Random weights of the named config (the weights do not change
the work). torch and diffusers come with the test requirements. See docs/performance.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import flags

from musickv_jax.bench import breakdown, dit_step, edit_methods, job, long_song, precision, sa3, small_edit
from musickv_jax.cli import options
from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point
from musickv_jax.config import named_config
from musickv_jax.pipeline import limits
from musickv_jax.writers.sets import write_json


def define(fv: Flags) -> None:
  flags.DEFINE_string("config", "sao-1.0", "Named model config.", flag_values=fv)
  flags.DEFINE_list("lengths", ["1024", "384"], "Latent lengths (frames) to time (Stable Audio 3 configs: 323, "
                    "30 s, unless given).", flag_values=fv)
  flags.DEFINE_integer("batch", 4, "Rows per DiT call (4 = a source and one edit, with CFG; Stable Audio 3 configs: "
                       "2, a source and one edit at guidance 1, unless given).", flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "Timed calls per case (the median is reported).", flag_values=fv)
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16.", flag_values=fv)
  flags.DEFINE_string("attention", "auto", "Attention implementation (see musickv-edit --help).", flag_values=fv)
  flags.DEFINE_integer("depth", None, "Use only this many DiT layers (quick, relative comparisons).",
                       flag_values=fv)
  flags.DEFINE_bool("torch", False, "Also time diffusers in the same run.", flag_values=fv)
  flags.DEFINE_bool("breakdown", False, "Time the parts of one DiT layer, ours and torch's, at each length.",
                    flag_values=fv)
  flags.DEFINE_bool("precision", False, "bfloat16 against float32: deviation of a DiT call and of a short edit, "
                    "and the speed of each.", flag_values=fv)
  flags.DEFINE_bool("job", False, "Benchmark a whole edit job (see docs/performance.md) instead of one step.",
                    flag_values=fv)
  flags.DEFINE_integer("job_steps", 100, "--job: sampling steps actually run (per-step times are extrapolated "
                       "to 100).", flag_values=fv)
  flags.DEFINE_integer("job_edits", 4, "--job: edit prompts of the one source.", flag_values=fv)
  flags.DEFINE_float("job_seconds", 15.0, "--job: seconds of audio.", flag_values=fv)
  flags.DEFINE_float("long_seconds", None, "Benchmark editing a recording of this many seconds (longer than the "
                     "model's window: over windows) and report seconds of compute per second of audio.",
                     flag_values=fv)
  flags.DEFINE_integer("long_steps", 2, "--long_seconds: sampling steps actually run (extrapolated to 100).",
                       flag_values=fv)
  flags.DEFINE_bool("small_edit", False, "A whole edit with Stable Audio Open Small's defaults (--config sao-small): "
                    "warm in one process, and the cold command line with its parts.", flag_values=fv)
  flags.DEFINE_bool("sa3_edit", False, "A whole Stable Audio 3 edit with the model's defaults (--config sa3-small "
                    "unless another SA3 config is given): warm in one process with its parts, the cold command line "
                    "with its parts, and diffusers' StableAudio3Pipeline holding the same weights.", flag_values=fv)
  flags.DEFINE_bool("edit_methods", False, "What each way to edit a recording costs (inversion + edit, FlowEdit, "
                    "SDEdit): DiT rows and warm wall time of a --edit_seconds recording (default 10 s).",
                    flag_values=fv)
  flags.DEFINE_float("edit_seconds", None, "--small_edit / --sa3_edit: seconds of audio (default 11 / 30).",
                     flag_values=fv)
  flags.DEFINE_list("lower_for", None, "Lower every compiled program (real sizes, shapes only) for these platforms "
                    "(tpu, cuda) and report each: ok or the reason; exit 1 when one that must lower does not.",
                    flag_values=fv)
  flags.DEFINE_list("lower_models", None, "--lower_for: only these models (sao1.0, sao-small; default both).",
                    flag_values=fv)
  flags.DEFINE_bool("memory_plan", False, "The table of edit rows that fit each TPU / GPU, float32 and bfloat16, "
                    "by the estimate the memory budget uses.", flag_values=fv)
  flags.DEFINE_string("json_out", None, "Also write the results as JSON here.", flag_values=fv)


def lowering_body(fv: Flags) -> int:
  from musickv_jax.readiness import lowering, programs

  platforms = [p.strip() for p in fv.lower_for if p.strip()]
  unknown = sorted(set(platforms) - set(programs.PLATFORMS))
  if unknown or not platforms:
    raise UsageError(f"--lower_for takes some of {', '.join(programs.PLATFORMS)}, got {','.join(fv.lower_for)!r}")
  models = fv.lower_models or list(programs.MODELS)
  if set(models) - set(programs.MODELS):
    raise UsageError(f"--lower_models takes some of {', '.join(programs.MODELS)}, got {','.join(models)!r}")
  outcomes = lowering.lower_all(programs.all_names(tuple(models)), platforms, log=print)
  print(lowering.summary(outcomes))
  if fv.json_out:
    write_json(Path(fv.json_out), lowering.to_json(outcomes))
    print(f"wrote {fv.json_out}")
  return 1 if any(o.failed for o in outcomes) else 0


def memory_plan_body(fv: Flags) -> int:
  from musickv_jax.readiness import memory_plan

  entries = memory_plan.table()
  print(memory_plan.markdown(entries))
  if fv.json_out:
    write_json(Path(fv.json_out), memory_plan.to_json(entries))
    print(f"wrote {fv.json_out}")
  return 0


def body(fv: Flags) -> int | None:
  if fv.lower_for is not None:
    return lowering_body(fv)
  if fv.memory_plan:
    return memory_plan_body(fv)

  if fv.repeats < 1 or fv.batch < 2 or fv.batch % 2:
    raise UsageError("--repeats must be positive and --batch an even number of at least 2 (CFG rows)")
  for flag, cap, unit in (("batch", limits.MAX_ROWS, "rows"), ("repeats", limits.MAX_ITERATIONS, "repeats"),
                          ("job_steps", limits.MAX_STEPS, "steps"), ("long_steps", limits.MAX_STEPS, "steps"),
                          ("job_edits", limits.MAX_PROMPTS - 1, "edits")):
    limits.check_at_most(fv[flag].value, cap, flag, unit)
  lengths = options.int_list(fv.lengths, "lengths")
  if any(n < 1 for n in lengths):
    raise UsageError("--lengths must be positive")
  config_name = fv.config
  if fv.sa3_edit and not fv["config"].present:
    config_name = "sa3-small"
  config = named_config(config_name).with_dtype(fv.dtype).with_attention(fv.attention)
  if fv.sa3_edit and not config.is_sa3:
    raise UsageError(f"--sa3_edit needs a Stable Audio 3 config (sa3-small, sa3-medium, tiny-sa3), got {fv.config}")
  if config.is_sa3 and (fv.breakdown or fv.precision or fv.job or fv.small_edit or fv.long_seconds is not None):
    raise UsageError("Stable Audio 3 configs are benchmarked by the DiT call (the default mode) and --sa3_edit")
  if fv.edit_seconds is not None and fv.edit_seconds <= 0:
    raise UsageError("--edit_seconds must be positive")
  if config.is_sa3 and not fv["lengths"].present:
    lengths = [sa3.default_frames(config)]
  batch = 2 if config.is_sa3 and not fv["batch"].present else fv.batch
  if fv.depth is not None:
    if not 1 <= fv.depth <= config.dit.depth:
      raise UsageError(f"--depth must be between 1 and {config.dit.depth}")
    config = config.replace(dit=dataclasses.replace(config.dit, depth=fv.depth))
  window, reach = config.max_audio_seconds, config.conditioner.seconds_max
  for flag, used, top, what in (("job_seconds", fv.job, window, "the model's window"),
                                ("edit_seconds", fv.small_edit, window, "the model's window"),
                                ("long_seconds", True, reach, "the reach of the model's seconds conditioning")):
    value = fv[flag].value
    if used and value is not None and not 0 < value <= top + 1e-6:
      raise UsageError(f"--{flag} must be more than 0 and at most {top:.2f} s ({what}), got {value:g}")
  if fv.breakdown:

    report = {"layers": [breakdown.run(config.dit, frames, batch=batch, repeats=fv.repeats, compare_torch=fv.torch)
                         for frames in lengths]}
    print(breakdown.markdown(report["layers"]))
  elif fv.precision:

    report = precision.run(config.with_dtype("float32"), frames=lengths[-1], repeats=fv.repeats)
    print(report)
  elif fv.long_seconds is not None:

    if fv.long_seconds <= 0 or fv.long_steps < 2:
      raise UsageError("--long_seconds must be positive and --long_steps at least 2")
    report = long_song.run(config, seconds=fv.long_seconds, steps=fv.long_steps)
    print(long_song.summary(report))
  elif fv.small_edit:
    report = small_edit.run(config, seconds=fv.edit_seconds or 11.0, repeats=fv.repeats)
    print(small_edit.summary(report))
  elif fv.edit_methods:
    report = edit_methods.run(config, seconds=fv.edit_seconds or 10.0, repeats=fv.repeats)
    print(edit_methods.summary(report))
  elif fv.sa3_edit:
    report = sa3.whole_edit(config, seconds=fv.edit_seconds or sa3.DEFAULT_SECONDS, repeats=fv.repeats)
    print(sa3.edit_summary(report))
  elif fv.job:

    report = job.run(config, steps=fv.job_steps, edits=fv.job_edits, seconds=fv.job_seconds,
                     compare_torch=fv.torch)
    print(job.summary(report))
  else:

    report = dit_step.run(config, lengths, batch=batch, repeats=fv.repeats, compare_torch=fv.torch)
    print(dit_step.markdown_table(report))
  if fv.json_out:
    write_json(Path(fv.json_out), report)
    print(f"wrote {fv.json_out}")


COMMAND = Command(name="musickv-benchmark", doc=__doc__, define=define, body=body, multi_value_flags=())
main = entry_point(COMMAND)
