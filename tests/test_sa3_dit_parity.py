"""Stable Audio 3: our DiT and duration embedder against diffusers (StableAudio3DiTModel,
StableAudio3DurationEmbedder), tiny random models saved with save_pretrained and converted by our
name tables; the MusicKV hook against a torch attention processor written from the formula.

Tolerance: max|ours - ref| <= 1e-5 x max|ref| in float32 (docs/architecture.md, Testing). Where a
test compares two runs of ours that must agree exactly, it says so and asserts bitwise equality.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch reference needs CPU torch (make setup-test installs it)")

from musickv_jax.convert.rules import apply_rules  # noqa: E402
from musickv_jax.convert.sa3_dit_tables import duration_rules, sa3_dit_rules  # noqa: E402
from musickv_jax.convert.tensors import ConversionError, read_safetensors  # noqa: E402
from musickv_jax.models.dit import KVCache, KVControls  # noqa: E402
from musickv_jax.models.sa3_conditioning import SA3DurationEmbedder, expo_frequencies  # noqa: E402
from musickv_jax.models.sa3_dit import SA3DiT  # noqa: E402
from tests.parity import assert_parity  # noqa: E402
from tests.sa3_dit_reference import (WEIGHTS, BlendProcessor, abstract_dit, abstract_duration,  # noqa: E402
                                     build_dit, build_duration, reset_self_attention, set_self_attention,
                                     torch_dit)

N_TOKENS = 6  # cross-attention tokens: 5 "text" tokens + the duration token


@pytest.fixture(scope="module")
def references(tmp_path_factory):
  """Tiny torch DiTs, saved and converted, built once per variant: get(differential, memory, **changes)."""
  cache = {}

  def get(differential: bool = True, memory: int = 4, **changes):
    key = (differential, memory, tuple(sorted(changes.items())))
    if key not in cache:
      root = tmp_path_factory.mktemp("sa3")
      cache[key] = build_dit(root, seed=10 * len(cache), use_differential_attention=differential,
                             num_memory_tokens=memory, **changes)
    return cache[key]

  return get


@functools.lru_cache(maxsize=None)
def runner(cfg):
  model = SA3DiT(cfg)

  @jax.jit
  def run(params, inp, controls):
    return model.apply({"params": params}, inp["x"], inp["t"], inp["cross"], inp["glob"], controls,
                       cross_mask=inp.get("mask"), local_cond=inp.get("local"))

  return run


def ours(ref, inp, controls=None):
  out, recorded = runner(ref.config)(ref.params, {k: jnp.asarray(v) for k, v in inp.items()}, controls)
  return np.asarray(out), recorded


def inputs(cfg, *, batch=2, length=12, mask=False, local=False, seed=0):
  rng = np.random.default_rng(seed)
  inp = dict(x=rng.normal(size=(batch, cfg.io_channels, length)).astype(np.float32),
             t=rng.uniform(0.05, 1.0, size=(batch,)).astype(np.float32),
             cross=rng.normal(size=(batch, N_TOKENS, cfg.cond_token_dim)).astype(np.float32),
             glob=rng.normal(size=(batch, cfg.global_cond_dim)).astype(np.float32))
  if mask:  # some text positions padded (never the duration token, the last one)
    valid = np.ones((batch, N_TOKENS), bool)
    valid[0, 3:5] = False
    valid[-1, 1] = False
    inp["mask"] = valid
  if local:
    inp["local"] = rng.normal(size=(batch, cfg.local_add_cond_dim, length)).astype(np.float32)
  return inp


# ----------------------------------------------------------------------------- 1. parity with diffusers

CASES = {"plain-T12": dict(length=12), "mask-local-T12": dict(length=12, mask=True, local=True),
         "mask-T21": dict(length=21, mask=True), "local-T21": dict(length=21, local=True)}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("memory", [4, 0])
@pytest.mark.parametrize("differential", [True, False])
def test_dit_matches_diffusers(references, differential, memory, case):
  ref = references(differential, memory)
  inp = inputs(ref.config, **CASES[case])
  out, recorded = ours(ref, inp)
  assert recorded is None
  assert_parity(out, torch_dit(ref.torch_model, inp),
                what=f"SA3 DiT differential={differential} memory={memory} {case}")


def test_mask_and_local_cond_change_the_output(references):
  """The mask and local conditioning are not no-ops (so the parity cases above test them)."""
  ref = references()
  both = inputs(ref.config, mask=True, local=True)
  plain = {k: v for k, v in both.items() if k not in ("mask", "local")}
  base, _ = ours(ref, plain)
  for key in ("mask", "local"):
    changed, _ = ours(ref, {**plain, key: both[key]})
    assert np.max(np.abs(changed - base)) > 1e-3 * np.max(np.abs(base)), key


def test_patch_size_2_matches_diffusers(references):
  ref = references(patch_size=2)
  inp = inputs(ref.config, length=12, mask=True)
  out, _ = ours(ref, inp)
  assert_parity(out, torch_dit(ref.torch_model, inp), what="SA3 DiT patch_size=2")
  with pytest.raises(ValueError, match="local_cond needs patch_size 1"):
    ours(ref, inputs(ref.config, length=12, local=True))
  with pytest.raises(ValueError, match="multiple of patch_size 2"):
    ours(ref, inputs(ref.config, length=13))


def test_blocked_attention_matches_diffusers(references):
  """The CPU's default attention implementation (auto = blocked) computes the same function."""
  ref = references()
  blocked = type(ref)(ref.torch_model, ref.config.__class__(**{**ref.config.__dict__, "attention": "auto"}),
                      ref.params, ref.path)
  inp = inputs(ref.config, mask=True, local=True)
  out, _ = ours(blocked, inp)
  assert_parity(out, torch_dit(ref.torch_model, inp), what="SA3 DiT attention=auto (blocked on CPU)")


