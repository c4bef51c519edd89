"""Our Flax T5 encoder against transformers' T5EncoderModel (ReLU and gated-GELU variants)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import T5Config as HFT5Config
from transformers import T5EncoderModel

from musickv_jax.convert.rules import apply_rules
from musickv_jax.convert.sources import t5_config_from_hf
from musickv_jax.convert.tables import t5_rules
from musickv_jax.models.t5 import T5Encoder, relative_position_buckets
from tests.parity import assert_parity
from tests.reference import T5_TINY, randomize_


def _ids_and_mask(batch=3, seq=12, vocab=128, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(batch, seq)).astype(np.int64)
  mask = np.ones((batch, seq), np.int64)
  for b, valid in enumerate([seq, 7, 3][:batch]):
    ids[b, valid - 1] = 1  # </s>
    ids[b, valid:] = 0
    mask[b, valid:] = 0
  return ids, mask


@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
def test_t5_matches_transformers(ff):
  hf = randomize_(T5EncoderModel(HFT5Config(**{**T5_TINY, "feed_forward_proj": ff})), seed=5)
  cfg = t5_config_from_hf(hf.config.to_dict(), "test", max_length=12)
  assert cfg.is_gated == (ff == "gated-gelu")
  encoder = T5Encoder(cfg)
  import jax
  abstract = jax.eval_shape(encoder.init, jax.random.key(0), jnp.zeros((1, 2), jnp.int32),
                            jnp.ones((1, 2), jnp.int32))["params"]
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  params, _ = apply_rules(t5_rules(cfg), state, abstract, component="t5", source="test")
  ids, mask = _ids_and_mask()
  ours = encoder.apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
  with torch.no_grad():
    ref = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  assert_parity(ours, ref, what=f"T5 {ff}")


def test_t5_from_converted_checkpoint(tiny):
  ids, mask = _ids_and_mask(seed=4)
  encoder = T5Encoder(tiny.model.config.t5)
  ours = encoder.apply({"params": tiny.model.params.t5}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
  with torch.no_grad():
    ref = tiny.ref.t5(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
  assert_parity(ours, ref.numpy(), what="T5 converted")


def test_relative_buckets_match_transformers():
  from transformers.models.t5.modeling_t5 import T5Attention
  for buckets, distance in ((32, 128), (8, 16)):
    rel = torch.arange(200)[None, :] - torch.arange(200)[:, None]
    ref = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=buckets, max_distance=distance)
    np.testing.assert_array_equal(relative_position_buckets(200, 200, buckets, distance), ref.numpy())


def test_t5_float16_is_close(tiny):
  """float16 T5 (how the original SAO code runs it) stays within half-precision distance of float32."""
  import dataclasses
  ids, mask = _ids_and_mask(seed=6)
  cfg = tiny.model.config.t5
  args = ({"params": tiny.model.params.t5}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
  f32 = T5Encoder(cfg).apply(*args)
  f16 = T5Encoder(dataclasses.replace(cfg, dtype="float16")).apply(*args)
  assert f16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(f16)))
  assert float(jnp.max(jnp.abs(f16 - f32)) / jnp.max(jnp.abs(f32))) < 2e-2
