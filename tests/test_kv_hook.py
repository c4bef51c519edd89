"""The self-attention hook of the DiT: record K/V, inject them back, blend, bypass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musickv_jax.models.dit import KVCache, KVControls
from tests.parity import assert_parity
from tests.reference import KVBlendProcessor
from tests.test_dit_parity import dit_inputs, our_dit, torch_dit

pytestmark = pytest.mark.fast  # part of `make test-fast`


@pytest.fixture(scope="module")
def setup(tiny64):
  cfg = tiny64.model.config.dit
  return tiny64, cfg, dit_inputs(cfg, batch=3, length=10, seed=7)


def test_record_then_inject_weight_one_is_exact(setup):
  conv, cfg, inp = setup
  plain, _ = our_dit(conv.model, inp)
  layers = tuple(range(cfg.depth))
  out, recorded = our_dit(conv.model, inp, KVControls(record_layers=layers))
  np.testing.assert_array_equal(out, plain)  # recording does not change the output
  assert recorded.k.shape == (cfg.depth, 3, 11, cfg.num_heads, cfg.head_dim)
  injected, _ = our_dit(conv.model, inp, KVControls(inject_weight=jnp.ones((cfg.depth, 3)), injected=recorded))
  np.testing.assert_array_equal(injected, plain)


def test_joint_self_reference_is_exact(setup):
  conv, cfg, inp = setup
  plain, _ = our_dit(conv.model, inp)
  out, _ = our_dit(conv.model, inp, KVControls(inject_weight=jnp.full((cfg.depth, 3), 0.7),
                                               source_index=jnp.arange(3)))
  np.testing.assert_array_equal(out, plain)  # blending a sample with its own K/V changes nothing


def test_weight_zero_is_exact(setup):
  conv, cfg, inp = setup
  plain, _ = our_dit(conv.model, inp)
  out, _ = our_dit(conv.model, inp, KVControls(inject_weight=jnp.zeros((cfg.depth, 3)),
                                               source_index=jnp.array([1, 2, 0])))
  np.testing.assert_array_equal(out, plain)


def test_joint_equals_cached_injection(setup):
  """Row 1 takes row 0's K/V in layer 1 with weight 0.4: joint (in-batch) and cached give the same."""
  conv, cfg, inp = setup
  weight = jnp.zeros((cfg.depth, 3)).at[1, 1].set(0.4)
  joint, _ = our_dit(conv.model, inp, KVControls(inject_weight=weight, source_index=jnp.array([0, 0, 2])))
  _, rec = our_dit(conv.model, inp, KVControls(record_layers=(1,)))
  source_kv = KVCache(k=jnp.take(rec.k, jnp.array([0, 0, 2]), axis=1),
                      v=jnp.take(rec.v, jnp.array([0, 0, 2]), axis=1), layers=(1,))
  cached, _ = our_dit(conv.model, inp, KVControls(inject_weight=weight, injected=source_kv))
  np.testing.assert_array_equal(cached, joint)  # the same K/V values reach the same program
  # The cache's rows can also be addressed through source_index instead of being repeated.
  indexed, _ = our_dit(conv.model, inp, KVControls(inject_weight=weight, injected=rec,
                                                   source_index=jnp.array([0, 0, 2])))
  np.testing.assert_array_equal(indexed, joint)
  plain, _ = our_dit(conv.model, inp)
  np.testing.assert_array_equal(joint[0], plain[0])  # the source row is untouched
  assert float(jnp.max(jnp.abs(joint[1] - plain[1]))) > 1e-3  # the edited row changed


def test_blend_matches_a_torch_processor(setup):
  """The blend k <- w k_src + (1 - w) k inside diffusers' self-attention (a custom processor)
  gives the same output as our hook."""
  conv, cfg, inp = setup
  w = 0.35
  ref_dit = conv.ref.dit
  default = ref_dit.attn_processors
  ref_dit.transformer_blocks[0].attn1.set_processor(KVBlendProcessor([(1, 0, w)]))
  try:
    ref = torch_dit(ref_dit, cfg.head_dim, inp)
  finally:
    ref_dit.set_attn_processor(default)
  weight = jnp.zeros((cfg.depth, 3)).at[0, 1].set(w)
  ours, _ = our_dit(conv.model, inp, KVControls(inject_weight=weight, source_index=jnp.array([0, 0, 2])))
  assert_parity(ours, ref, what="blended layer 0")


def test_bypass_equals_removing_the_residual(setup):
  conv, cfg, inp = setup
  bypass = jnp.zeros((cfg.depth,), bool).at[1].set(True)
  out, _ = our_dit(conv.model, inp, KVControls(bypass=bypass))
  # Zeroing the self-attention output projection of layer 1 removes exactly its residual.
  dit = jax.tree.map(lambda a: a, conv.model.params.dit)
  dit["blocks"]["self_attn"]["out"]["kernel"] = dit["blocks"]["self_attn"]["out"]["kernel"].at[1].set(0)
  zeroed = type(conv.model)(**{**conv.model.__dict__, "params": conv.model.params.replace(dit=dit)})
  expected, _ = our_dit(zeroed, inp)
  np.testing.assert_array_equal(out, expected)
  plain, _ = our_dit(conv.model, inp)
  assert float(jnp.max(jnp.abs(out - plain))) > 1e-3


def test_bypass_matches_diffusers_without_that_attention(setup):
  conv, cfg, inp = setup

  class Zero:
    def __call__(self, attn, hidden_states, **kwargs):
      return torch.zeros_like(hidden_states)

  ref_dit = conv.ref.dit
  default = ref_dit.attn_processors
  ref_dit.transformer_blocks[0].attn1.set_processor(Zero())
  try:
    ref = torch_dit(ref_dit, cfg.head_dim, inp)
  finally:
    ref_dit.set_attn_processor(default)
  out, _ = our_dit(conv.model, inp, KVControls(bypass=jnp.array([True, False])))
  assert_parity(out, ref, what="bypass layer 0")


def test_bad_controls_are_refused(setup):
  conv, cfg, inp = setup
  with pytest.raises(ValueError, match="out of range; valid layers are 0..1"):
    our_dit(conv.model, inp, KVControls(record_layers=(5,)))
  with pytest.raises(ValueError, match="needs source_index or injected"):
    our_dit(conv.model, inp, KVControls(inject_weight=jnp.zeros((cfg.depth, 3))))
  with pytest.raises(ValueError, match="lists a layer more than once"):
    our_dit(conv.model, inp, KVControls(record_layers=(1, 1)))