def test_latent_longer_than_sample_size_is_refused(references):
  ref = references()
  short = type(ref)(ref.torch_model, ref.config.__class__(**{**ref.config.__dict__, "sample_size": 8}),
                    ref.params, ref.path)
  with pytest.raises(ValueError, match="at most sample_size 8"):
    ours(short, inputs(ref.config, length=12))


def test_duration_embedder_matches_diffusers(tmp_path):
  model, cfg, params = build_duration(tmp_path)
  seconds = np.array([-5.0, 0.0, 3.7, 12.25, 29.9, 30.0, 47.5, 1e4], np.float32)  # [min, max] = [0, 30]
  with torch.no_grad():
    ref = model(torch.from_numpy(seconds)).numpy()
  out = SA3DurationEmbedder(cfg).apply({"params": params}, jnp.asarray(seconds))
  assert_parity(out, ref, what="SA3 duration embedder")
  # the stored frequency table is what is used (the test perturbs it away from the formula)
  np.testing.assert_array_equal(params["freqs"], model.freqs.numpy())
  assert not np.array_equal(params["freqs"], expo_frequencies(cfg.fourier_dim, cfg.min_freq, cfg.max_freq))
  # values outside [min, max] are clamped: -5 acts as 0, 47.5 and 1e4 as 30
  np.testing.assert_array_equal(out[0], out[1])
  np.testing.assert_array_equal(out[6], out[5])
  np.testing.assert_array_equal(out[7], out[5])


def _torch_time_frequencies(dim: int) -> np.ndarray:
  """What diffusers' StableAudio3ExpoFourierFeatures computes at run time, on this CPU."""
  ramp = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float32)
  return torch.exp(ramp * (math.log(10000.0) - math.log(0.5)) + math.log(0.5)).numpy()


def test_time_frequencies_match_torch():
  """Our float32 table of the DiT's expo features equals torch's at the tiny dims, and at the real
  dim (256) differs from this CPU's vectorised torch by a few ulps at a few entries (documented in
  models/sa3_conditioning.py)."""
  for dim in (8, 16):
    np.testing.assert_array_equal(expo_frequencies(dim, 0.5, 10000.0), _torch_time_frequencies(dim))
  ours_256, theirs_256 = expo_frequencies(256, 0.5, 10000.0), _torch_time_frequencies(256)
  rel = np.abs(ours_256.astype(np.float64) - theirs_256) / theirs_256
  print(f"time frequencies at dim 256: {np.sum(ours_256 != theirs_256)} of 128 entries differ from torch on this "
        f"CPU, max relative difference {rel.max():.2e}")
  assert rel.max() < 2e-6


