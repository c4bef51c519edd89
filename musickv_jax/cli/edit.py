"""musickv-edit: MusicKV editing with Stable Audio Open.

  musickv-edit --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft"
  musickv-edit --model ckpt/sao --input_audio song.mp3 --prompts "clean indie guitar" "classical piano solo"
  musickv-edit --model ckpt/sao --input_audio song.mp3 --edit_method=flowedit --edit_region 4,7 --prompts ...

Generated source: the first prompt describes the source, the second the edit. Further prompts are
generated plainly, as the reference does, unless --edit_all makes each of them an edit of the
same source. Real audio (--input_audio, or --inverted_latent from musickv-invert): the first
prompt describes the recording; it is inverted with that description, then regenerated
(source_reconstruction.wav: what inversion kept) and edited; input.wav is the recording as the
model heard it (segment, stereo, the model's sample rate).

--edit_method: inversion (the default, above), flowedit (no inversion: the recording's latent moves
by the difference of the model's directions under the edit and the source prompts, the source's
K/V injected into the edit), sdedit (from the recording's latent noised to --init_noise_level).
--edit_region START,END (repeatable): only those spans follow the edit; elsewhere the result is the
source (a recording's own latent), with a --region_crossfade_s crossfade just outside each span.

A recording longer than the model's window (47.55 s) is edited whole: overlapping windows
(--window_s, --overlap_s) run as one diffusion process, the source's window i injecting into the
edit's window i; the outputs have the recording's length.

Writes source.wav (or source_reconstruction.wav), edit_1.wav, ... (prompt_N.wav for plain
generations), edit.json with every setting, spectrograms.png comparing source and edits, and
index.html, a listening page (players, spectrograms, how much melody, form and rhythm each edit kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time

from absl import flags

from musickv_jax import jobs
from musickv_jax.cli import options
from musickv_jax.cli.progress import progress_bar, run_bar
from musickv_jax.cli.runner import (
  Command,
  Flags,
  UsageError,
  command_line,
  entry_point,
  flag_namer,
)
from musickv_jax.writers.sets import OutputSet


def define(fv: Flags) -> None:
  options.define_generation_flags(fv, audio_end_default=None)
  options.define_edit_flags(fv)
  options.define_recording_flags(fv)
  options.define_method_flags(fv)
  flags.DEFINE_string("inverted_latent", None, "inverted_latent.npy from musickv-invert: edit that recording "
                      "without inverting it again.", flag_values=fv)
  flags.DEFINE_bool("kv_from_inversion", False, "Real audio: take the source K/V recorded during inversion "
                    "instead of re-running the source branch (faster; no source_reconstruction.wav).",
                    flag_values=fv)


def _request(fv: Flags) -> jobs.EditRequest:
  """The flags as the library's request, with the .npy files they name read."""
  if fv.kv_from_inversion and not fv.input_audio:
    raise UsageError("--kv_from_inversion applies to real-audio edits (--input_audio)")
  request = options.edit_request(options.Values.from_flags(fv))
  init_latents = options.load_npy(fv.init_latents, "init_latents") if fv.init_latents else None
  step_noise = options.load_npy(fv.step_noise, "step_noise") if fv.step_noise else None
  return dataclasses.replace(request, init_latents=init_latents, step_noise=step_noise)


def body(fv: Flags) -> None:
  name_of = flag_namer(COMMAND, fv)
  request = _request(fv)
  jobs.check_combinations(request)  # before the model loads
  out_dir = options.check_output_flags(fv)
  model = options.load_model(fv)
  request = options.with_probed_preset(request, model)
  # validated before the recording is read and inverted: a bad edit request must not cost an inversion
  resolved = jobs.resolve(request, model)
  for note in resolved.described_notes(name_of):
    print(f"info: {note}", file=sys.stderr)

  start = time.perf_counter()
  recording = jobs.read_recording(model, request)
  for warning in recording.warnings if recording is not None else ():
    print(f"warning: {warning}", file=sys.stderr)
  inverts = request.is_recording and not request.recording.inverted_latent and request.method == "inversion"
  steps = resolved.inversion_settings().for_model(model.config).num_inference_steps
  with progress_bar(steps, "inverting") if inverts else contextlib.nullcontext() as listener:
    prepared = jobs.prepare(model, request, recording=recording, on_step=listener, log=print)
  for warning in prepared.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  with run_bar(prepared.job.steps, "editing") as on_progress:
    outcome = next(jobs.run(model, jobs.plan_run([prepared.job], prepared.job.n_prompts), on_progress=on_progress))
  if outcome.error is not None:
    raise outcome.error
  result = prepared.job.result(model, *outcome.latents[prepared.id])
  elapsed = time.perf_counter() - start

  record = jobs.edit_record(model, prepared, result, elapsed, command_line(), extra={
      "init_latents": str(options.absolute(fv.init_latents)) if fv.init_latents else None,
      "step_noise": str(options.absolute(fv.step_noise)) if fv.step_noise else None})
  if request.is_recording:
    record["real_audio"] |= {
        "input_audio": str(options.absolute(fv.input_audio)) if fv.input_audio else None,
        "inverted_latent": str(options.absolute(fv.inverted_latent)) if fv.inverted_latent else None}
  with OutputSet(out_dir) as outputs:
    jobs.stage_job(outputs, prepared, result, record, input_label=fv.input_audio or "", wav_subtype=fv.wav_subtype,
                   latents=options.absolute(fv.save_latents) if fv.save_latents else None)
    outputs.commit()
  print(f"edited {len(prepared.settings.generation.prompts)} prompt(s) in {elapsed:.1f} s")


COMMAND = Command(name="musickv-edit", doc=__doc__, define=define, body=body, flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
