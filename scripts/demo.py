"""The demo edit, with no download: a tiny, randomly initialised Stable Audio Open is written in
the real diffusers layout (safetensors, configs, tokenizer; no torch), converted by the real
converter, and edited with the reference MusicKV settings by scripts/edit.py:
"Piano solo" -> "Acoustic guitar, country, soft", 100 steps, guidance 7, 15 s, vital layers
[20, 3, 4], time-varying injection.

The weights are RANDOM, so the audio is noise: the demo shows the whole machinery running on
this machine. For music, convert a real checkpoint and pass it to scripts/edit.py (README.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", ".cache/demo", "Where the demo checkpoint is written and converted.")
flags.DEFINE_string("output_path", "outputs/demo", "Where the demo edit is written.")
flags.DEFINE_integer("seed", 0, "Seed of the random weights.")

REPO = Path(__file__).resolve().parent.parent
BANNER = """\
==============================================================================
 musickv-jax demo: the model below has RANDOM weights, so its audio is noise.
 It exercises the real pipeline end to end: diffusers-layout checkpoint ->
 converter -> MusicKV edit (KV injection in layers 20, 3, 4, time-varying).
 For real music:  python -m convert --source /path/to/stable-audio-open-1.0 --output ckpt/sao
                  python scripts/edit.py --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft"
=============================================================================="""


def ensure_demo_checkpoint(workdir: Path, seed: int) -> Path:
  """Writes the tiny diffusers-layout checkpoint and converts it (each only once)."""
  from convert.export import build_tiny_tokenizer, write_diffusers_checkpoint
  from convert.pipeline import convert_checkpoint
  from musickv_jax.checkpoint import is_converted_checkpoint
  from musickv_jax.config import named_config
  from musickv_jax.models.sao import random_params

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


def main(argv):
  del argv
  sys.path.insert(0, str(REPO / "scripts"))
  import cli_common
  cli_common.quiet_libraries()
  print(BANNER)
  start = time.perf_counter()
  checkpoint = ensure_demo_checkpoint(Path(FLAGS.workdir), FLAGS.seed)
  command = [sys.executable, str(REPO / "scripts" / "edit.py"), "--model", str(checkpoint),
             "--prompts", "Piano solo", "Acoustic guitar, country, soft", "--output_path", FLAGS.output_path]
  print("running:", " ".join(f'"{c}"' if " " in c else c for c in command[1:]))
  result = subprocess.run(command, cwd=REPO)
  if result.returncode != 0:
    return result.returncode
  print(f"demo finished in {time.perf_counter() - start:.0f} s; listen to {FLAGS.output_path}/source.wav and "
        f"edit_1.wav, look at {FLAGS.output_path}/spectrograms.png (random weights: noise).")
  return 0


if __name__ == "__main__":
  app.run(main)
