"""musickv-compare: several ways to edit one recording, side by side.

  musickv-compare --model ckpt/sao-small --input_audio song.wav --prompts "clean indie guitar" "classical piano" \
      --methods inversion,flowedit,sdedit:0.5,sdedit:0.8 --output_path compare/

Each method (inversion: invert, then regenerate; flowedit: no inversion, the recording's latent
moved by velocity differences; sdedit:LEVEL: from the recording's latent noised to LEVEL) runs with
the edit's KV injection and without it (--nowithout_injection: with it only), in one model load,
the variants that share a program as rows of one sampler call. Every result is scored against the
recording with musickv-evaluate's metrics.

Writes input.wav (the recording as the model heard it), <method>.wav per variant, compare.json
(each variant's settings, metrics, DiT rows and seconds), fidelity_editability.png (melody kept
against timbre moved, one point per variant) and index.html (the players side by side, the plot).
The edit flags of musickv-edit apply (--vital_layers, --schedule, --edit_region, --flowedit_samples, ...).
"""

from __future__ import annotations

import sys
import time

from absl import flags

from musickv_jax.cli import options
from musickv_jax.cli.progress import run_bar
from musickv_jax.cli.runner import Command, Flags, UsageError, command_line, entry_point
from musickv_jax.jobs import check_combinations, compare, read_recording
from musickv_jax.writers import compare as compare_writer
from musickv_jax.writers.record import provenance
from musickv_jax.writers.sets import OutputSet


def define(fv: Flags) -> None:
  options.define_generation_flags(fv, audio_end_default=None, output_default="outputs/compare")
  options.define_edit_flags(fv)
  options.define_recording_flags(fv)
  options.define_method_flags(fv)
  flags.DEFINE_string("methods", compare.DEFAULT_METHODS, "The methods to compare, comma-separated: inversion, "
                      "flowedit, sdedit or sdedit:LEVEL (its --init_noise_level).", flag_values=fv)
  flags.DEFINE_bool("without_injection", True, "Also run each method without KV injection (weight 0).",
                    flag_values=fv)


def body(fv: Flags) -> None:
  if not fv.input_audio:
    raise UsageError("--input_audio is required: the recording every method edits")
  for flag in ("edit_method", "init_noise_level"):
    if fv[flag].present:
      raise UsageError(f"--{flag} is set per method by --methods (e.g. sdedit:0.5); leave it out")
  variants = compare.methods_from_text(fv.methods, without_injection=fv.without_injection)
  request = options.edit_request(options.Values.from_flags(fv))
  check_combinations(compare.variant_request(request, variants[0]))
  out_dir = options.check_output_flags(fv)
  model = options.load_model(fv)
  start = time.perf_counter()
  recording = read_recording(model, request)
  for warning in recording.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  with run_bar(1, "comparing") as on_progress:
    comparison = compare.compare(model, request, variants, recording=recording, on_progress=on_progress, log=print)
  for row in comparison.rows:
    if row.error:
      print(f"warning: {row.variant.label} failed: {row.error}", file=sys.stderr)
  elapsed = time.perf_counter() - start
  record = compare.compare_record(comparison, request.prompts, provenance(model, elapsed, command_line()))
  with OutputSet(out_dir) as outputs:
    compare_writer.stage_comparison(outputs, record, recording.audio, recording.sample_rate, compare.clips(comparison),
                                    wav_subtype=fv.wav_subtype)
    outputs.commit()
  if comparison.evaluation is not None:
    print(comparison.evaluation.table())
  print(f"compared {len(comparison.finished())} of {len(comparison.rows)} edit(s) in {elapsed:.1f} s")


COMMAND = Command(name="musickv-compare", doc=__doc__, define=define, body=body,
                  flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