# ----------------------------------------------------------------------------- 2. the MusicKV hook

VITAL = 1  # the layer that blends in these tests


def _weights(cfg, batch, w, layer=VITAL, row=1):
  return jnp.zeros((cfg.depth, batch)).at[layer, row].set(w)


def _vital(cfg, layer=VITAL):
  return jnp.zeros((cfg.depth,), bool).at[layer].set(True)


def _torch_with(ref, inp, processors: dict):
  try:
    for layer, processor in processors.items():
      set_self_attention(ref.torch_model, layer, processor)
    return torch_dit(ref.torch_model, inp)
  finally:
    reset_self_attention(ref.torch_model)


@pytest.mark.parametrize("w", [0.5, 1.0])
@pytest.mark.parametrize("differential", [True, False])
def test_joint_blend_matches_torch_processor(references, differential, w):
  """Row 1 blends row 0's K/V (after norm and rotary) in layer 1 with weight w."""
  ref = references(differential)
  cfg = ref.config
  inp = inputs(cfg, batch=3, mask=True, seed=3)
  controls = KVControls(inject_weight=_weights(cfg, 3, w), source_index=jnp.array([0, 0, 2]),
                        blend_layers=_vital(cfg))
  out, _ = ours(ref, inp, controls)
  expected = _torch_with(ref, inp, {VITAL: BlendProcessor([(1, 0, w)])})
  assert_parity(out, expected, what=f"blend w={w} differential={differential}")
  plain, _ = ours(ref, inp)
  np.testing.assert_array_equal(out[0], plain[0])  # the source row is untouched
  assert np.max(np.abs(out[1] - plain[1])) > 1e-3 * np.max(np.abs(plain))  # the edited row changed


def test_weight_zero_is_bitwise_no_controls(references):
  ref = references()
  cfg = ref.config
  inp = inputs(cfg, batch=3, seed=3)
  plain, _ = ours(ref, inp)
  out, _ = ours(ref, inp, KVControls(inject_weight=jnp.zeros((cfg.depth, 3)), source_index=jnp.array([1, 2, 0])))
  np.testing.assert_array_equal(out, plain)


@pytest.mark.parametrize("differential", [True, False])
def test_recorded_kv_match_torch(references, differential):
  ref = references(differential)
  cfg = ref.config
  inp = inputs(cfg, batch=2, mask=True, local=True, seed=4)
  plain, _ = ours(ref, inp)
  out, recorded = ours(ref, inp, KVControls(record_layers=(2, 0)))
  np.testing.assert_array_equal(out, plain)  # recording changes nothing
  seq = cfg.num_memory_tokens + 12
  assert recorded.layers == (2, 0)
  assert recorded.k.shape == (2, 2, seq, cfg.num_heads, cfg.key_dim)
  assert recorded.v.shape == (2, 2, seq, cfg.num_heads, cfg.head_dim)
  hooks = {0: BlendProcessor(), 2: BlendProcessor()}
  _torch_with(ref, inp, hooks)
  for slot, layer in enumerate(recorded.layers):
    k, v = (t.numpy() for t in hooks[layer].recorded)
    assert_parity(recorded.k[slot], k, what=f"recorded k layer {layer} differential={differential}")
    assert_parity(recorded.v[slot], v, what=f"recorded v layer {layer} differential={differential}")


