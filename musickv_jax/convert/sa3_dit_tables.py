"""Name tables for Stable Audio 3 in the diffusers layout: the DiT (`transformer/`,
StableAudio3DiTModel) and the duration embedder (`duration_embedder/`,
StableAudio3DurationEmbedder), from the names `save_pretrained` writes to our trees
(models/sa3_dit.py, models/sa3_conditioning.py). Layer counts come from the config.

The fused projections stay fused: `to_qkv` (5 D or 3 D, D) is one kernel (D, 5 D) whose output
columns are [q1 | q2 | k1 | k2 | v] (or [q | k | v]), split by the module; likewise the
cross-attention's `to_q` [q1 | q2] and `to_kv` [k1 | k2 | v].

Derivable buffers: the DiT's `rotary_pos_emb.inv_freq` is checked for its shape (`Expect`) and
computed by us. The duration embedder's `freqs` buffer is converted, not derived: its float32
rounding comes from torch's vectorised exp and linspace, which differ from a correctly rounded
table by an ulp at a few entries (models/sa3_conditioning.py), and one ulp of a 1e4 frequency moves
an angle by up to 6e-3 rad.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from musickv_jax.convert.rules import Conv1x1, Expect, Linear, Rule, Target, rule
from musickv_jax.errors import ConfigError
from musickv_jax.models.sa3_conditioning import SA3DurationConfig
from musickv_jax.models.sa3_dit import SA3DiTConfig


def _t(*path: str, layer: int | None = None) -> Target:
  return Target(tuple(path), layer)


def _mlp(theirs: str, ours: str, bias: bool) -> list[Rule]:
  """nn.Sequential(Linear, SiLU, Linear) -> our MLP2 {in, out}."""
  rules = []
  for index, part in ((0, "in"), (2, "out")):
    rules.append(rule(f"{theirs}.{index}.weight", _t(ours, part, "kernel"), Linear()))
    if bias:
      rules.append(rule(f"{theirs}.{index}.bias", _t(ours, part, "bias")))
  return rules


def sa3_dit_rules(cfg: SA3DiTConfig) -> list[Rule]:
  """diffusers StableAudio3DiTModel state dict names -> SA3DiT parameters."""
  rules = [
      rule("prompt_padding_embedding", _t("prompt_padding_embedding")),
      *_mlp("to_timestep_embed", "timestep_mlp", bias=True),
      *_mlp("to_cond_embed", "cond_mlp", bias=False),
      *_mlp("to_global_embed", "global_mlp", bias=False),
      *_mlp("global_cond_embedder", "modulation_mlp", bias=True),
      rule("preprocess_conv.weight", _t("preprocess_conv", "kernel"), Conv1x1()),
      rule("postprocess_conv.weight", _t("postprocess_conv", "kernel"), Conv1x1()),
      rule("proj_in.weight", _t("proj_in", "kernel"), Linear()),
      rule("proj_out.weight", _t("proj_out", "kernel"), Linear()),
      # derived by us; checking its shape catches a wrong head_dim
      rule("rotary_pos_emb.inv_freq", (), Expect((cfg.rotary_dim // 2,))),
  ]
  if cfg.num_memory_tokens:
    rules.append(rule("memory_tokens", _t("memory_tokens")))

  for i in range(cfg.depth):
    b = f"transformer_blocks.{i}"
    blk = lambda *p: _t("blocks", *p, layer=i)  # noqa: E731 (a local shorthand)
    rules += [
        rule(f"{b}.to_scale_shift_gate", blk("modulation_bias")),
        rule(f"{b}.pre_norm.gamma", blk("self_norm", "scale")),
        rule(f"{b}.self_attn.to_qkv.weight", blk("self_attn", "qkv_proj", "kernel"), Linear()),
        rule(f"{b}.self_attn.to_out.weight", blk("self_attn", "out", "kernel"), Linear()),
        rule(f"{b}.self_attn.q_norm.gamma", blk("self_attn", "q_norm", "scale")),
        rule(f"{b}.self_attn.k_norm.gamma", blk("self_attn", "k_norm", "scale")),
        rule(f"{b}.cross_attend_norm.gamma", blk("cross_norm", "scale")),
        rule(f"{b}.cross_attn.to_q.weight", blk("cross_attn", "q", "kernel"), Linear()),
        rule(f"{b}.cross_attn.to_kv.weight", blk("cross_attn", "kv", "kernel"), Linear()),
        rule(f"{b}.cross_attn.to_out.weight", blk("cross_attn", "out", "kernel"), Linear()),
        rule(f"{b}.cross_attn.q_norm.gamma", blk("cross_attn", "q_norm", "scale")),
        rule(f"{b}.cross_attn.k_norm.gamma", blk("cross_attn", "k_norm", "scale")),
        rule(f"{b}.ff_norm.gamma", blk("ff_norm", "scale")),
        rule(f"{b}.ff.proj_in.weight", blk("ff_in", "kernel"), Linear()),
        rule(f"{b}.ff.proj_in.bias", blk("ff_in", "bias")),
        rule(f"{b}.ff.proj_out.weight", blk("ff_out", "kernel"), Linear()),
        rule(f"{b}.ff.proj_out.bias", blk("ff_out", "bias")),
        rule(f"{b}.to_local_embed.0.weight", blk("local_in", "kernel"), Linear()),
        rule(f"{b}.to_local_embed.0.bias", blk("local_in", "bias")),
        rule(f"{b}.to_local_embed.2.weight", blk("local_out", "kernel"), Linear()),
        rule(f"{b}.to_local_embed.2.bias", blk("local_out", "bias")),
    ]
  return rules


def duration_rules(cfg: SA3DurationConfig) -> list[Rule]:
  """diffusers StableAudio3DurationEmbedder state dict names -> SA3DurationEmbedder parameters."""
  del cfg  # the table has no size-dependent names; shapes come from the abstract tree
  return [
      rule("freqs", _t("freqs")),
      rule("linear.weight", _t("linear", "kernel"), Linear()),
      rule("linear.bias", _t("linear", "bias")),
  ]


# ----------------------------------------------------------------------------- configs


def _int(config: Mapping[str, Any], key: str, default: int) -> int:
  """diffusers configs may store ints as floats ("depth": 24.0)."""
  value = config.get(key, default)
  if float(value) != int(value):
    raise ConfigError(f"transformer config: {key} = {value!r} is not a whole number")
  return int(value)


def sa3_dit_config(config: Mapping[str, Any], **overrides) -> SA3DiTConfig:
  """A diffusers `transformer/config.json` (as a dict) -> SA3DiTConfig; `overrides` sets the
  fields diffusers does not store (sample_size, dtype, attention, ...)."""
  d = SA3DiTConfig()
  fields = dict(
      io_channels=_int(config, "io_channels", d.io_channels),
      patch_size=_int(config, "patch_size", d.patch_size),
      embed_dim=_int(config, "embed_dim", d.embed_dim),
      depth=_int(config, "depth", d.depth),
      num_heads=_int(config, "num_heads", d.num_heads),
      cond_token_dim=_int(config, "cond_token_dim", d.cond_token_dim),
      global_cond_dim=_int(config, "global_cond_dim", d.global_cond_dim),
      local_add_cond_dim=_int(config, "local_add_cond_dim", d.local_add_cond_dim),
      time_features_dim=_int(config, "timestep_features_dim", d.time_features_dim),
      ff_mult=float(config.get("ff_mult", d.ff_mult)),
      num_memory_tokens=_int(config, "num_memory_tokens", d.num_memory_tokens),
      differential=bool(config.get("use_differential_attention", d.differential)),
  )
  cfg = SA3DiTConfig(**{**fields, **overrides})
  cfg.validate()
  return cfg


def duration_config(config: Mapping[str, Any], **overrides) -> SA3DurationConfig:
  """A diffusers `duration_embedder/config.json` (as a dict) -> SA3DurationConfig."""
  d = SA3DurationConfig()
  fields = dict(
      output_dim=_int(config, "output_dim", d.output_dim),
      fourier_dim=_int(config, "fourier_dim", d.fourier_dim),
      min_val=float(config.get("min_val", d.min_val)),
      max_val=float(config.get("max_val", d.max_val)),
      min_freq=float(config.get("min_freq", d.min_freq)),
      max_freq=float(config.get("max_freq", d.max_freq)),
  )
  cfg = SA3DurationConfig(**{**fields, **overrides})
  cfg.validate()
  return cfg
