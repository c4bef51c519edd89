"""Text-to-music with Stable Audio Open.

  python scripts/generate.py --model ckpt/sao --prompts "Piano solo" "Lo-fi hip hop beat" \
      --audio_end_in_s 10 --seed 0 --output_path outputs/

Writes one WAV per prompt and, beside each, a JSON sidecar with every setting needed to
reproduce it. --model may also be an unconverted diffusers folder, stable-audio-tools file or
hub id (converted once into a cache).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from absl import app, flags  # noqa: E402

import cli_common  # noqa: E402

FLAGS = flags.FLAGS


def define_generation_flags(audio_end_default: float | None, output_default: str = "outputs/") -> None:
  """The flags shared by generate.py and edit.py (DESIGN.md 4b)."""
  flags.DEFINE_string("model", None, "Converted checkpoint dir, or a diffusers / stable-audio-tools checkpoint "
                      "or hub id (converted once into a cache).")
  flags.DEFINE_string("hf_token", None, "Hugging Face token, for --model given as a gated hub id.")
  flags.DEFINE_string("t5", None, "T5 folder, when --model is an unconverted stable-audio-tools file.")
  flags.DEFINE_multi_string("prompts", [], "Prompts: --prompts \"first\" \"second\" ...")
  flags.DEFINE_string("negative_prompt", None, "Negative prompt for the unconditional branch.")
  flags.DEFINE_float("audio_start_in_s", 0.0, "Start of the returned audio, seconds.")
  flags.DEFINE_float("audio_end_in_s", audio_end_default, "End of the returned audio, seconds "
                     "(default: the model's maximum)" if audio_end_default is None else "End of the audio, seconds.")
  flags.DEFINE_integer("num_inference_steps", 100, "Sampling steps.")
  flags.DEFINE_float("guidance_scale", 7.0, "Classifier-free guidance scale (1 disables guidance).")
  flags.DEFINE_string("sampler", "dpmpp-2m", "dpmpp-2m (deterministic), dpmpp-2m-sde, or dpmpp-1.")
  flags.DEFINE_string("sigma_schedule", "exponential", "exponential (the references) or karras.")
  flags.DEFINE_integer("seed", 0, "Seed of the initial noise (and of the SDE sampler's noise).")
  flags.DEFINE_string("init_latents", None, ".npy of the exact initial latents x_T, shape (n_prompts, C, T), "
                      "already at the first sigma; used as given.")
  flags.DEFINE_string("save_latents", None, "Write the final latents of all prompts to this .npy.")
  flags.DEFINE_string("latent_length", "full", "full: the model's whole window, trimmed after decoding (what the "
                      "references do); fit: just long enough for --audio_end_in_s (faster).")
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16 for the DiT and VAE.")
  flags.DEFINE_string("output_path", output_default, "Directory for the outputs.")
  flags.DEFINE_string("wav_subtype", "FLOAT", "WAV sample format: FLOAT, PCM_16 or PCM_24.")


def settings_from_flags():
  from musickv_jax.pipeline import GenerationSettings

  return GenerationSettings(
      prompts=tuple(FLAGS.prompts), negative_prompt=FLAGS.negative_prompt, audio_start_in_s=FLAGS.audio_start_in_s,
      audio_end_in_s=FLAGS.audio_end_in_s, num_inference_steps=FLAGS.num_inference_steps,
      guidance_scale=FLAGS.guidance_scale, sampler=FLAGS.sampler, sigma_schedule=FLAGS.sigma_schedule,
      seed=FLAGS.seed, latent_length=FLAGS.latent_length)


def check_common_flags() -> None:
  from musickv_jax.audio import WAV_SUBTYPES

  if FLAGS.dtype not in ("float32", "bfloat16"):
    raise cli_common.UsageError(f"--dtype must be float32 or bfloat16, got {FLAGS.dtype!r}")
  if FLAGS.wav_subtype not in WAV_SUBTYPES:
    raise cli_common.UsageError(f"--wav_subtype must be one of {WAV_SUBTYPES}, got {FLAGS.wav_subtype!r}")
  if FLAGS.save_latents and not FLAGS.save_latents.endswith(".npy"):
    raise cli_common.UsageError(f"--save_latents must name a .npy file, got {FLAGS.save_latents!r}")
  if FLAGS.save_latents:
    cli_common.check_output_dir(str(Path(FLAGS.save_latents).expanduser().parent))


def load_init_latents():
  import numpy as np

  if not FLAGS.init_latents:
    return None
  path = Path(FLAGS.init_latents).expanduser()
  if not path.is_file():
    raise cli_common.UsageError(f"--init_latents {path}: file not found")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise cli_common.UsageError(f"--init_latents {path}: not a readable .npy file ({e})") from None


def main() -> None:
  from musickv_jax import pipeline
  from musickv_jax.audio import save_wav

  settings = settings_from_flags()
  check_common_flags()
  out_dir = cli_common.check_output_dir(FLAGS.output_path)
  init_latents = load_init_latents()
  if not FLAGS.model:
    raise cli_common.UsageError("--model is required")
  model = cli_common.resolve_model(FLAGS.model, hf_token=FLAGS.hf_token, t5=FLAGS.t5, dtype=FLAGS.dtype)
  pipeline.validate(settings, model.config)
  if init_latents is not None:
    pipeline.check_init_latents(init_latents, len(settings.prompts), settings, model.config)

  listener, close = cli_common.progress_bar(settings.num_inference_steps, "sampling")
  start = time.perf_counter()
  try:
    result = pipeline.generate(model, settings, init_latents=init_latents, on_step=listener)
  finally:
    close()
  elapsed = time.perf_counter() - start

  record = {
      "command": cli_common.command_line(), "model": str(model.path), "model_name": model.config.name,
      "dtype": FLAGS.dtype, "settings": vars(settings) | {"prompts": list(settings.prompts)},
      "resolved": {"audio_end_in_s": settings.resolved_end(model.config), "latent_frames": result.latent_frames,
                   "sample_rate": result.sample_rate, "use_cfg": settings.guidance_scale != 1.0
                   or settings.negative_prompt is not None},
      "init_latents": str(Path(FLAGS.init_latents).resolve()) if FLAGS.init_latents else None,
      "seconds": round(elapsed, 2),
  }
  with cli_common.OutputSet(out_dir) as outputs:
    for i, prompt in enumerate(settings.prompts):
      name = f"{i}_{cli_common.slug(prompt)}"
      save_wav(outputs.path(f"{name}.wav"), result.audio[i], result.sample_rate, FLAGS.wav_subtype)
      cli_common.write_json(outputs.path(f"{name}.json"), record | {"prompt_index": i, "prompt": prompt,
                                                                    "wav": f"{name}.wav"})
    if FLAGS.save_latents:
      cli_common.write_npy(outputs.path(Path(FLAGS.save_latents).expanduser().absolute()), result.latents)
    written = outputs.commit()
  for path in written:
    print(f"wrote {path}")
  print(f"generated {len(settings.prompts)} prompt(s) in {elapsed:.1f} s")


if __name__ == "__main__":
  define_generation_flags(audio_end_default=None)
  app.run(cli_common.run_main(main), flags_parser=cli_common.parse_flags)
