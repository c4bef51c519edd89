"""musickv-evaluate: score edits against their source with the music metrics.

  musickv-evaluate --source outputs/source.wav --edits outputs/edit_1.wav [more.wav ...] \
      [--plain plain.wav] [--edit_prompts "Acoustic guitar, country, soft"] --output_path eval/

Writes eval/metrics.json:
  {"edits": [{"file": "...", "metrics": {"f0_chroma_accuracy": 0.93, ...}, "compared_s": 15.0}],
   "higher_is_better": {"f0_chroma_accuracy": true, ...}}
and prints a table. Melody (f0_chroma_accuracy; cqt1_pcc, the papers' CQT1-PCC, which misleads on
real instruments; chroma_match), harmony (chroma_cosine), form (form_ssm_correlation) and rhythm
(onset_correlation) say how much of the source an edit kept; timbre_distance how far its timbre
moved, logmel_distance and mrstft_distance how far its audio moved. --plain: the edit prompt generated
without injection; adds editability (how far the edit moved toward it; see docs/research.md).
--scorer=package.module:Name plugs in a learned scorer such as CLAP (musickv_jax.metrics.scorers).
Clips of different lengths are compared over their common first part (compared_s), said in one
info line each.
"""

from __future__ import annotations

import sys

from absl import flags

from musickv_jax.cli.outputs import check_output_dir
from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point
from musickv_jax.metrics.scorers import load_scorer
from musickv_jax.research.evaluation import evaluate
from musickv_jax.writers.sets import OutputSet, write_json


def define(fv: Flags) -> None:
  flags.DEFINE_string("source", None, "The source clip (WAV, FLAC, MP3 or OGG).", flag_values=fv)
  flags.DEFINE_multi_string("edits", [], "The edits to score: --edits a.wav b.wav ...", flag_values=fv)
  flags.DEFINE_string("plain", None, "The edit prompt generated without injection (editability proxy).",
                      flag_values=fv)
  flags.DEFINE_multi_string("edit_prompts", [], "The edit prompts (one per edit, or one for all), for scorers.",
                            flag_values=fv)
  flags.DEFINE_multi_string("scorer", [], "A learned scorer: package.module:Name (see musickv_jax.metrics.scorers).",
                            flag_values=fv)
  flags.DEFINE_string("output_path", "outputs/evaluation", "Directory for metrics.json.", flag_values=fv)


def body(fv: Flags) -> None:

  if not fv.source:
    raise UsageError("--source is required: the clip the edits were made from")
  if not fv.edits:
    raise UsageError("--edits is required: one or more edited clips")
  out_dir = check_output_dir(fv.output_path)
  scorers = [load_scorer(spec) for spec in fv.scorer]
  result = evaluate(fv.source, fv.edits, plain=fv.plain, edit_prompts=fv.edit_prompts, scorers=scorers)
  for note in result.notes:
    print(f"info: {note}", file=sys.stderr)
  with OutputSet(out_dir) as outputs:
    write_json(outputs.path("metrics.json"), result.to_json_dict())
    outputs.commit()
  print(result.table())


COMMAND = Command(name="musickv-evaluate", doc=__doc__, define=define, body=body,
                  multi_value_flags=("edits", "edit_prompts", "scorer"))
main = entry_point(COMMAND)
