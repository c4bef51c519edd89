"""A user's whole edit job, done our way and the reference's way, on the same machine in one run:
one source, `edits` edit prompts, `seconds` of audio, 100 steps.

  ours        latent_length fit (the latent just covers the audio), the source run once and its
              K/V cached, every edit in one batch reading the cache (musickv-edit --edit_all
              --injection_mode cached), decoding only the kept audio
  reference   what the authors' code does: diffusers' StableAudioPipeline over the full 1024-frame
              window, the source generated again beside each edit (source + edit with CFG, one edit
              per run, KV-blending processors in the vital layers changed every step), the whole
              window decoded and then trimmed

Each way runs twice, with `steps` and with 1 step, and is extrapolated to 100 steps:
per step = (T(steps) - T(1)) / (steps - 1), fixed = T(1) - per step, job = fixed + 100 x per step.
The reference's job is `edits` identical runs; one is measured and counted `edits` times.
"""

from __future__ import annotations

import time

import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.pipeline import (
  EditSettings,
  GenerationSettings,
  edit,
  kv_schedules,
  presets,
)

JOB_STEPS = 100
SOURCE = "Piano solo, classical, gentle"
EDITS = ("Acoustic guitar, country, soft", "Jazz trio, upright bass, brushed drums", "String quartet, romantic",
         "Synthwave, retro arpeggios, gated drums", "Solo violin, baroque", "Lo-fi hip hop beat, mellow Rhodes")


def offline_tokenizer(config: ModelConfig):
  """A small tokenizer of the model's family built offline (no download): T5's for Stable Audio
  Open, Gemma's for Stable Audio 3 (its text encoder's vocabulary size, prompts capped at its
  max_length)."""
  if config.is_sa3:
    from musickv_jax.convert.export_sa3_text import build_tiny_gemma_tokenizer

    return build_tiny_gemma_tokenizer(config.t5.vocab_size, model_max_length=config.t5.max_length)
  from musickv_jax.convert.export import build_tiny_tokenizer

  return build_tiny_tokenizer(config.t5.max_length)


def random_model(config: ModelConfig) -> LoadedModel:
  """A model of this config with random weights and a small offline tokenizer (no download)."""
  from pathlib import Path

  from musickv_jax.models.sao import random_params

  return LoadedModel(config=config, params=random_params(config, 0), tokenizer=offline_tokenizer(config),
                     path=Path("<random weights>"), info={})


def vital_layers(config: ModelConfig) -> tuple[int, ...]:
  """The layers an edit of this model injects into by default (its preset's: pipeline.presets)."""
  return presets.default_for(config).vital_layers


def ours(model: LoadedModel, steps: int, edits: int, seconds: float, latent_length: str = "fit"):
  gen = GenerationSettings(prompts=(SOURCE, *EDITS[:edits]), num_inference_steps=steps, audio_end_in_s=seconds,
                           latent_length=latent_length)
  layers = vital_layers(model.config)
  settings = EditSettings(gen, vital_layers=layers, schedule=kv_schedules.linear_ramp(steps, len(layers)),
                          injection_mode="cached", edit_all=True)
  start = time.perf_counter()
  result = edit(model, settings)
  return time.perf_counter() - start, result


def reference_run(pipe, model_config: ModelConfig, steps: int, edit_prompt: str, seconds: float, noise) -> float:
  """One run of the authors' way: source + one edit, full window, KV-blending processors."""
  import torch

  from musickv_jax.bench.scheduler import reference_scheduler
  from musickv_jax.bench.torch_reference import KVBlendProcessor

  dit = pipe.transformer
  layers = vital_layers(model_config)
  processors = {layer: KVBlendProcessor() for layer in layers}

  def set_step(step):
    w = step / steps
    for layer in layers:
      processors[layer].blends = [(1, 0, w), (3, 2, w)]

  default = dit.attn_processors
  for layer, processor in processors.items():
    dit.transformer_blocks[layer].attn1.set_processor(processor)
  pipe.scheduler = reference_scheduler(steps)
  set_step(0)
  start = time.perf_counter()
  try:
    with torch.no_grad():
      pipe([SOURCE, edit_prompt], audio_end_in_s=seconds, num_inference_steps=steps, guidance_scale=7.0,
           latents=torch.from_numpy(noise), callback=lambda i, t, latents: set_step(min(i + 1, steps - 1)),
           callback_steps=1)
  finally:
    dit.set_attn_processor(default)
  return time.perf_counter() - start


def reference_pipeline(model: LoadedModel):
  """diffusers' StableAudioPipeline holding our weights (written in the diffusers layout and read back)."""
  import tempfile

  from diffusers import StableAudioPipeline

  from musickv_jax.convert.export import write_diffusers_checkpoint

  folder = tempfile.mkdtemp(prefix="musickv-bench-")
  write_diffusers_checkpoint(folder, model.config, model.params, model.tokenizer)
  pipe = StableAudioPipeline.from_pretrained(folder)
  pipe.set_progress_bar_config(disable=True)
  return pipe, folder


def _job_seconds(one: float, many: float, steps: int) -> tuple[float, float, float]:
  """(seconds a step, fixed seconds, a JOB_STEPS-step job) from runs of 1 and `steps` steps. A step
  takes no less than nothing: where timing noise makes the longer run the shorter one (a tiny
  model), the step costs 0 and the job is the 1-step run."""
  per_step = max(0.0, (many - one) / (steps - 1))
  fixed = one - per_step
  return per_step, fixed, fixed + JOB_STEPS * per_step


