"""Tiny random Stable Audio 3 DiTs and duration embedders from diffusers (test-only, CPU torch),
saved with `save_pretrained` in the real layout and converted back by our name tables; and a torch
self-attention processor that blends and records K/V like MusicKV, written from the formula."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableAudio3DiTModel
from diffusers.models.transformers.transformer_stable_audio3 import StableAudio3SelfAttnProcessor, _apply_rotary_partial
from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

from musickv_jax.convert.rules import apply_rules
from musickv_jax.convert.sa3_dit_tables import duration_config, duration_rules, sa3_dit_config, sa3_dit_rules
from musickv_jax.convert.tensors import read_safetensors
from musickv_jax.models.sa3_conditioning import SA3DurationEmbedder
from musickv_jax.models.sa3_dit import SA3DiT

# io_channels 8, width 64 (4 heads of 16: rotary on 8 channels), 3 layers, 4 memory tokens.
SA3_TINY = dict(io_channels=8, patch_size=1, embed_dim=64, depth=3, num_heads=4, cond_token_dim=16, global_cond_dim=16,
                local_add_cond_dim=17, timestep_features_dim=16, ff_mult=2.0, num_memory_tokens=4,
                use_differential_attention=True)
DURATION_TINY = dict(output_dim=16, fourier_dim=16, min_val=0.0, max_val=30.0)
WEIGHTS = "diffusion_pytorch_model.safetensors"


def randomize_sa3_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Every parameter random, the zero-initialised ones included (pre/post convs, to_local_embed's
  last layer, prompt_padding_embedding), norm gains near 1. Buffers: the rotary inv_freq is left
  as built (we derive it); the duration embedder's stored `freqs` table is perturbed by ~1 %, so a
  converter that recomputed it instead of reading it would fail the parity test."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in module.named_parameters():
      noise = torch.randn(tensor.shape, generator=gen)
      if name.endswith("gamma"):  # RMSNorm gains
        tensor.copy_(1.0 + 0.1 * noise)
      elif tensor.ndim >= 2:
        tensor.copy_(noise * int(np.prod(tensor.shape[1:])) ** -0.5)
      elif name in ("prompt_padding_embedding",) or name.endswith("to_scale_shift_gate"):
        tensor.copy_(0.5 * noise)
      else:  # biases
        tensor.copy_(0.1 * noise)
    for name, buffer in module.named_buffers():
      if name == "freqs":
        buffer.mul_(1.0 + 0.01 * torch.randn(buffer.shape, generator=gen))
  return module.eval()


@dataclasses.dataclass
class SA3Reference:
  """A tiny torch DiT and its conversion: the config, our parameters, the folder it was saved to."""

  torch_model: StableAudio3DiTModel
  config: object  # SA3DiTConfig
  params: dict
  path: Path


def abstract_dit(cfg):
  """jax.eval_shape of SA3DiT's init: the tree the name table must fill, leaf by leaf."""
  model = SA3DiT(cfg)
  x = jax.ShapeDtypeStruct((1, cfg.io_channels, 4 * cfg.patch_size), np.float32)
  t = jax.ShapeDtypeStruct((1,), np.float32)
  cross = jax.ShapeDtypeStruct((1, 3, cfg.cond_token_dim), np.float32)
  glob = jax.ShapeDtypeStruct((1, cfg.global_cond_dim), np.float32)
  return jax.eval_shape(lambda *args: model.init(jax.random.key(0), *args), x, t, cross, glob)["params"]


def convert_dit(folder: Path, **overrides):
  """Reads a saved StableAudio3DiTModel folder (config.json + safetensors) into (config, params)."""
  cfg = sa3_dit_config(json.loads((folder / "config.json").read_text()), **overrides)
  params, _ = apply_rules(sa3_dit_rules(cfg), read_safetensors(folder / WEIGHTS), abstract_dit(cfg),
                          component="SA3 DiT", source=str(folder))
  return cfg, params


