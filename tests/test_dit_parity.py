"""Our DiT against diffusers' StableAudioDiTModel, weights through our converter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musickv_jax.models.dit import StableAudioDiT
from tests.parity import assert_parity
from tests.reference import rotary_embedding


def dit_inputs(cfg, batch=2, length=16, n_tokens=7, seed=0):
  rng = np.random.default_rng(seed)
  return dict(
      x=rng.normal(size=(batch, cfg.io_channels, length)).astype(np.float32),
      t=rng.uniform(0.05, 0.99, size=(batch,)).astype(np.float32),
      cross=rng.normal(size=(batch, n_tokens, cfg.cond_input_dim)).astype(np.float32),
      glob=rng.normal(size=(batch, cfg.global_cond_dim)).astype(np.float32),
  )


def torch_dit(ref_dit, head_dim, inp):
  with torch.no_grad():
    return ref_dit(torch.from_numpy(inp["x"]), torch.from_numpy(inp["t"]),
                   encoder_hidden_states=torch.from_numpy(inp["cross"]),
                   global_hidden_states=torch.from_numpy(inp["glob"])[:, None, :],
                   rotary_embedding=rotary_embedding(head_dim, inp["x"].shape[-1] + 1), return_dict=False)[0].numpy()


def our_dit(model, inp, controls=None):
  dit = StableAudioDiT(model.config.dit)
  return dit.apply({"params": model.params.dit}, jnp.asarray(inp["x"]), jnp.asarray(inp["t"]),
                   jnp.asarray(inp["cross"]), jnp.asarray(inp["glob"]), controls)


@pytest.mark.fast
@pytest.mark.parametrize("fixture", ["tiny", "tiny64"])
@pytest.mark.parametrize("length", [16, 37])
def test_dit_matches_diffusers(fixture, length, request):
  conv = request.getfixturevalue(fixture)
  cfg = conv.model.config.dit
  inp = dit_inputs(cfg, length=length)
  ours, recorded = our_dit(conv.model, inp)
  assert recorded is None
  ref = torch_dit(conv.ref.dit, cfg.head_dim, inp)
  assert_parity(ours, ref, what=f"DiT {fixture} T={length}")


@pytest.mark.fast
def test_dit_config_read_from_diffusers(tiny64):
  cfg = tiny64.model.config.dit
  assert (cfg.depth, cfg.num_heads, cfg.head_dim, cfg.cross_kv_heads, cfg.rotary_dim) == (2, 2, 64, 1, 32)


def test_dit_bf16_runs_close_to_float32(tiny64):
  """bf16 matmuls: a smoke check of the dtype path, with a loose bound (not a parity claim)."""
  inp = dit_inputs(tiny64.model.config.dit)
  f32, _ = our_dit(tiny64.model, inp)
  model16 = type(tiny64.model)(**{**tiny64.model.__dict__,
                                  "config": tiny64.model.config.with_dtype("bfloat16"),
                                  "params": jax.tree.map(lambda a: a.astype(jnp.bfloat16), tiny64.model.params)})
  bf16, _ = our_dit(model16, inp)
  assert bf16.dtype == jnp.float32
  rel = float(jnp.max(jnp.abs(bf16 - f32)) / jnp.max(jnp.abs(f32)))
  assert rel < 0.1, rel
