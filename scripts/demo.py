"""The demo: a tiny, randomly initialised Stable Audio Open written in the real diffusers layout,
converted by the real converter, then run end to end. No download, no torch.

The weights are random, so the audio is noise: this shows the machinery works on this
machine. For real music, convert a real checkpoint (see README.md).
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", ".cache/demo", "Where the demo checkpoint is written and converted.")
flags.DEFINE_integer("seed", 0, "Seed of the random weights.")


def ensure_demo_checkpoint(workdir: Path, seed: int) -> Path:
  """Writes the tiny diffusers-layout checkpoint and converts it (both only once)."""
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
  import jax
  import jax.numpy as jnp
  import numpy as np

  from musickv_jax.checkpoint import load_model
  from musickv_jax.models.sao import StableAudioModules
  from musickv_jax.text import tokenize

  print("NOTE: the demo model has RANDOM weights; its output is noise. See README.md to use a real checkpoint.")
  path = ensure_demo_checkpoint(Path(FLAGS.workdir), FLAGS.seed)
  model = load_model(path)
  cfg = model.config
  mods = StableAudioModules.from_config(cfg)
  start = time.perf_counter()
  ids, mask = tokenize(model.tokenizer, ["Piano solo"], cfg.t5.max_length)
  text = mods.t5.apply({"params": model.params["t5"]}, jnp.asarray(ids), jnp.asarray(mask))
  cond = mods.conditioner.apply({"params": model.params["conditioner"]}, text, jnp.asarray(mask),
                                jnp.array([0.0]), jnp.array([10.0]))
  frames = 64
  x = jax.random.normal(jax.random.key(0), (1, cfg.dit.io_channels, frames))
  v, _ = mods.dit.apply({"params": model.params["dit"]}, x, jnp.array([0.5]), cond.cross_tokens, cond.global_cond)
  audio = mods.vae.apply({"params": model.params["vae"]}, v, method=mods.vae.decode)
  audio = np.asarray(audio)
  print(f"smoke run: T5 {tuple(text.shape)} -> DiT v {tuple(v.shape)} -> audio {audio.shape} "
        f"({audio.shape[-1] / cfg.sample_rate:.2f} s at {cfg.sample_rate} Hz), finite={np.isfinite(audio).all()}, "
        f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  app.run(main)
