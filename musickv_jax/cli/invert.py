"""musickv-invert: invert a recording into Stable Audio Open's initial-noise space, once, for many edits.

  musickv-invert --model ckpt/sao --input_audio song.mp3 --prompts "clean indie guitar" \
      --output_path outputs/inverted/

Writes inverted_latent.npy (1, C, T) and inverted_latent.json (the settings, the recording's
length; for a recording longer than the model's window, how its windows were laid out); pass the
.npy to `musickv-edit --inverted_latent`.
"""

from __future__ import annotations

import time

from absl import flags

from musickv_jax import pipeline
from musickv_jax.cli import options
from musickv_jax.cli.outputs import check_output_dir
from musickv_jax.cli.progress import progress_bar
from musickv_jax.cli.runner import Command, Flags, UsageError, command_line, entry_point
from musickv_jax.writers.record import provenance
from musickv_jax.writers.sets import OutputSet, write_json, write_npy


def define(fv: Flags) -> None:
  options.define_model_flags(fv)
  flags.DEFINE_multi_string("prompts", [], "The description of the recording (one prompt).", flag_values=fv)
  flags.DEFINE_integer("num_inference_steps", None, "Inversion steps; use the same number for the edit (default: the "
                       "model's sampling steps).", flag_values=fv)
  flags.DEFINE_float("audio_end_in_s", None, "seconds_total conditioning (default: the model's maximum, as the "
                     "reference does).", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed for --sample_latent.", flag_values=fv)
  flags.DEFINE_string("output_path", "outputs/inverted", "Directory for inverted_latent.npy / .json.",
                      flag_values=fv)
  options.define_recording_flags(fv)


def body(fv: Flags) -> None:

  if not fv.input_audio:
    raise UsageError("--input_audio is required: the recording to invert")
  if len(fv.prompts) != 1:
    raise UsageError(f"give exactly one --prompts: the description of the recording (got {len(fv.prompts)})")
  out_dir = check_output_dir(fv.output_path)
  settings = options.inversion_settings(fv, fv.prompts[0], fv.num_inference_steps, fv.audio_end_in_s)
  settings.check_sizes()  # before the model loads
  model = options.load_model(fv)
  settings = settings.for_model(model.config)
  settings.validate(model.config)
  recording = options.load_recording(fv, model)
  windows = options.window_settings(fv)
  windows.validate(model.config)
  start = time.perf_counter()
  with progress_bar(settings.num_inference_steps, "inverting") as listener:
    inversion = pipeline.invert_audio(model, recording.audio, settings, windows=windows, on_step=listener)
  elapsed = time.perf_counter() - start
  record = provenance(model, elapsed, command_line()) | inversion.describe() | {
      "input_audio": str(options.absolute(fv.input_audio)), "input_start_s": fv.input_start_s,
      "input_end_s": fv.input_end_s, "source_sample_rate": recording.source_rate,
      "sample_rate": model.config.sample_rate}
  with OutputSet(out_dir) as outputs:
    write_npy(outputs.path("inverted_latent.npy"), inversion.inverted)
    write_json(outputs.path("inverted_latent.json"), record)
    outputs.commit()
  print(f"inverted {recording.duration_s:.2f} s of audio in {elapsed:.1f} s")


COMMAND = Command(name="musickv-invert", doc=__doc__, define=define, body=body, flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
