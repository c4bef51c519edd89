"""SAME (Stable Audio 3's autoencoder) against diffusers' AutoencoderSAME, weights through our name
table; the band attention against the full masked attention; memory linear in the length."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musickv_jax.convert.rules import apply_rules
from musickv_jax.convert.same_tables import same_rules
from musickv_jax.convert.tensors import read_safetensors
from musickv_jax.errors import ConfigError, ConversionError
from musickv_jax.models import same
from musickv_jax.models.same import SAMEConfig, abstract_params, band_attention, decoder_receptive_radius
from tests.parity import assert_parity, max_error_ratio

torch = pytest.importorskip("torch", reason="the PyTorch reference needs CPU torch (make setup-test installs it)")
diffusers = pytest.importorskip("diffusers",
                                reason="the SAME reference is diffusers' AutoencoderSAME (requirements-test.txt)")

# Tiny configs (diffusers' config names). A: differential attention, sliding window 1, hop 4*2*2 = 16,
# level 0 without a channel mapping (2 x 4 patch channels = 8 = its width), level 1 with one,
# sinusoidal gates on some layers. B: plain attention, sliding window 2, hop 4*3*2 = 24, mappings on
# both levels, head dim 6 (dim_heads // 2 = 3 is odd: rotary on 4 of the 6 channels). C: mono,
# dim_heads 32 above both widths (one head of min(dim_heads, width)), one layer in level 0.
TINY_A = dict(audio_channels=2, patch_size=4, encoder_channels=8, encoder_c_mults=[1, 2], encoder_strides=[2, 2],
              encoder_transformer_depths=[2, 3], latent_dim=6, use_differential_attention=True, dim_heads=4,
              ff_mult=2, sliding_window=1, encoder_sinusoidal_blocks=[0, 2], decoder_sinusoidal_blocks=[3],
              sampling_rate=16)
TINY_B = dict(audio_channels=2, patch_size=4, encoder_channels=6, encoder_c_mults=[2, 3], encoder_strides=[3, 2],
              encoder_transformer_depths=[2, 2], latent_dim=5, use_differential_attention=False, dim_heads=6,
              ff_mult=3, sliding_window=2, encoder_sinusoidal_blocks=[2], decoder_sinusoidal_blocks=[1, 2],
              sampling_rate=24)
TINY_C = dict(audio_channels=1, patch_size=2, encoder_channels=4, encoder_c_mults=[2, 4], encoder_strides=[2, 2],
              encoder_transformer_depths=[1, 2], latent_dim=3, use_differential_attention=True, dim_heads=32,
              ff_mult=1, sliding_window=1, encoder_sinusoidal_blocks=[1], decoder_sinusoidal_blocks=[2],
              sampling_rate=8)
TINY = {"A": TINY_A, "B": TINY_B, "C": TINY_C}


def randomize_same_(model, seed: int):
  """Every parameter and saved buffer of an AutoencoderSAME random, including those diffusers
  initialises to zero (to_out, ff.proj_out), to one (norm gains, bottleneck scale, running_std) or
  to 1e-5 (new_tokens): weight_g and running_std positive, DynamicTanh alpha around 1."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
      noise = torch.randn(tensor.shape, generator=gen)
      leaf = name.rsplit(".", 1)[-1]
      if leaf == "inv_freq":  # rotary frequencies: derived, not saved (persistent=False)
        continue
      if leaf in ("weight_g", "running_std"):
        tensor.copy_(0.5 + 0.5 * noise.abs())
      elif leaf == "alpha":
        tensor.copy_(1.0 + 0.3 * noise)
      elif leaf in ("gamma", "scale"):
        tensor.copy_(1.0 + 0.2 * noise)
      elif leaf in ("beta", "bias", "new_tokens"):
        tensor.copy_(0.3 * noise)
      elif tensor.ndim >= 2:
        tensor.copy_(noise * int(np.prod(tensor.shape[1:])) ** -0.5)
      else:
        raise AssertionError(f"no randomisation rule for {name}")
  return model.eval()


@dataclasses.dataclass
class Tiny:
  ref: object  # AutoencoderSAME
  config: SAMEConfig
  params: dict
  folder: object


def build(tmp_path, kwargs, seed=0) -> Tiny:
  """A random AutoencoderSAME saved with save_pretrained, read back and converted by our table."""
  torch.manual_seed(seed)
  ref = randomize_same_(diffusers.AutoencoderSAME(**kwargs), seed + 1)
  folder = tmp_path / "vae"
  ref.save_pretrained(folder)
  config = SAMEConfig.from_diffusers(json.loads((folder / "config.json").read_text()))
  state = read_safetensors(folder / "diffusion_pytorch_model.safetensors")
  params, _ = apply_rules(same_rules(config), state, abstract_params(config), component="vae",
                          source=str(folder))
  return Tiny(ref, config, jax.tree.map(jnp.asarray, params), folder)