def _extrapolate(one: float, many: float, steps: int) -> dict:
  per_step, fixed, job = _job_seconds(one, many, steps)
  return {"measured_s": {"1_step": round(one, 2), f"{steps}_steps": round(many, 2)}, "per_step_s": round(per_step, 3),
          "fixed_s": round(fixed, 2), f"job_{JOB_STEPS}_steps_s": round(job, 1)}


def fit_difference(window_fraction: float, edits: int) -> dict:
  """How much `fit` changes the audio against the full window (same noise, 4 steps), measured on
  the tiny config (random weights) for a request of the same fraction of its window as the job's:
  relative L2 of each edit's audio, and of the source."""
  from musickv_jax.config import named_config

  model = random_model(named_config("tiny"))
  seconds = round(min(1.0, window_fraction) * model.config.max_audio_seconds, 2)
  _, fit = ours(model, 4, edits, seconds, "fit")
  _, full = ours(model, 4, edits, seconds, "full")
  diff = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(fit.audio, full.audio)]
  return {"model": "tiny (random weights)", "seconds": seconds, "relative_l2_per_prompt": [round(d, 3) for d in diff],
          "roles": fit.roles}


def decode_cost(model: LoadedModel, seconds: float) -> dict:
  """The fixed cost that decoding only the kept frames removes: decoding a `seconds` request in the
  full window the old way (all 1024 frames, then trim, as the references do) and the new way
  (the kept frames with their context), timed after a warm-up of each."""
  from musickv_jax.models import vae_ops
  from musickv_jax.pipeline import common

  cfg = model.config
  latents = np.random.default_rng(0).normal(size=(1, cfg.dit.io_channels, cfg.dit.sample_size)).astype(np.float32)
  end = int(seconds * cfg.sample_rate)
  whole = lambda: vae_ops.decode(model.params.vae, latents, cfg.vae)[..., :end]  # noqa: E731
  kept = lambda: common.decode(model, latents, 0, end)  # noqa: E731
  out = {}
  for name, fn in (("whole_window_then_trim_s", whole), ("kept_frames_s", kept)):
    fn()
    start = time.perf_counter()
    fn()
    out[name] = round(time.perf_counter() - start, 2)
  return out


def run(config: ModelConfig, *, steps: int = 5, edits: int = 4, seconds: float = 15.0, compare_torch: bool = True,
        log=print) -> dict:
  if steps < 2:
    raise ValueError("the job benchmark needs at least 2 steps to extrapolate (steps and 1)")
  import jax

  from musickv_jax.bench.measure import cpu_name

  model = random_model(config)
  report = {"device": str(jax.devices()[0]), "cpu": cpu_name(), "config": config.name, "edits": edits,
            "seconds": seconds, "steps_run": steps, "extrapolated_to": JOB_STEPS}
  for n in (1, steps):  # compile first: the fixed cost is a warm one
    ours(model, n, edits, seconds)
  one, _ = ours(model, 1, edits, seconds)
  many, _ = ours(model, steps, edits, seconds)
  report["ours"] = _extrapolate(one, many, steps)
  ours_job = _job_seconds(one, many, steps)[2]  # the ratio from unrounded times: a tiny job rounds to 0.0 s
  log(f"ours: {report['ours']}")
  if compare_torch:
    import shutil

    pipe, folder = reference_pipeline(model)
    try:
      noise = np.random.default_rng(0).normal(size=(2, config.dit.io_channels, config.dit.sample_size)).astype(np.float32)
      reference_run(pipe, config, 1, EDITS[0], seconds, noise)  # warm-up
      one = reference_run(pipe, config, 1, EDITS[0], seconds, noise)
      many = reference_run(pipe, config, steps, EDITS[0], seconds, noise)
    finally:
      shutil.rmtree(folder, ignore_errors=True)
    per_run = _extrapolate(one, many, steps)
    report["reference"] = per_run | {"runs": edits,
                                     f"job_{JOB_STEPS}_steps_s": round(edits * per_run[f"job_{JOB_STEPS}_steps_s"], 1)}
    report["reference_over_ours"] = round(edits * _job_seconds(one, many, steps)[2] / ours_job, 2)
    log(f"reference: {report['reference']}")
  report["fit_vs_full_audio"] = fit_difference(seconds / config.max_audio_seconds, edits)
  report["decode"] = decode_cost(model, seconds)
  log(f"decode of {seconds:g} s in the full window: {report['decode']}")
  return report


def summary(report: dict) -> str:
  key = f"job_{JOB_STEPS}_steps_s"
  lines = [f"{report['edits']} edits of one {report['seconds']:g} s source, {JOB_STEPS} steps ({report['config']}, "
           f"{report['cpu']}; measured with {report['steps_run']} steps and 1, extrapolated):",
           f"  ours       {report['ours'][key]:10.1f} s   (fixed {report['ours']['fixed_s']} s, "
           f"{report['ours']['per_step_s']} s per step)"]
  if "reference" in report:
    lines.append(f"  reference  {report['reference'][key]:10.1f} s   ({report['reference']['runs']} runs of fixed "
                 f"{report['reference']['fixed_s']} s + {report['reference']['per_step_s']} s per step)")
    lines.append(f"  reference / ours = {report['reference_over_ours']}")
  fit = report["fit_vs_full_audio"]
  lines.append(f"  fit vs full window ({fit['model']}, {fit['seconds']:g} s): relative L2 of the audio "
               f"{fit['relative_l2_per_prompt']} for {fit['roles']}")
  lines.append(f"  decoding {report['seconds']:g} s from the full window: whole window then trim "
               f"{report['decode']['whole_window_then_trim_s']} s, kept frames only {report['decode']['kept_frames_s']} s")
  return "\n".join(lines)

