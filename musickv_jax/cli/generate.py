"""musickv-generate: text-to-music with Stable Audio Open and Stable Audio 3.

  musickv-generate --model ckpt/sao --prompts "Piano solo" "Lo-fi hip hop beat" \
      --audio_end_in_s 10 --seed 0 --output_path outputs/
  musickv-generate --model ckpt/sa3 --prompts "Jazz trio" --input_audio song.wav --init_noise_level 0.6
  musickv-generate --model ckpt/sa3 --prompts "Drum fill" --input_audio song.wav --inpaint_range 4,7

From a recording (--input_audio): audio-to-audio (a variation started from the recording's latent
noised to --init_noise_level, 1 being plain generation), or with --inpaint_range START,END (seconds,
repeatable) the span regenerated conditioned on the rest (Stable Audio 3's inpainting). The
output has the recording's length unless --audio_end_in_s says otherwise; with a recording,
--init_latents is the noise mixed with it (audio-to-audio) or the initial noise (inpainting).

Writes one WAV per prompt and, beside each, a JSON sidecar with every setting needed to
reproduce it. --model may also be an unconverted diffusers folder, stable-audio-tools file or
hub id (converted once into a cache).
"""

from __future__ import annotations

import dataclasses
import re
import time

from absl import flags

from musickv_jax import pipeline
from musickv_jax.audio import save_wav
from musickv_jax.cli import options
from musickv_jax.cli.progress import progress_bar
from musickv_jax.cli.runner import Command, Flags, UsageError, command_line, entry_point
from musickv_jax.pipeline import variation
from musickv_jax.writers.record import provenance
from musickv_jax.writers.sets import OutputSet, write_json, write_npy


def slug(text: str, limit: int = 40) -> str:
  s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
  return s[:limit].rstrip("-") or "prompt"


A2A_DEFAULT_LEVEL = variation.DEFAULT_NOISE_LEVEL  # --input_audio without --init_noise_level or --inpaint_range


def define(fv: Flags) -> None:
  options.define_generation_flags(fv, audio_end_default=None)
  flags.DEFINE_string("input_audio", None, "A recording to start from: audio-to-audio, or inpainting with "
                      "--inpaint_range.", flag_values=fv)
  flags.DEFINE_float("input_start_s", 0.0, "Start of the segment of --input_audio to use, seconds.", flag_values=fv)
  flags.DEFINE_float("input_end_s", None, "End of the segment of --input_audio (default: the end of the file).",
                     flag_values=fv)
  flags.DEFINE_bool("downmix", False, "Mix recordings with more than 2 channels down to stereo.", flag_values=fv)
  flags.DEFINE_float("init_noise_level", None, "Audio-to-audio: where sampling starts on the model's time axis, "
                     f"(0, 1]; 1 ignores the recording (default with --input_audio: {A2A_DEFAULT_LEVEL:g}).",
                     flag_values=fv)
  flags.DEFINE_multi_string("inpaint_range", [], "START,END seconds of --input_audio to regenerate, conditioned on "
                            "the rest (Stable Audio 3; repeat for several spans).", flag_values=fv)


def _regions(fv: Flags) -> list[tuple[float, float]]:
  regions = []
  for text in fv.inpaint_range:
    try:
      start, end = (float(v) for v in text.split(","))
    except ValueError:
      raise UsageError(f"--inpaint_range takes START,END in seconds (e.g. 4,7), got {text!r}") from None
    regions.append((start, end))
  return regions


def _check_combinations(fv: Flags) -> None:
  if not fv.input_audio:
    for flag in ("init_noise_level", "inpaint_range", "input_end_s", "downmix"):
      if fv[flag].present:
        raise UsageError(f"--{flag} applies to a run from a recording; give it with --input_audio")
  elif fv.inpaint_range and fv.init_noise_level is not None:
    raise UsageError("--inpaint_range regenerates its spans from pure noise; leave out --init_noise_level")


def body(fv: Flags) -> None:
  _check_combinations(fv)
  regions = _regions(fv)
  settings = options.generation_settings(fv)
  settings.check_sizes()  # before the model loads
  out_dir = options.check_output_flags(fv)
  init_latents = options.load_npy(fv.init_latents, "init_latents") if fv.init_latents else None
  step_noise = options.load_npy(fv.step_noise, "step_noise") if fv.step_noise else None
  model = options.load_model(fv)
  recording = None
  if fv.input_audio:
    recording = options.load_recording(fv, model)
    if fv.audio_end_in_s is None:  # the recording's own length
      settings = dataclasses.replace(settings, audio_end_in_s=recording.audio.shape[-1] / model.config.sample_rate)
    if not regions:
      level = A2A_DEFAULT_LEVEL if fv.init_noise_level is None else fv.init_noise_level
      settings = dataclasses.replace(settings, init_noise_level=level)
  settings = settings.for_model(model.config)
  settings.validate(model.config)

  start = time.perf_counter()
  with progress_bar(settings.num_inference_steps, "sampling") as listener:
    if recording is None:
      result = pipeline.generate(model, settings, init_latents=init_latents, step_noise=step_noise, on_step=listener)
    elif regions:
      result = variation.inpaint(model, recording.audio, settings, regions, noise=init_latents, step_noise=step_noise,
                                 on_step=listener)
    else:
      result = variation.audio_to_audio(model, recording.audio, settings, noise=init_latents, step_noise=step_noise,
                                        on_step=listener)
  elapsed = time.perf_counter() - start

  record = provenance(model, elapsed, command_line()) | result.describe() | {
      "init_latents": str(options.absolute(fv.init_latents)) if fv.init_latents else None,
      "step_noise": str(options.absolute(fv.step_noise)) if fv.step_noise else None,
      "input_audio": str(options.absolute(fv.input_audio)) if fv.input_audio else None,
      "inpaint_range": [list(r) for r in regions] or None}
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
