"""musickv-generate: text-to-music with Stable Audio Open.

  musickv-generate --model ckpt/sao --prompts "Piano solo" "Lo-fi hip hop beat" \
      --audio_end_in_s 10 --seed 0 --output_path outputs/

Writes one WAV per prompt and, beside each, a JSON sidecar with every setting needed to
reproduce it. --model may also be an unconverted diffusers folder, stable-audio-tools file or
hub id (converted once into a cache).
"""

from __future__ import annotations

import re
import time

from musickv_jax import pipeline
from musickv_jax.audio import save_wav
from musickv_jax.cli import options
from musickv_jax.cli.progress import progress_bar
from musickv_jax.cli.runner import Command, Flags, command_line, entry_point
from musickv_jax.writers.record import provenance
from musickv_jax.writers.sets import OutputSet, write_json, write_npy


def slug(text: str, limit: int = 40) -> str:
  s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
  return s[:limit].rstrip("-") or "prompt"


def define(fv: Flags) -> None:
  options.define_generation_flags(fv, audio_end_default=None)


def body(fv: Flags) -> None:

  settings = options.generation_settings(fv)
  out_dir = options.check_output_flags(fv)
  init_latents = options.load_npy(fv.init_latents, "init_latents") if fv.init_latents else None
  step_noise = options.load_npy(fv.step_noise, "step_noise") if fv.step_noise else None
  model = options.load_model(fv)
  settings = settings.for_model(model.config)
  settings.validate(model.config)

  start = time.perf_counter()
  with progress_bar(settings.num_inference_steps, "sampling") as listener:
    result = pipeline.generate(model, settings, init_latents=init_latents, step_noise=step_noise, on_step=listener)
  elapsed = time.perf_counter() - start

  record = provenance(model, elapsed, command_line()) | result.describe() | {
      "init_latents": str(options.absolute(fv.init_latents)) if fv.init_latents else None,
      "step_noise": str(options.absolute(fv.step_noise)) if fv.step_noise else None}
  with OutputSet(out_dir) as outputs:
    for i, prompt in enumerate(settings.prompts):
      name = f"{i}_{slug(prompt)}"
      save_wav(outputs.path(f"{name}.wav"), result.audio[i], result.sample_rate, fv.wav_subtype)
      write_json(outputs.path(f"{name}.json"), record | {"prompt_index": i, "prompt": prompt, "wav": f"{name}.wav"})
    if fv.save_latents:
      write_npy(outputs.path(options.absolute(fv.save_latents)), result.latents)
    outputs.commit()
  print(f"generated {len(settings.prompts)} prompt(s) in {elapsed:.1f} s")


COMMAND = Command(name="musickv-generate", doc=__doc__, define=define, body=body,
                  flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
