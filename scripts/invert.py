"""Invert a recording into Stable Audio Open's initial-noise space, once, for many edits.

  python scripts/invert.py --model ckpt/sao --input_audio song.mp3 --prompts "clean indie guitar" \
      --output_path outputs/inverted/

Writes inverted_latent.npy (1, C, T) and inverted_latent.json (the settings, the recording's
length); pass the .npy to `scripts/edit.py --inverted_latent`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from absl import app, flags  # noqa: E402

import cli_common  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("model", None, "Converted checkpoint dir, or a diffusers / stable-audio-tools checkpoint "
                      "or hub id (converted once into a cache).")
  flags.DEFINE_string("hf_token", None, "Hugging Face token, for --model given as a gated hub id.")
  flags.DEFINE_string("t5", None, "T5 folder, when --model is an unconverted stable-audio-tools file.")
  flags.DEFINE_multi_string("prompts", [], "The description of the recording (one prompt).")
  flags.DEFINE_integer("num_inference_steps", 100, "Inversion steps (use the same number for the edit).")
  flags.DEFINE_float("audio_end_in_s", None, "seconds_total conditioning (default: the model's maximum, as the "
                     "reference does).")
  flags.DEFINE_integer("seed", 0, "Seed for --sample_latent.")
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16 for the DiT and VAE.")
  flags.DEFINE_string("output_path", "outputs/inverted", "Directory for inverted_latent.npy / .json.")
  cli_common.define_audio_flags()


def main() -> None:
  from musickv_jax import pipeline

  if not FLAGS.input_audio:
    raise cli_common.UsageError("--input_audio is required: the recording to invert")
  if len(FLAGS.prompts) != 1:
    raise cli_common.UsageError(f"give exactly one --prompts: the description of the recording "
                                f"(got {len(FLAGS.prompts)})")
  if FLAGS.dtype not in ("float32", "bfloat16"):
    raise cli_common.UsageError(f"--dtype must be float32 or bfloat16, got {FLAGS.dtype!r}")
  out_dir = cli_common.check_output_dir(FLAGS.output_path)
  settings = cli_common.inversion_settings(FLAGS.prompts[0], FLAGS.num_inference_steps, FLAGS.audio_end_in_s)
  model = cli_common.resolve_model(FLAGS.model, hf_token=FLAGS.hf_token, t5=FLAGS.t5, dtype=FLAGS.dtype)
  recording = cli_common.load_recording(model)
  frames = -(-recording.audio.shape[-1] // model.config.vae.hop_length)
  pipeline.validate_inversion(settings, model.config, frames)
  start = time.perf_counter()
  inversion = pipeline.invert_audio(model, recording.audio, settings)
  elapsed = time.perf_counter() - start
  record = {
      "command": cli_common.command_line(), "model": str(model.path), "model_name": model.config.name,
      "input_audio": str(Path(FLAGS.input_audio).resolve()), "input_start_s": FLAGS.input_start_s,
      "input_end_s": FLAGS.input_end_s, "source_sample_rate": recording.source_rate,
      "n_samples": inversion.n_samples, "sample_rate": model.config.sample_rate,
      "latent_shape": list(inversion.inverted.shape), "settings": vars(settings), "seconds": round(elapsed, 2),
  }
  with cli_common.OutputSet(out_dir) as outputs:
    cli_common.write_npy(outputs.path("inverted_latent.npy"), inversion.inverted)
    cli_common.write_json(outputs.path("inverted_latent.json"), record)
    outputs.commit()
  print(f"inverted {recording.duration_s:.2f} s of audio in {elapsed:.1f} s")


if __name__ == "__main__":
  define_flags()
  app.run(cli_common.run_main(main), flags_parser=cli_common.parse_flags)
