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


def main() -> None:
  from musickv_jax import pipeline
  from musickv_jax.audio import save_wav

  settings = cli_common.settings_from_flags()
  cli_common.check_common_flags()
  out_dir = cli_common.check_output_dir(FLAGS.output_path)
  init_latents = cli_common.load_init_latents()
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
    outputs.commit()
  print(f"generated {len(settings.prompts)} prompt(s) in {elapsed:.1f} s")


if __name__ == "__main__":
  cli_common.define_generation_flags(audio_end_default=None)
  app.run(cli_common.run_main(main), flags_parser=cli_common.parse_flags)
