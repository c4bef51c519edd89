"""musickv-optimize-schedule: learn an injection schedule by gradient through the whole sampler.

  musickv-optimize-schedule --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft" \
      --vital_layers=20,3,4 --num_inference_steps 50 --iterations 100 --output_path learned/
  musickv-edit --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft" \
      --num_inference_steps 50 --schedule learned/schedule.npy

Every prompt after the first is an edit of the first (or of --input_audio, inverted first). The
schedule w(step, layer) is a sigmoid of logits at --time_bins points, interpolated over the steps,
starting at the reference ramp; Adam minimises
  - fidelity_weight * fidelity - editability_weight * editability + smoothness_weight * smoothness
(see docs/research.md). Writes:
  schedule.npy   (num_inference_steps, n_vital_layers) float32 in [0, 1]: musickv-edit --schedule
  history.json   {"loss": [...], "fidelity": [...], "editability": [...]}, one value per iteration
  schedule.png   the learned schedule against the reference ramp
  checkpoint/    the optimiser's state, saved as it goes: --resume --iterations N continues to N
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
from absl import flags

from musickv_jax import pipeline
from musickv_jax.cli import options
from musickv_jax.cli.outputs import check_output_dir
from musickv_jax.cli.progress import progress_bar
from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point
from musickv_jax.errors import OptimizationError
from musickv_jax.pipeline import limits
from musickv_jax.research import optimization
from musickv_jax.writers import charts
from musickv_jax.writers.sets import OutputSet, write_json, write_npy

DEFAULT_SECONDS = 15.0  # the reference's length, cut to the model's window
CHECKPOINT = "checkpoint"
RUN = "run.json"  # the settings of the run, beside the checkpoint: --resume must match them


def define(fv: Flags) -> None:
  options.define_model_flags(fv)
  flags.DEFINE_multi_string("prompts", [], "The source description, then one or more edit prompts.", flag_values=fv)
  flags.DEFINE_list("vital_layers", None, "The layers whose injection weights are learned (default: the model's "
                    "preset's, 20,3,4 for Stable Audio Open 1.0).",
                    flag_values=fv)
  flags.DEFINE_integer("num_inference_steps", None, "Sampling steps, the schedule's rows (default: the model's).",
                       flag_values=fv)
  flags.DEFINE_integer("iterations", 50, "Optimiser iterations (with --resume: the total to reach).", flag_values=fv)
  flags.DEFINE_float("learning_rate", 0.02, "Adam's learning rate on the logits.", flag_values=fv)
  flags.DEFINE_integer("time_bins", None, f"Learned points per layer, interpolated over the steps (default: "
                       f"{optimization.DEFAULT_TIME_BINS}, at most the steps).", flag_values=fv)
  flags.DEFINE_float("fidelity_weight", 1.0, "Weight of the structure kept (melody, form, rhythm).", flag_values=fv)
  flags.DEFINE_float("editability_weight", 1.0, "Weight of the move toward the plain edit.", flag_values=fv)
  flags.DEFINE_float("smoothness_weight", 0.1, "Weight of the step-to-step change of the schedule.", flag_values=fv)
  flags.DEFINE_float("guidance_scale", None, "Classifier-free guidance scale of the edits (default: the model's).",
                     flag_values=fv)
  flags.DEFINE_float("audio_end_in_s", None, f"Length of the generated source and edits, seconds (default: "
                     f"{DEFAULT_SECONDS:g}, at most the model's window).", flag_values=fv)
  flags.DEFINE_string("latent_length", "fit", "fit (faster, the default here) or full (the reference's window).",
                      flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the shared initial noise.", flag_values=fv)
  options.define_recording_flags(fv)
  flags.DEFINE_bool("resume", False, "Continue from --output_path/checkpoint up to --iterations.", flag_values=fv)
  flags.DEFINE_string("output_path", "outputs/schedule", "Directory for the outputs.", flag_values=fv)


def _run_settings(fv: Flags) -> dict:
  """Every flag that decides the optimisation (not --iterations, which --resume may raise)."""
  names = ("prompts", "vital_layers", "num_inference_steps", "learning_rate", "time_bins", "fidelity_weight",
           "editability_weight", "smoothness_weight", "guidance_scale", "audio_end_in_s", "latent_length", "seed",
           "input_audio", "input_start_s", "input_end_s", "inversion", "inversion_order", "dtype")
  return {name: fv[name].value for name in names}


def _settings(fv: Flags, model) -> pipeline.EditSettings:
  """The edit whose schedule is learned (every prompt after the first an edit), resolved for the model."""
  seconds = options.length_for_model(fv.audio_end_in_s, DEFAULT_SECONDS, model.config)
  gen = pipeline.GenerationSettings(prompts=tuple(fv.prompts), num_inference_steps=fv.num_inference_steps,
                                    guidance_scale=fv.guidance_scale, audio_end_in_s=seconds, seed=fv.seed,
                                    latent_length=fv.latent_length)
  layers = options.int_list(fv.vital_layers, "vital_layers") if fv.vital_layers is not None else None
  settings = pipeline.EditSettings(gen, vital_layers=layers, edit_all=True)
  return settings.for_recording(model.config) if fv.input_audio else settings.for_model(model.config)


def _problem(fv: Flags, model, settings: pipeline.EditSettings) -> optimization.Problem:
  """The edit's plan and the audio span: of a generated source, or of --input_audio, inverted first."""
  gen = settings.generation
  if fv.input_audio:
    settings = dataclasses.replace(settings, generation=dataclasses.replace(gen, audio_end_in_s=None))
    settings.validate(model.config)
    recording = options.load_recording(fv, model)
    inv = options.inversion_settings(fv, gen.prompts[0], gen.num_inference_steps, None)
    print(f"inverting {recording.duration_s:.2f} s of {fv.input_audio}", flush=True)
    inversion = pipeline.invert_audio(model, recording.audio, inv)
    plan = pipeline.build_plan(model, settings, np.repeat(inversion.inverted, len(gen.prompts), axis=0),
                               source_guidance=pipeline.SOURCE_GUIDANCE, check_coverage=False)
    span = (0, inversion.n_samples)
  else:
    plan = pipeline.build_plan(model, settings)
    span = pipeline.output_span(gen, model.config)
  print("generating the plain edits (no injection) once", flush=True)
  return optimization.make_problem(model, plan, span)


