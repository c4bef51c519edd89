"""musickv-demo: the demo edit, with no download.

A tiny, randomly initialised Stable Audio Open is written in the real diffusers layout
(safetensors, configs, tokenizer; no torch), converted by the real converter, and edited with
the reference MusicKV settings by musickv-edit: "Piano solo" -> "Acoustic guitar, country,
soft", 100 steps, guidance 7, 15 s, vital layers [20, 3, 4], time-varying injection.

The weights are RANDOM, so the audio is noise: the demo shows the whole machinery running on
this machine. For music, convert a real checkpoint and pass it to musickv-edit (README.md).
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags

from musickv_jax.checkpoint import is_converted_checkpoint
from musickv_jax.cli import edit
from musickv_jax.cli.runner import Command, Flags, entry_point, run
from musickv_jax.config import named_config
from musickv_jax.convert.export import build_tiny_tokenizer, write_diffusers_checkpoint
from musickv_jax.convert.pipeline import convert_checkpoint
from musickv_jax.models.sao import random_params

BANNER = """\
==============================================================================
 musickv-jax demo: the model below has RANDOM weights, so its audio is noise.
 It exercises the real pipeline end to end: diffusers-layout checkpoint ->
 converter -> MusicKV edit (KV injection in layers 20, 3, 4, time-varying).
 For real music:  musickv-convert --source /path/to/stable-audio-open-1.0 --output ckpt/sao
                  musickv-edit --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft"
=============================================================================="""


def define(fv: Flags) -> None:
  flags.DEFINE_string("workdir", ".cache/demo", "Where the demo checkpoint is written and converted.", flag_values=fv)
  flags.DEFINE_string("output_path", "outputs/demo", "Where the demo edit is written.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the random weights.", flag_values=fv)


def ensure_demo_checkpoint(workdir: Path, seed: int) -> Path:
  """Writes the tiny diffusers-layout checkpoint and converts it (each only once)."""

  source = workdir / "tiny-sao-diffusers"
  converted = workdir / "tiny-sao"
  if not (source / "model_index.json").is_file():
    config = named_config("tiny")
    print(f"writing a tiny random Stable Audio Open checkpoint (diffusers layout) to {source}")
    write_diffusers_checkpoint(source, config, random_params(config, seed), build_tiny_tokenizer(config.t5.max_length))
  if not is_converted_checkpoint(converted):
    print("converting it with the real converter:")
    convert_checkpoint(source, converted, overwrite=True)
  return converted


def body(fv: Flags) -> int:
  print(BANNER)
  start = time.perf_counter()
  checkpoint = ensure_demo_checkpoint(Path(fv.workdir), fv.seed)
  argv = ["--model", str(checkpoint), "--prompts", "Piano solo", "Acoustic guitar, country, soft",
          "--output_path", fv.output_path]
  print("running: musickv-edit", " ".join(f'"{a}"' if " " in a else a for a in argv), flush=True)
  status = run(edit.COMMAND, argv)
  if status != 0:
    return status  # musickv-edit has said why
  print(f"demo finished in {time.perf_counter() - start:.0f} s; listen to {fv.output_path}/source.wav and "
        f"edit_1.wav, look at {fv.output_path}/spectrograms.png (random weights: noise).")
  return 0


COMMAND = Command(name="musickv-demo", doc=__doc__, define=define, body=body, multi_value_flags=())
main = entry_point(COMMAND)
