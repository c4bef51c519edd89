"""musickv-probe-layers: find the vital layers of a checkpoint (MusicKV's layer probing).

  musickv-probe-layers --model ckpt/sao --prompts_file configs/probe_prompts.txt --seeds=0,1 \
      --output_path probe/

For every prompt and seed, generates with the full model and with each layer's self-attention
bypassed, and scores how much the musical structure (melody, form, rhythm) changes. Writes:
  probe.json     {"ranking": [layer, ...], "layers": {"<i>": {"score", "metrics"}}, "settings": {...}}
  probe.png      per-layer scores, the chosen layers marked
  preset.json    an editing preset with the top --top_k layers: musickv-edit --preset probe/preset.json
  results.jsonl  every (prompt, seed, layer) result, saved as the probe goes: --resume continues
                 an interrupted probe from it
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import flags

from musickv_jax.cli import options
from musickv_jax.cli.outputs import check_output_dir
from musickv_jax.cli.progress import progress_bar
from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point
from musickv_jax.errors import SettingsError
from musickv_jax.research import probing
from musickv_jax.research.probing import ProbeSettings
from musickv_jax.writers import charts
from musickv_jax.writers.sets import OutputSet, write_json

RESULTS = "results.jsonl"
SETTINGS = "probe_settings.json"


def define(fv: Flags) -> None:
  options.define_model_flags(fv)
  flags.DEFINE_multi_string("prompts", [], "Prompts to probe with: --prompts \"first\" \"second\" ...", flag_values=fv)
  flags.DEFINE_string("prompts_file", None, "A text file with one prompt a line (e.g. configs/probe_prompts.txt).",
                      flag_values=fv)
  flags.DEFINE_list("seeds", ["0"], "Seeds, comma-separated: every prompt is probed with each.", flag_values=fv)
  flags.DEFINE_list("layers", None, "Layers to probe (default: all).", flag_values=fv)
  flags.DEFINE_integer("num_inference_steps", None, f"Sampling steps of each generation (default: the model's, at most "
                       f"{probing.PROBE_MAX_STEPS}).", flag_values=fv)
  flags.DEFINE_float("guidance_scale", None, "Classifier-free guidance scale (default: the model's).", flag_values=fv)
  flags.DEFINE_float("audio_end_in_s", None, f"Length of each generation, seconds (default: {probing.PROBE_SECONDS:g}, "
                     "at most the model's window).", flag_values=fv)
  flags.DEFINE_string("latent_length", "fit", "fit (just long enough, faster) or full (the model's window).",
                      flag_values=fv)
  flags.DEFINE_integer("variants_per_call", 8, "Bypassed layers per sampling run (batch rows: (1 + this) x 2).",
                       flag_values=fv)
  flags.DEFINE_integer("top_k", 3, "How many of the top-ranked layers go into preset.json.", flag_values=fv)
  flags.DEFINE_bool("resume", False, "Continue an interrupted probe in --output_path.", flag_values=fv)
  flags.DEFINE_string("output_path", "outputs/probe", "Directory for the probe's outputs.", flag_values=fv)


def read_prompts(fv: Flags) -> tuple[str, ...]:
  if fv.prompts and fv.prompts_file:
    raise UsageError("give --prompts or --prompts_file, not both")
  if fv.prompts_file:
    try:
      return probing.read_prompt_file(fv.prompts_file)
    except SettingsError as e:  # a bad flag value: usage, like the other flag checks
      raise UsageError(e.describe(lambda field: f"--{field}")) from None
  if not fv.prompts:
    raise UsageError("give prompts with --prompts or --prompts_file")
  return tuple(fv.prompts)


def probe_settings(fv: Flags):

  return ProbeSettings(
      prompts=read_prompts(fv), seeds=options.int_list(fv.seeds, "seeds"),
      layers=options.int_list(fv.layers, "layers") if fv.layers is not None else None,
      num_inference_steps=fv.num_inference_steps, guidance_scale=fv.guidance_scale,
      audio_end_in_s=fv.audio_end_in_s, latent_length=fv.latent_length, variants_per_call=fv.variants_per_call,
      top_k=fv.top_k)


def _append(path: Path, lines: list[str]) -> None:
  """Whole lines, flushed to disk: a kill can cut at most the last one, which resume ignores."""
  with open(path, "a") as f:
    f.write("".join(line + "\n" for line in lines))
    f.flush()
    os.fsync(f.fileno())


def body(fv: Flags) -> None:

  settings = probe_settings(fv)
  settings.check_sizes()  # before the model loads
  out_dir = check_output_dir(fv.output_path)
  results_path, settings_path = out_dir / RESULTS, out_dir / SETTINGS
  done = []
  if fv.resume:
    if not settings_path.is_file():
      raise UsageError(f"--resume: {out_dir} holds no probe to continue ({SETTINGS} is missing)")
    if json.loads(settings_path.read_text()) != json.loads(json.dumps(settings.to_json_dict())):
      raise UsageError(f"--resume: the probe in {out_dir} was started with other settings; give the same flags, "
                       "or start a new probe in another --output_path")
    done = probing.read_results(results_path)
  elif results_path.exists() or settings_path.exists():
    raise UsageError(f"--output_path {out_dir} holds an earlier probe; pass --resume to continue it, or choose "
                     "another folder")
  model = options.load_model(fv)
  settings.validate(model.config.dit.depth, model.config)
  if not fv.resume:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(settings_path, settings.to_json_dict())
  pending = probing.pending_units(settings, model.config.dit.depth, done)
  print(f"probing {len(settings.resolved_layers(model.config.dit.depth))} layers over {len(settings.prompts)} "
        f"prompt(s) x {len(settings.seeds)} seed(s): {len(pending)} sampling run(s)"
        + (f", {len(done)} result(s) already saved" if done else ""), flush=True)
  with progress_bar(len(pending), "probing") as listener:
    results = probing.run_probe(model, settings, done=done,
                                on_results=lambda batch: _append(results_path, [probing.result_to_json(r) for r in batch]),
                                on_progress=listener)
  summary = probing.summarize(results, settings, model.config.dit.depth)
  preset = summary.preset(model.config.name, model.config.dit.depth).to_json_dict()
  with OutputSet(out_dir) as outputs:
    write_json(outputs.path("probe.json"), summary.to_json_dict())
    write_json(outputs.path("preset.json"), preset)
    charts.probe_chart(outputs.path("probe.png"), summary, model.config.name)
    outputs.commit()
  print("ranking (most structure-critical first):", " ".join(str(layer) for layer in summary.ranking))
  print(f"vital layers: {list(summary.vital_layers())}; edit with --preset {out_dir / 'preset.json'}",
        file=sys.stdout)


COMMAND = Command(name="musickv-probe-layers", doc=__doc__, define=define, body=body,
                  flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
