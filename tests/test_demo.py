"""The README's demo: its embedded checkpoint is a real diffusers folder, and the demo command
runs end to end (marked `demo`; part of the default run, so CI runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parent.parent


def test_demo_checkpoint_loads_in_diffusers_and_matches(tmp_path):
  """The tiny random checkpoint the demo writes (without torch) is a StableAudioPipeline folder
  that diffusers loads with every weight in place; its DiT computes what ours computes."""
  import jax.numpy as jnp
  from diffusers import StableAudioPipeline

  from musickv_jax.convert.export import build_tiny_tokenizer, write_diffusers_checkpoint
  from musickv_jax.config import named_config
  from musickv_jax.models.dit import StableAudioDiT
  from musickv_jax.models.sao import random_params
  from tests.parity import assert_parity
  from tests.reference import rotary_embedding

  config = named_config("tiny")
  params = random_params(config, 3)
  write_diffusers_checkpoint(tmp_path / "sao", config, params, build_tiny_tokenizer(config.t5.max_length))
  from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioProjectionModel
  from transformers import T5EncoderModel

  pipe = StableAudioPipeline.from_pretrained(tmp_path / "sao")  # model_index.json and every folder load
  for cls, folder in ((StableAudioDiTModel, "transformer"), (AutoencoderOobleck, "vae"),
                      (StableAudioProjectionModel, "projection_model"), (T5EncoderModel, "text_encoder")):
    _, info = cls.from_pretrained(tmp_path / "sao" / folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], (folder, info)
  cfg = config.dit
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, cfg.io_channels, 20)).astype(np.float32)
  t = np.array([0.3, 0.8], np.float32)
  cross = rng.normal(size=(2, 5, cfg.cond_input_dim)).astype(np.float32)
  glob = rng.normal(size=(2, cfg.global_cond_dim)).astype(np.float32)
  with torch.no_grad():
    ref = pipe.transformer(torch.from_numpy(x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(cross),
                           global_hidden_states=torch.from_numpy(glob)[:, None],
                           rotary_embedding=rotary_embedding(cfg.head_dim, 21), return_dict=False)[0].numpy()
  ours, _ = StableAudioDiT(cfg).apply({"params": params.dit}, *map(jnp.asarray, (x, t, cross, glob)))
  assert_parity(ours, ref, what="demo checkpoint DiT via diffusers")


@pytest.mark.demo
def test_demo_command_runs_end_to_end(tmp_path):
  start = time.perf_counter()
  env = {**os.environ, "MUSICKV_COMPILATION_CACHE": str(tmp_path / "xla")}
  res = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--workdir", str(tmp_path / "work"),
                        "--output_path", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env=env)
  elapsed = time.perf_counter() - start
  assert res.returncode == 0, res.stderr[-3000:]
  assert "RANDOM weights" in res.stdout
  for name in ("source.wav", "edit_1.wav"):
    audio, sr = sf.read(tmp_path / "out" / name, always_2d=True)
    assert sr == 44100 and audio.shape == (15 * 44100, 2) and np.all(np.isfinite(audio))
  assert (tmp_path / "out" / "spectrograms.png").is_file()
  print(f"demo took {elapsed:.0f} s")
