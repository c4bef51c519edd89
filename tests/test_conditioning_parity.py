"""Seconds conditioners and text projection against diffusers' StableAudioProjectionModel, and the
assembly of cross-attention tokens / global vector (padded T5 tokens zeroed, not masked)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musickv_jax.models.conditioning import Conditioner
from tests.parity import assert_parity


@pytest.mark.fast
def test_projection_model_matches_diffusers(tiny):
  compare_with_diffusers(tiny.model, tiny.ref.projection)


@pytest.fixture(scope="module")
def offset_range(tmp_path_factory):
  """A reference whose seconds conditioners have a non-zero minimum (SAO's is 0), converted: the
  converter reads min_value from the checkpoint and the normalisation must subtract it."""
  from tests.conftest import _convert
  from tests.reference import build_reference

  root = tmp_path_factory.mktemp("offset")
  ref = build_reference(root, seed=5, seconds_range=(3.0, 40.0))
  return ref, _convert(ref.diffusers_dir, root / "converted")


def test_seconds_conditioner_with_a_nonzero_minimum_matches_diffusers(offset_range):
  ref, model = offset_range
  assert model.config.conditioner.seconds_min == 3.0 and model.config.conditioner.seconds_max == 40.0
  compare_with_diffusers(model, ref.projection)


def compare_with_diffusers(model, projection):
  cfg = model.config.conditioner
  assert cfg.has_text_projection  # tiny: text 32 -> cond 16
  cond = Conditioner(cfg)
  variables = {"params": model.params.conditioner}
  rng = np.random.default_rng(0)
  text = rng.normal(size=(3, 12, cfg.text_dim)).astype(np.float32)
  mask = np.ones((3, 12), np.int64)
  mask[1, 5:] = 0
  mask[2, 2:] = 0
  start = np.array([0.0, 3.5, 40.0], np.float32)  # beyond the range: clamped
  total = np.array([10.0, 47.5, -1.0], np.float32)

  out = cond.apply(variables, jnp.asarray(text), jnp.asarray(mask), jnp.asarray(start), jnp.asarray(total))
  with torch.no_grad():
    ref = projection(text_hidden_states=torch.from_numpy(text), start_seconds=torch.from_numpy(start),
                              end_seconds=torch.from_numpy(total))
  ref_text = ref.text_hidden_states.numpy() * mask[..., None]  # the pipeline zeroes padding after projecting
  ref_start = ref.seconds_start_hidden_states.numpy()
  ref_total = ref.seconds_end_hidden_states.numpy()

  n = text.shape[1]
  assert out.cross_tokens.shape == (3, n + 2, cfg.cond_dim)
  assert_parity(out.cross_tokens[:, :n], ref_text, what="text tokens")
  assert_parity(out.cross_tokens[:, n:n + 1], ref_start, what="seconds_start token")
  assert_parity(out.cross_tokens[:, n + 1:], ref_total, what="seconds_total token")
  # diffusers: audio_duration_embeds = cat([start, end], dim=2)
  assert_parity(out.global_cond, np.concatenate([ref_start, ref_total], axis=2)[:, 0], what="global cond")
  assert np.all(np.asarray(out.cross_tokens)[2, 2:n] == 0.0)  # padding zeroed (not masked)