def body(fv: Flags) -> None:

  if len(fv.prompts) < 2:
    raise UsageError("give --prompts SOURCE EDIT [MORE EDITS]: the source description first, then the edits")
  if fv.iterations < 1:
    raise UsageError(f"--iterations must be at least 1, got {fv.iterations}")
  limits.check_at_most(fv.iterations, limits.MAX_ITERATIONS, "iterations", "iterations")
  limits.check_prompts(fv.prompts)  # before the model loads
  limits.check_steps(fv.num_inference_steps)
  out_dir = check_output_dir(fv.output_path)
  checkpoint, run_file = out_dir / CHECKPOINT, out_dir / RUN
  run_settings = _run_settings(fv)
  if fv.resume:
    if not (checkpoint.is_dir() and run_file.is_file()):
      raise UsageError(f"--resume: {out_dir} holds no optimisation to continue")
    if json.loads(run_file.read_text()) != run_settings:
      raise UsageError(f"--resume: the run in {out_dir} was started with other settings; give the same flags "
                       "(only --iterations may change)")
  elif checkpoint.exists() or run_file.exists():
    raise UsageError(f"--output_path {out_dir} holds an earlier optimisation; pass --resume to continue it, or "
                     "choose another folder")
  model = options.load_model(fv)
  settings = _settings(fv, model)
  layers, steps = settings.vital_layers, settings.generation.num_inference_steps
  params = optimization.ScheduleParameters.for_steps(steps, len(layers), fv.time_bins)
  params.validate()
  problem = _problem(fv, model, settings)
  weights = optimization.ObjectiveWeights(fv.fidelity_weight, fv.editability_weight, fv.smoothness_weight)
  optimizer = optimization.ScheduleOptimizer(problem, params, weights, fv.learning_rate)
  state, history = optimizer.init(), {"loss": [], "fidelity": [], "editability": []}
  if fv.resume:
    state, history = optimization.restore_state(checkpoint, state)
  model_params = model.params
  done = int(state.iteration)
  if done:
    print(f"resuming after iteration {done}", flush=True)
  start = time.perf_counter()
  stopped = None
  with progress_bar(max(fv.iterations - done, 0), "optimising") as listener:
    for i in range(done, fv.iterations):
      new_state, loss, terms = optimizer.step(state, model_params)
      try:
        optimization.check_step(i + 1, loss, terms, new_state)
      except OptimizationError as e:  # keep the last finite state: it is what the checkpoint holds
        stopped = e
        break
      state = new_state
      history["loss"].append(float(loss))
      history["fidelity"].append(float(terms["fidelity"]))
      history["editability"].append(float(terms["editability"]))
      if not run_file.exists():  # with the first checkpoint: a run that never saved one leaves nothing to resume
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_file, run_settings)
      optimization.save_state(checkpoint, state, history)
      listener(i + 1 - done, fv.iterations - done)
  elapsed = time.perf_counter() - start
  reached = int(state.iteration)
  if stopped is not None and reached == 0:
    raise OptimizationError(stopped.template + "; nothing was learned or written (a lower {learning_rate} or other "
                            "weights may help)", mentions=("learning_rate",))
  schedule = optimization.schedule_array(params, state)
  with OutputSet(out_dir) as outputs:
    write_npy(outputs.path("schedule.npy"), schedule)
    write_json(outputs.path("history.json"), history)
    charts.schedule_chart(outputs.path("schedule.png"), schedule, layers, steps)
    outputs.commit()
  if stopped is not None:
    raise OptimizationError(stopped.template + f"; kept the last finite schedule (iteration {reached}) in "
                            f"{out_dir / 'schedule.npy'} and {checkpoint} (a lower {{learning_rate}} or other weights "
                            "may help)", mentions=("learning_rate",))
  if history["loss"]:
    print(f"loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f} over {len(history['loss'])} iterations "
          f"({elapsed:.1f} s this run)")


COMMAND = Command(name="musickv-optimize-schedule", doc=__doc__, define=define, body=body,
                  flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