def test_cached_equals_joint_bitwise(references):
  """Row 1 takes row 0's K/V in layer 1 with weight 0.4: the cached mode (K/V recorded by a plain
  run, injected) gives the joint mode's output bit for bit: the same K/V values reach the same blend."""
  ref = references()
  cfg = ref.config
  inp = inputs(cfg, batch=3, mask=True, seed=5)
  weight, index = _weights(cfg, 3, 0.4), jnp.array([0, 0, 2])
  joint, _ = ours(ref, inp, KVControls(inject_weight=weight, source_index=index, blend_layers=_vital(cfg)))
  _, rec = ours(ref, inp, KVControls(record_layers=(VITAL,)))
  cached, _ = ours(ref, inp, KVControls(inject_weight=weight, source_index=index, injected=rec))
  np.testing.assert_array_equal(cached, joint)
  repeated = KVCache(k=jnp.take(rec.k, index, axis=1), v=jnp.take(rec.v, index, axis=1), layers=(VITAL,))
  cached_rows, _ = ours(ref, inp, KVControls(inject_weight=weight, injected=repeated))
  np.testing.assert_array_equal(cached_rows, joint)
  plain, _ = ours(ref, inp)
  assert np.max(np.abs(joint[1] - plain[1])) > 1e-3 * np.max(np.abs(plain))


def test_bypass_matches_torch_without_that_attention(references):
  ref = references()
  cfg = ref.config
  inp = inputs(cfg, batch=2, mask=True, seed=6)
  out, _ = ours(ref, inp, KVControls(bypass=_vital(cfg)))
  expected = _torch_with(ref, inp, {VITAL: BlendProcessor(zero=True)})
  assert_parity(out, expected, what="bypass layer 1")
  plain, _ = ours(ref, inp)
  assert np.max(np.abs(out - plain)) > 1e-3 * np.max(np.abs(plain))
  # per row: (depth, B) bypasses layer 1 for row 1 only
  per_row, _ = ours(ref, inp, KVControls(bypass=jnp.zeros((cfg.depth, 2), bool).at[VITAL, 1].set(True)))
  assert_parity(per_row[0], plain[0], tol=1e-6, what="per-row bypass, untouched row")
  assert_parity(per_row[1], out[1], tol=1e-6, what="per-row bypass, bypassed row")


def test_jit_and_scalar_time(references):
  """The module runs eagerly and under jax.jit alike; a scalar t is every row's t."""
  ref = references()
  cfg = ref.config
  inp = inputs(cfg, mask=True, local=True, seed=8)
  inp["t"] = np.full((2,), 0.3, np.float32)
  jitted, _ = ours(ref, inp)
  eager, _ = SA3DiT(cfg).apply({"params": ref.params}, inp["x"], jnp.float32(0.3), inp["cross"], inp["glob"],
                               cross_mask=inp["mask"], local_cond=inp["local"])
  assert_parity(eager, jitted, tol=1e-6, what="eager (scalar t) vs jit")


def test_grad_reaches_inject_weight(references):
  ref = references()
  cfg = ref.config
  inp = {k: jnp.asarray(v) for k, v in inputs(cfg, batch=2, seed=9).items()}
  model = SA3DiT(cfg)

  def loss(weight):
    controls = KVControls(inject_weight=weight, source_index=jnp.array([0, 0]), blend_layers=_vital(cfg))
    out, _ = model.apply({"params": ref.params}, inp["x"], inp["t"], inp["cross"], inp["glob"], controls)
    return jnp.sum(jnp.square(out[1]))

  grad = np.asarray(jax.jit(jax.grad(loss))(_weights(cfg, 2, 0.5)))
  assert np.isfinite(grad).all()
  assert abs(grad[VITAL, 1]) > 1e-6, grad
  assert np.all(np.delete(grad, VITAL, axis=0) == 0)  # layers that do not blend get no gradient


def test_bad_controls_are_refused(references):
  ref = references()
  cfg = ref.config
  inp = inputs(cfg, batch=2)
  seq = cfg.num_memory_tokens + 12
  wrong = KVCache(k=jnp.zeros((1, 2, seq, cfg.num_heads, cfg.head_dim)),  # k1 only: k1 | k2 is 2 * head_dim
                  v=jnp.zeros((1, 2, seq, cfg.num_heads, cfg.head_dim)), layers=(VITAL,))
  with pytest.raises(ValueError, match="injected K/V have shapes"):
    ours(ref, inp, KVControls(inject_weight=jnp.zeros((cfg.depth, 2)), injected=wrong))
  with pytest.raises(ValueError, match="out of range; valid layers are 0..2"):
    ours(ref, inp, KVControls(record_layers=(3,)))