def build_dit(root: Path, seed: int = 0, **changes) -> SA3Reference:
  torch.manual_seed(seed)
  model = randomize_sa3_(StableAudio3DiTModel(**{**SA3_TINY, **changes}), seed + 1)
  folder = root / "transformer"
  model.save_pretrained(folder)
  cfg, params = convert_dit(folder, attention="xla")
  return SA3Reference(model, cfg, params, folder)


def abstract_duration(cfg):
  model = SA3DurationEmbedder(cfg)
  seconds = jax.ShapeDtypeStruct((1,), np.float32)
  return jax.eval_shape(lambda s: model.init(jax.random.key(0), s), seconds)["params"]


def build_duration(root: Path, seed: int = 5):
  torch.manual_seed(seed)
  model = randomize_sa3_(StableAudio3DurationEmbedder(**DURATION_TINY), seed + 1)
  folder = root / "duration_embedder"
  model.save_pretrained(folder)
  cfg = duration_config(json.loads((folder / "config.json").read_text()))
  params, _ = apply_rules(duration_rules(cfg), read_safetensors(folder / WEIGHTS), abstract_duration(cfg),
                          component="SA3 duration embedder", source=str(folder))
  return model, cfg, params


def torch_dit(model: StableAudio3DiTModel, inp: dict) -> np.ndarray:
  """diffusers' forward on the numpy inputs of tests/test_sa3_dit_parity.py."""
  as_t = lambda a: None if a is None else torch.from_numpy(np.asarray(a))  # noqa: E731
  with torch.no_grad():
    return model(as_t(inp["x"]), as_t(inp["t"]), encoder_hidden_states=as_t(inp["cross"]),
                 global_hidden_states=as_t(inp["glob"]), encoder_attention_mask=as_t(inp.get("mask")),
                 local_add_cond=as_t(inp.get("local")), return_dict=False)[0].numpy()


class BlendProcessor:
  """A processor for diffusers' SA3 self-attention that does what MusicKV does, from the formula:
  q, k, v from to_qkv, q/k RMS-normed and rotated; the keys k = cat([k1, k2], -1) (or k) and v;
  for each (row, source_row, w) in `blends`: k[row] <- w k[source_row] + (1 - w) k[row], same for v;
  then attn(q1, k1, v) - attn(q2, k2, v) (or attn(q, k, v)) with torch's SDPA. `zero`: the layer's
  self-attention term is zero (bypass). The K/V before blending are kept in `recorded`."""

  def __init__(self, blends=(), zero: bool = False):
    self.blends = list(blends)
    self.zero = zero
    self.recorded = None

  def __call__(self, attn, hidden_states, rope):
    if self.zero:
      return torch.zeros_like(hidden_states)
    heads, head_dim = attn.heads, attn.dim_heads
    branches = 2 if attn.use_differential else 1
    parts = [p.unflatten(-1, (heads, head_dim)) for p in attn.to_qkv(hidden_states).chunk(2 * branches + 1, dim=-1)]
    qs = [_apply_rotary_partial(attn.q_norm(q), rope) for q in parts[:branches]]
    k = torch.cat([_apply_rotary_partial(attn.k_norm(k), rope) for k in parts[branches:2 * branches]], dim=-1)
    v = parts[-1]
    self.recorded = (k.clone(), v.clone())
    own_k, own_v = k.clone(), v.clone()
    for row, source_row, w in self.blends:
      k[row] = w * own_k[source_row] + (1 - w) * own_k[row]
      v[row] = w * own_v[source_row] + (1 - w) * own_v[row]
    keys = k.split(head_dim, dim=-1)
    sdpa = lambda q, k: F.scaled_dot_product_attention(  # noqa: E731  (B, S, H, D) in and out
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    out = sdpa(qs[0], keys[0]) if branches == 1 else sdpa(qs[0], keys[0]) - sdpa(qs[1], keys[1])
    return attn.to_out(out.flatten(2, 3))


def set_self_attention(model: StableAudio3DiTModel, layer: int, processor) -> None:
  model.transformer_blocks[layer].self_attn.set_processor(processor)


def reset_self_attention(model: StableAudio3DiTModel) -> None:
  for block in model.transformer_blocks:
    block.self_attn.set_processor(StableAudio3SelfAttnProcessor())
