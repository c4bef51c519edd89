"""Real-size Stable Audio Open architecture with random weights (slow: ~5 GB on disk, minutes).

Saved in the diffusers layout, converted by our converter, DiT forward compared with diffusers
at a short length, and both timed in the same run (prints the figures; run with `make test-slow`).
"""

from __future__ import annotations

import gc
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


def test_real_size_dit_matches_diffusers(tmp_path):
  from diffusers import (AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel,
                         StableAudioPipeline, StableAudioProjectionModel)
  from transformers import T5Config, T5EncoderModel

  from musickv_jax.convert.export import build_tiny_tokenizer
  from musickv_jax.convert.pipeline import convert_checkpoint
  from musickv_jax.checkpoint import load_converted as load_model
  from musickv_jax.models.dit import StableAudioDiT
  from musickv_jax.models.sao import count_params
  from tests.parity import assert_parity
  from tests.reference import randomize_, rotary_embedding

  torch.manual_seed(0)
  dit = randomize_(StableAudioDiTModel(), 1)  # the defaults are SAO 1.0's sizes
  t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                               feed_forward_proj="relu", dropout_rate=0.0)).eval()
  pipe = StableAudioPipeline(
      vae=AutoencoderOobleck().eval(), text_encoder=t5,
      projection_model=StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0,
                                                  max_value=512),
      tokenizer=build_tiny_tokenizer(128), transformer=dit,
      scheduler=CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0, sigma_data=1.0))
  start = time.perf_counter()
  pipe.save_pretrained(tmp_path / "sao")
  save_s = time.perf_counter() - start
  del pipe, t5
  gc.collect()

  start = time.perf_counter()
  convert_checkpoint(tmp_path / "sao", tmp_path / "converted", log=print)
  convert_s = time.perf_counter() - start
  model = load_model(tmp_path / "converted")
  assert count_params(model.params.dit) == 1_056_939_136
  for name in ("vae", "t5", "conditioner"):
    model.params.pop(name)
  gc.collect()

  batch, length = 2, 323
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, 64, length)).astype(np.float32)
  t = np.array([0.9, 0.3], np.float32)
  cross = rng.normal(size=(batch, 130, 768)).astype(np.float32)
  glob = rng.normal(size=(batch, 1536)).astype(np.float32)

  with torch.no_grad():
    args = (torch.from_numpy(x), torch.from_numpy(t))
    kwargs = dict(encoder_hidden_states=torch.from_numpy(cross), global_hidden_states=torch.from_numpy(glob)[:, None],
                  rotary_embedding=rotary_embedding(64, length + 1), return_dict=False)
    dit(*args, **kwargs)  # warm-up
    start = time.perf_counter()
    ref = dit(*args, **kwargs)[0].numpy()
    torch_s = time.perf_counter() - start

  module = StableAudioDiT(model.config.dit)
  forward = jax.jit(lambda p, *a: module.apply({"params": p}, *a)[0])
  inputs = [jnp.asarray(a) for a in (x, t, cross, glob)]
  start = time.perf_counter()
  compiled = forward.lower(model.params.dit, *inputs).compile()
  compile_s = time.perf_counter() - start
  compiled(model.params.dit, *inputs).block_until_ready()
  start = time.perf_counter()
  ours = compiled(model.params.dit, *inputs).block_until_ready()
  jax_s = time.perf_counter() - start

  ratio = assert_parity(ours, ref, what="real-size DiT (B=2, T=323)")
  print(f"\nreal-size timings (B={batch}, T={length}, float32, this CPU): save {save_s:.1f} s, convert {convert_s:.1f} s; "
        f"DiT forward: diffusers {torch_s:.2f} s, ours {jax_s:.2f} s after compiling {compile_s:.1f} s "
        f"(ours/diffusers = {jax_s / torch_s:.2f}); parity {ratio:.1e}")