@pytest.fixture(scope="module", params=sorted(TINY))
def tiny(request, tmp_path_factory) -> Tiny:
  return build(tmp_path_factory.mktemp(f"same{request.param}"), TINY[request.param], seed=ord(request.param))


def torch_encode(ref, audio):
  with torch.no_grad():
    return ref.encode(torch.from_numpy(audio)).latents.numpy()


def torch_decode(ref, latents):
  with torch.no_grad():
    return ref.decode(torch.from_numpy(latents)).sample.numpy()


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("frames, extra", [(5, 0), (3, 7)])
def test_encode_matches_diffusers(tiny, frames, extra):
  """Lengths a multiple of the hop and not (extra samples: not even a multiple of the patch)."""
  cfg = tiny.config
  samples = frames * cfg.hop_length + extra
  audio = np.random.default_rng(frames + extra).normal(size=(2, cfg.audio_channels, samples)).astype(np.float32)
  ours = same.encode(tiny.params, jnp.asarray(audio), config=cfg)  # jitted
  ref = torch_encode(tiny.ref, audio)
  assert ours.shape == ref.shape == (2, cfg.latent_dim, -(-samples // cfg.hop_length))
  assert_parity(ours, ref, what=f"SAME encode {cfg.encoder_strides} T={samples}")


@pytest.mark.parametrize("frames", [5, 2])
def test_decode_matches_diffusers(tiny, frames):
  cfg = tiny.config
  latents = np.random.default_rng(frames).normal(size=(2, cfg.latent_dim, frames)).astype(np.float32)
  ours = same.decode(tiny.params, jnp.asarray(latents), config=cfg)  # jitted
  ref = torch_decode(tiny.ref, latents)
  assert ours.shape == ref.shape == (2, cfg.audio_channels, frames * cfg.hop_length)
  assert_parity(ours, ref, what=f"SAME decode {cfg.encoder_strides} F={frames}")


def test_module_apply_unjitted_and_bfloat16(tmp_path):
  """The Flax module's own method, not jitted, gives the jitted entry point's result; bfloat16
  matmuls run and stay near float32 (a smoke check of the dtype path, not a parity claim)."""
  tiny = build(tmp_path, TINY_C)
  cfg = tiny.config
  model = same.SAME(cfg)
  latents = jnp.asarray(np.random.default_rng(1).normal(size=(1, cfg.latent_dim, 3)).astype(np.float32))
  eager = model.apply({"params": tiny.params}, latents, method=model.decode)
  jitted = same.decode(tiny.params, latents, config=cfg)
  assert max_error_ratio(eager, jitted) <= 1e-6
  bf16 = same.decode(jax.tree.map(lambda a: a.astype(jnp.bfloat16), tiny.params), latents,
                     config=dataclasses.replace(cfg, dtype="bfloat16"))
  assert bf16.dtype == jnp.float32
  assert 0 < max_error_ratio(bf16, jitted) < 0.1


def test_config_read_from_diffusers(tiny):
  cfg = tiny.config
  saved = json.loads((tiny.folder / "config.json").read_text())
  assert cfg.hop_length == tiny.ref.downsampling_ratio
  assert (cfg.latent_dim, cfg.audio_channels, cfg.sample_rate) == (saved["latent_dim"], saved["audio_channels"],
                                                                   saved["sampling_rate"])
  assert cfg.encoder_strides == tuple(saved["encoder_strides"])


def test_sinusoidal_layers_are_the_references(tiny):
  """Which feed-forwards gate with sin(pi x): the reference's `(depth - j) < k` (its last k - 1
  layers), read from the torch modules themselves."""
  cfg, ref = tiny.config, tiny.ref
  n = cfg.n_levels
  for level in range(n):
    enc = tuple(layer.ff.sinusoidal for layer in ref.encoder.blocks[level].transformers)
    dec = tuple(layer.ff.sinusoidal for layer in ref.decoder.blocks[n - 1 - level].transformers)
    assert cfg.sinusoidal_layers("encoder", level) == enc
    assert cfg.sinusoidal_layers("decoder", level) == dec


def test_sinusoidal_count_equal_to_depth_spares_the_first_layer():
  cfg = SAMEConfig(encoder_transformer_depths=(4,), decoder_sinusoidal_blocks=(4,))
  assert cfg.sinusoidal_layers("decoder", 0) == (False, True, True, True)
  assert cfg.sinusoidal_layers("encoder", 0) == (False,) * 4


def test_released_sizes():
  """SAME-S and SAME-L (diffusers' documented configs): hop 4096, 256-dim latents."""
  small = SAMEConfig()
  large = SAMEConfig(encoder_channels=256, encoder_transformer_depths=(12,))
  for cfg in (small, large):
    cfg.validate()
    assert (cfg.hop_length, cfg.latent_dim, cfg.audio_channels, cfg.sample_rate) == (4096, 256, 2, 44100)
  assert (decoder_receptive_radius(small), decoder_receptive_radius(large)) == (6, 12)
  assert large.band(0) == 17


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match="encoder_c_mults"):
    SAMEConfig(encoder_c_mults=(6, 2)).validate()
  with pytest.raises(ConfigError, match="decoder_sinusoidal_blocks"):
    SAMEConfig(encoder_strides=(2, 2), encoder_c_mults=(1, 2), encoder_transformer_depths=(1, 1),
               decoder_sinusoidal_blocks=(1, 2, 3)).validate()
  with pytest.raises(ConfigError, match="head dim"):
    SAMEConfig(encoder_channels=10, encoder_c_mults=(1,), dim_heads=4).validate()
  with pytest.raises(ConfigError, match="not known"):
    SAMEConfig.from_diffusers({**TINY_A, "use_snake": True})


# ----------------------------------------------------------------------------- name table


def test_name_table_refuses_a_wrong_shape_and_a_missing_tensor(tmp_path):
  tiny = build(tmp_path, TINY_A)
  state = dict(read_safetensors(tiny.folder / "diffusion_pytorch_model.safetensors"))
  abstract = abstract_params(tiny.config)
  rules = same_rules(tiny.config)

  wrong = dict(state)
  name = "decoder.blocks.1.transformers.1.attn.to_qkv.weight"
  wrong[name] = np.zeros((state[name].shape[0] - 1, state[name].shape[1]), np.float32)
  with pytest.raises(ConversionError, match=name.replace(".", r"\.") + " has shape"):
    apply_rules(rules, wrong, abstract, component="vae", source="test")

  missing = {k: v for k, v in state.items() if k != "encoder.blocks.1.mapping.weight_g"}
  with pytest.raises(ConversionError, match=r"encoder\.blocks\.1\.mapping\.weight_g .*missing"):
    apply_rules(rules, missing, abstract, component="vae", source="test")

  extra = {**state, "encoder.blocks.0.transformers.0.attn.rope.inv_freq": np.zeros((1,), np.float32)}
  with pytest.raises(ConversionError, match=r"rope\.inv_freq .*not part of this model"):
    apply_rules(rules, extra, abstract, component="vae", source="test")

  # a config with another depth does not fit these weights, and says which tensor
  deeper = dataclasses.replace(tiny.config, encoder_transformer_depths=(2, 4))
  with pytest.raises(ConversionError, match=r"encoder\.blocks\.1\.transformers\.3\.\S+ .*missing"):
    apply_rules(same_rules(deeper), state, abstract_params(deeper), component="vae", source="test")


# ----------------------------------------------------------------------------- band attention


def full_band_attention(q, k, v, half_width):
  """The reference's way: an (L, L) additive band mask, float64."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  length, head_dim = q.shape[1], q.shape[-1]
  idx = np.arange(length)
  mask = np.where(np.abs(idx[None, :] - idx[:, None]) <= half_width, 0.0, -np.inf)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim) + mask
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("half_width", [0, 1, 3, 6])
@pytest.mark.parametrize("length", [1, 5, 12, 13, 31])
def test_band_attention_equals_the_full_masked_attention(length, half_width):
  rng = np.random.default_rng(length * 10 + half_width)
  q, k, v = (rng.normal(size=(2, length, 3, 8)).astype(np.float32) for _ in range(3))
  ref = full_band_attention(q, k, v, half_width)
  for block in (None, max(half_width, 1) + 2):
    ours = band_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), half_width, block)
    ratio = max_error_ratio(ours, ref)
    assert ratio <= 1e-6, (length, half_width, block, ratio)


def _large_shapes(jaxpr, length):
  """Shapes of every value in a jaxpr (nested jaxprs included) with two axes >= length."""
  found = []

  def visit(jx):
    for eqn in jx.eqns:
      for var in eqn.outvars:
        shape = getattr(var.aval, "shape", ())
        if sum(d >= length for d in shape) >= 2:
          found.append((eqn.primitive.name, shape))
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            visit(inner)

  visit(jaxpr.jaxpr)
  return found


def test_band_attention_builds_no_length_squared_array():
  length = 8192
  x = jax.ShapeDtypeStruct((1, length, 2, 8), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda q, k, v: band_attention(q, k, v, 17))(x, x, x)
  assert not _large_shapes(jaxpr, length)
  assert len(jaxpr.jaxpr.eqns) > 5  # the walk saw the program
  # the dense form does show up as such (the check can fail)
  dense = jax.make_jaxpr(lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k))(x, x)
  assert _large_shapes(dense, length)


def test_band_attention_memory_is_linear_in_length():
  """Compiled temporary memory at L and 4L: a ratio near 4 (an L^2 method would give 16)."""
  def temp_bytes(length):
    x = jax.ShapeDtypeStruct((1, length, 2, 8), jnp.float32)
    compiled = jax.jit(lambda q, k, v: band_attention(q, k, v, 17)).lower(x, x, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  small, large = temp_bytes(2048), temp_bytes(8192)
  print(f"band attention temp memory: L=2048 {small} B, L=8192 {large} B")
  assert large <= 4.5 * small
  assert large <= 8192 * 8192 * 2 * 4 / 10  # a tenth of the dense (H, L, L) float32 logits alone


def test_whole_decode_builds_no_length_squared_array():
  """The whole model at 2048 latent frames (sequences of 6144 and 12288 tokens) holds no array
  with two axes of 2048 or more."""
  cfg = SAMEConfig.from_diffusers(TINY_A)
  latents = jax.ShapeDtypeStruct((1, cfg.latent_dim, 2048), jnp.float32)
  model = same.SAME(cfg)
  jaxpr = jax.make_jaxpr(lambda p, z: model.apply({"params": p}, z, method=model.decode))(
      abstract_params(cfg), latents)
  assert not _large_shapes(jaxpr, 2048)


# ----------------------------------------------------------------------------- long audio


def test_receptive_radius_is_exact(tmp_path):
  """Changing latent frame f changes no decoded sample outside frames f - radius .. f + radius
  (bitwise: masked keys get weight exactly 0), and does change one of the two edge frames, so the
  radius is no larger than it must be. (The reach is not symmetric: a decoder segment's input
  token comes first, its output tokens after it.)"""
  tiny = build(tmp_path, TINY_B)
  cfg, hop = tiny.config, tiny.config.hop_length
  radius = decoder_receptive_radius(cfg)
  frames, f = 4 * radius + 3, 2 * radius + 1
  latents = np.random.default_rng(0).normal(size=(1, cfg.latent_dim, frames)).astype(np.float32)
  changed = latents.copy()
  changed[..., f] += 1.0
  a = np.asarray(same.decode(tiny.params, jnp.asarray(latents), config=cfg))
  b = np.asarray(same.decode(tiny.params, jnp.asarray(changed), config=cfg))
  differs = np.abs(a - b).reshape(1, cfg.audio_channels, frames, hop).max(axis=(0, 1, 3)) > 0
  changed_frames = np.flatnonzero(differs)
  assert changed_frames.min() >= f - radius and changed_frames.max() <= f + radius, (radius, changed_frames)
  assert differs[f - radius] or differs[f + radius], (radius, changed_frames)


def test_decode_chunked_equals_the_whole_decode(tiny):
  cfg = tiny.config
  frames = 23
  latents = np.random.default_rng(5).normal(size=(1, cfg.latent_dim, frames)).astype(np.float32)
  whole = np.asarray(same.decode(tiny.params, jnp.asarray(latents), config=cfg))
  chunked = same.decode_chunked(tiny.params, latents, cfg, chunk_frames=4)
  ratio = max_error_ratio(chunked, whole)
  print(f"SAME decode_chunked vs whole {cfg.encoder_strides}: {ratio:.2e} x max|whole|")
  assert ratio <= 1e-6
  with pytest.raises(ValueError, match="receptive radius"):
    same.decode_chunked(tiny.params, latents, cfg, chunk_frames=4, overlap=decoder_receptive_radius(cfg) - 1)


# ----------------------------------------------------------------------------- real size


@pytest.mark.slow
def test_same_s_real_size_matches_diffusers(tmp_path):
  """SAME-S at its real size (diffusers' defaults: 108 M parameters, patch 256, width 768, 12 heads
  of 64, stride 16), random weights, over a few latent frames."""
  tiny = build(tmp_path, {})
  cfg = tiny.config
  assert cfg.hop_length == 4096
  audio = np.random.default_rng(0).normal(size=(1, 2, 3 * 4096 + 1000)).astype(np.float32)
  assert_parity(same.encode(tiny.params, jnp.asarray(audio), config=cfg), torch_encode(tiny.ref, audio),
                what="SAME-S encode T=13288")
  latents = np.random.default_rng(1).normal(size=(1, cfg.latent_dim, 4)).astype(np.float32)
  assert_parity(same.decode(tiny.params, jnp.asarray(latents), config=cfg), torch_decode(tiny.ref, latents),
                what="SAME-S decode F=4")