# ----------------------------------------------------------------------------- 3. the name tables


def _convert(cfg, state):
  return apply_rules(sa3_dit_rules(cfg), state, abstract_dit(cfg), component="SA3 DiT", source="test")


def test_table_refuses_wrong_shape_missing_and_unexpected(references):
  ref = references()
  cfg = ref.config
  state = dict(read_safetensors(ref.path / WEIGHTS))
  _convert(cfg, state)  # the untouched state dict converts

  bad_shape = {**state, "transformer_blocks.2.to_local_embed.0.weight": np.zeros((64, 16), np.float32)}
  with pytest.raises(ConversionError, match=r"transformer_blocks\.2\.to_local_embed\.0\.weight has shape \(64, 16\)"):
    _convert(cfg, bad_shape)

  missing = {k: v for k, v in state.items() if k != "transformer_blocks.1.self_attn.to_qkv.weight"}
  with pytest.raises(ConversionError, match=r"transformer_blocks\.1\.self_attn\.to_qkv\.weight \(shape \(320, 64\)\) "
                                            "is missing"):
    _convert(cfg, missing)

  extra = {**state, "transformer_blocks.3.pre_norm.gamma": np.ones((64,), np.float32)}  # a 4th layer
  with pytest.raises(ConversionError, match=r"transformer_blocks\.3\.pre_norm\.gamma .* is not part of this model"):
    _convert(cfg, extra)

  wrong_rotary = {**state, "rotary_pos_emb.inv_freq": np.ones((8,), np.float32)}
  with pytest.raises(ConversionError, match=r"rotary_pos_emb\.inv_freq has shape \(8,\)"):
    _convert(cfg, wrong_rotary)


def test_table_refuses_a_non_differential_config_for_differential_weights(references):
  ref = references(differential=True)
  cfg = ref.config.__class__(**{**ref.config.__dict__, "differential": False})
  with pytest.raises(ConversionError) as error:
    _convert(cfg, dict(read_safetensors(ref.path / WEIGHTS)))
  assert "self_attn.to_qkv.weight has shape (320, 64) but the model config needs (192, 64)" in str(error.value)
  assert "cross_attn.to_kv.weight: expected (128, 64), found (192, 64)" in error.value.details


def test_duration_table_refuses_missing_freqs(tmp_path):
  _, cfg, _ = build_duration(tmp_path)
  state = {k: v for k, v in read_safetensors(tmp_path / "duration_embedder" / WEIGHTS).items() if k != "freqs"}
  with pytest.raises(ConversionError, match=r"tensor freqs \(shape \(8,\)\) is missing"):
    apply_rules(duration_rules(cfg), state, abstract_duration(cfg), component="SA3 duration embedder",
                source="test")


def test_bfloat16_runs_close_to_float32(references):
  """bf16 matmuls, with the hook on: a smoke check of the dtype path, with a loose bound (not a parity claim)."""
  ref = references()
  cfg16 = ref.config.__class__(**{**ref.config.__dict__, "dtype": "bfloat16"})
  ref16 = type(ref)(ref.torch_model, cfg16, jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), ref.params),
                    ref.path)
  inp = inputs(ref.config, batch=2, mask=True, local=True, seed=11)
  controls = KVControls(inject_weight=_weights(ref.config, 2, 0.5), source_index=jnp.array([0, 0]),
                        record_layers=(VITAL,))
  f32, _ = ours(ref, inp, controls)
  bf16, recorded = ours(ref16, inp, controls)
  assert bf16.dtype == np.float32 and recorded.k.dtype == jnp.bfloat16
  rel = float(np.max(np.abs(bf16 - f32)) / np.max(np.abs(f32)))
  print(f"bfloat16 vs float32: {rel:.2e} x max|float32|")
  assert rel < 0.1, rel
