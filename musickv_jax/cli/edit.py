"""musickv-edit: MusicKV editing with Stable Audio Open.

  musickv-edit --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft"
  musickv-edit --model ckpt/sao --input_audio song.mp3 --prompts "clean indie guitar" "classical piano solo"

Generated source: the first prompt describes the source, the second the edit. Further prompts are
generated plainly, as the reference does, unless --edit_all makes each of them an edit of the
same source. Real audio (--input_audio, or --inverted_latent from musickv-invert): the first
prompt describes the recording; it is inverted with that description, then regenerated
(source_reconstruction.wav: what inversion kept) and edited; input.wav is the recording as the
model heard it (segment, stereo, the model's sample rate).

A recording longer than the model's window (47.55 s) is edited whole: overlapping windows
(--window_s, --overlap_s) run as one diffusion process, the source's window i injecting into the
edit's window i; the outputs have the recording's length.

Writes source.wav (or source_reconstruction.wav), edit_1.wav, ... (prompt_N.wav for plain
generations), edit.json with every setting, spectrograms.png comparing source and edits, and
index.html, a listening page (players, spectrograms, how much melody, form and rhythm each edit kept).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from absl import flags

from musickv_jax import pipeline
from musickv_jax.cli import options
from musickv_jax.cli.edit_outputs import outputs_record, write_edit_outputs
from musickv_jax.cli.outputs import OutputSet, write_npy
from musickv_jax.cli.progress import phase_bars, progress_bar
from musickv_jax.cli.record import provenance
from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point


def define(fv: Flags) -> None:
  options.define_generation_flags(fv, audio_end_default=None)
  options.define_edit_flags(fv)
  options.define_recording_flags(fv)
  flags.DEFINE_string("inverted_latent", None, "inverted_latent.npy from musickv-invert: edit that recording "
                      "without inverting it again.", flag_values=fv)
  flags.DEFINE_bool("kv_from_inversion", False, "Real audio: take the source K/V recorded during inversion "
                    "instead of re-running the source branch (faster; no source_reconstruction.wav).",
                    flag_values=fv)


def _check_combinations(fv: Flags, real_audio: bool) -> None:
  if fv.kv_from_inversion and not real_audio:
    raise UsageError("--kv_from_inversion applies to real-audio edits (--input_audio)")
  if fv.kv_from_inversion and fv.inverted_latent:
    raise UsageError("--kv_from_inversion needs --input_audio (the K/V are recorded while inverting), not "
                     "--inverted_latent")
  if real_audio and fv.init_latents:
    raise UsageError("--init_latents cannot be combined with --input_audio / --inverted_latent (the inverted "
                     "recording is the initial latent)")


def _load_inversion(fv: Flags, model, settings: pipeline.EditSettings, recording) -> pipeline.Inversion:
  """--inverted_latent, checked against the recording (when given) and the edit; notes printed."""
  inversion = pipeline.load_inversion(fv.inverted_latent, model.config,
                                      n_samples=recording.audio.shape[-1] if recording else None)
  for note in inversion.notes_for(settings):
    print(f"warning: {note}", file=sys.stderr)
  windows = options.window_settings(fv)
  if inversion.windows is not None and (fv["window_s"].present or fv["overlap_s"].present) \
      and windows.geometry() != inversion.windows:
    print("warning: the recording was inverted over other windows; its own (--window_s "
          f"{inversion.windows.window_s}, --overlap_s {inversion.windows.overlap_s}) are used", file=sys.stderr)
  return inversion


def body(fv: Flags) -> None:
  values = options.Values.from_flags(fv)
  real_audio = bool(fv.input_audio or fv.inverted_latent)
  _check_combinations(fv, real_audio)
  out_dir = options.check_output_flags(fv)
  init_latents = options.load_npy(fv.init_latents, "init_latents") if fv.init_latents else None
  step_noise = options.load_npy(fv.step_noise, "step_noise") if fv.step_noise else None
  if real_audio and step_noise is not None:
    raise UsageError("--step_noise applies to generated sources (a recording is edited with the deterministic sampler "
                     "its inversion ran backwards)")
  model = options.load_model(fv)
  chosen = options.edit_settings(values, model)
  # validated before inverting: a bad edit request must not cost an inversion
  settings = options.fit_to_model(chosen, values, model.config, real_audio=real_audio).validated(model.config)

  start = time.perf_counter()
  recording = options.load_recording(fv, model) if fv.input_audio else None
  windows = options.window_settings(fv)
  if fv.inverted_latent:
    inversion = _load_inversion(fv, model, settings, recording)
    with progress_bar(settings.generation.num_inference_steps, "editing") as listener:
      result = pipeline.edit_recording(model, inversion, settings, windows=windows, on_step=listener)
  elif recording is not None:
    inv_settings = options.inversion_settings(fv, settings.generation.prompts[0],
                                              settings.generation.num_inference_steps, settings.generation.audio_end_in_s)
    result, inversion = pipeline.edit_audio(model, recording.audio, settings, inv_settings, windows=windows,
                                            kv_from_inversion=fv.kv_from_inversion, progress=phase_bars, log=print)
  else:
    passes = 2 if settings.injection_mode == "cached" else 1
    with progress_bar(passes * settings.generation.num_inference_steps, "editing") as listener:
      result = pipeline.edit(model, settings, init_latents=init_latents, step_noise=step_noise, on_step=listener)
  elapsed = time.perf_counter() - start

  record = provenance(model, elapsed) | result.describe() | {
      "preset": chosen.preset.name,
      "init_latents": str(options.absolute(fv.init_latents)) if fv.init_latents else None,
      "step_noise": str(options.absolute(fv.step_noise)) if fv.step_noise else None,
      "outputs": outputs_record(result, real_audio)}
  record["editing"]["schedule"] = chosen.schedule_name
  record["resolved"]["shared_initial_noise"] = fv.init_latents is None and not real_audio
  if real_audio:
    record["real_audio"] |= {
        "input_audio": str(options.absolute(fv.input_audio)) if fv.input_audio else None,
        "inverted_latent": str(options.absolute(fv.inverted_latent)) if fv.inverted_latent else None,
        "input_start_s": fv.input_start_s, "input_end_s": fv.input_end_s,
        "source_sample_rate": recording.source_rate if recording else None}
  with OutputSet(out_dir) as outputs:
    write_edit_outputs(outputs, result, record, recording=recording, input_label=fv.input_audio or "",
                       wav_subtype=fv.wav_subtype)
    if fv.save_latents:
      write_npy(outputs.path(options.absolute(fv.save_latents)), np.asarray(result.latents))
    outputs.commit()
  print(f"edited {len(settings.generation.prompts)} prompt(s) in {elapsed:.1f} s")


COMMAND = Command(name="musickv-edit", doc=__doc__, define=define, body=body, flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
