"""The PyTorch side of comparisons (benchmarks; the parity tests use it too): diffusers' Stable Audio
DiT built from our parameters through the converter's name tables, and an attention processor that
blends keys and values like MusicKV. Imports torch and diffusers, which only the test requirements
install; the library itself never imports this module."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import StableAudioDiTModel

from musickv_jax.config import ModelConfig
from musickv_jax.convert.export import component_configs, to_torch_state_dicts


def diffusers_dit(config: ModelConfig, params: dict, dtype: str = "float32") -> StableAudioDiTModel:
  """diffusers' StableAudioDiTModel holding exactly our DiT parameters (every tensor accounted for)."""
  spec = {k: v for k, v in component_configs(config)["transformer"].items() if not k.startswith("_")}
  model = StableAudioDiTModel(**spec).eval()
  # np.array: a writable copy that torch may own.
  state = {k: torch.from_numpy(np.array(v)) for k, v in to_torch_state_dicts(config, params)["dit"].items()}
  return _holding(model, state, "diffusers DiT", dtype)


def _holding(model, state: dict, name: str, dtype: str):
  """`model` with `state` loaded, every parameter accounted for (buffers aside), in `dtype`."""
  missing, unexpected = model.load_state_dict(state, strict=False)
  buffers = {buffer for buffer, _ in model.named_buffers()}
  missing = [k for k in missing if k not in buffers]
  if missing or unexpected:
    raise ValueError(f"{name} does not match our parameters: missing {missing}, unexpected {unexpected}")
  return model if dtype == "float32" else model.to(torch.bfloat16)


class KVBlendProcessor:
  """A diffusers attention processor for the DiT's self-attention that blends keys and values
  like MusicKV: for each (row, source_row, weight) in `blends`, after the K/V projections,
  k[row] <- w * k[source_row] + (1 - w) * k[row] (same for v). Written from the formula, as the
  PyTorch side of the injection parity tests; `blends` can be changed between calls."""

  def __init__(self, blends=()):
    self.blends = list(blends)

  def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
    import torch.nn.functional as F
    from diffusers.models.embeddings import apply_rotary_emb

    batch, length, _ = hidden_states.shape
    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    source_k, source_v = key.clone(), value.clone()
    for row, source_row, weight in self.blends:
      key[row] = weight * source_k[source_row] + (1 - weight) * source_k[row]
      value[row] = weight * source_v[source_row] + (1 - weight) * source_v[row]
    head_dim = query.shape[-1] // attn.heads
    q, k, v = (t.view(batch, length, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
    rot = rotary_emb[0].shape[-1]
    q = torch.cat([apply_rotary_emb(q[..., :rot].float(), rotary_emb, use_real=True, use_real_unbind_dim=-2),
                   q[..., rot:]], dim=-1)
    k = torch.cat([apply_rotary_emb(k[..., :rot].float(), rotary_emb, use_real=True, use_real_unbind_dim=-2),
                   k[..., rot:]], dim=-1)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, -1)
    return attn.to_out[0](out)

def sat_dit(config: ModelConfig, params, dtype: str = "float32"):
  """stable-audio-tools' own DiffusionTransformer (0.0.20, a test-only dependency) holding exactly
  our DiT parameters, through the converter's stable-audio-tools name table: the torch side for the
  family members diffusers has no class for (Stable Audio Open Small)."""
  from stable_audio_tools.models.dit import DiffusionTransformer

  from musickv_jax.convert import tables
  from musickv_jax.convert.rules import export_rules

  d = config.dit
  model = DiffusionTransformer(
      io_channels=d.io_channels, embed_dim=d.embed_dim, depth=d.depth, num_heads=d.num_heads,
      cond_token_dim=d.cond_input_dim, project_cond_tokens=d.cond_token_dim != d.cond_input_dim,
      global_cond_dim=d.global_cond_dim, transformer_type="continuous_transformer",
      diffusion_objective=config.diffusion.objective, timestep_features_dim=d.time_features_dim,
      attn_kwargs={"qk_norm": d.qk_norm, "qk_norm_eps": d.qk_norm_eps}).eval().requires_grad_(False)
  dit_tree = params.dit if hasattr(params, "dit") else params["dit"]
  as_f32 = lambda tree: {k: (as_f32(v) if isinstance(v, dict) else np.asarray(v, np.float32))  # noqa: E731
                         for k, v in tree.items()}
  state = {k: torch.from_numpy(np.array(v)) for k, v in export_rules(tables.dit_rules(d, tables.SAT),
                                                                     as_f32(dit_tree)).items()}
  return _holding(model, state, "stable-audio-tools DiT", dtype)
