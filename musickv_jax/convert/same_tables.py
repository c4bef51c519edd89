"""The name table of SAME (Stable Audio 3's autoencoder): diffusers' AutoencoderSAME state dict
(`vae/diffusion_pytorch_model.safetensors`, as `save_pretrained` writes it) -> our tree
(models/same.py), checked leaf by leaf by `rules.apply_rules` against `models.same.abstract_params`.

Levels, depths and which blocks have a channel mapping come from the config, never constants.
The transformer layers of a block are one stacked tree (nn.scan): layer j of diffusers'
`...transformers.j` goes to index j. The decoder's `blocks.j` is level n_levels - 1 - j, as in
diffusers, and keeps its index as our `block_j`.

Nothing in AutoencoderSAME's saved state is derivable: the rotary `inv_freq` buffers are not
persistent (not written by save_pretrained), so the table has no `Expect` rows; the bottleneck's
`running_std` buffer is a running statistic and is converted as a parameter.
"""

from __future__ import annotations

from musickv_jax.convert.rules import (
  Conv1x1,
  Linear,
  Reshape,
  Rule,
  Target,
  WeightNorm,
  rule,
)
from musickv_jax.models.same import SAMEConfig


def _t(*path: str, layer: int | None = None) -> Target:
  return Target(tuple(path), layer)


def _dyt(torch_name: str, target) -> list[Rule]:
  """DynamicTanh: alpha (1,), gamma -> scale, beta -> bias."""
  return [rule(f"{torch_name}.alpha", target("alpha")), rule(f"{torch_name}.gamma", target("scale")),
          rule(f"{torch_name}.beta", target("bias"))]


def _layer(torch_name: str, ours: tuple[str, ...], j: int) -> list[Rule]:
  """One TransformerBlock (`{torch_name}`) -> index j of our stacked `{ours}/layers`."""
  def at(*path):
    return lambda leaf: _t(*ours, "layers", *path, leaf, layer=j)

  return [
      *_dyt(f"{torch_name}.norm_attn", at("norm_attn")),
      rule(f"{torch_name}.attn.to_qkv.weight", at("qkv")("kernel"), Linear()),  # [q1|q2|k1|k2|v] or [q|k|v], kept fused
      rule(f"{torch_name}.attn.to_out.weight", at("out")("kernel"), Linear()),
      *_dyt(f"{torch_name}.attn.q_norm", at("q_norm")),
      *_dyt(f"{torch_name}.attn.k_norm", at("k_norm")),
      *_dyt(f"{torch_name}.norm_ff", at("norm_ff")),
      rule(f"{torch_name}.ff.proj_in.weight", at("ff_in")("kernel"), Linear()),
      rule(f"{torch_name}.ff.proj_in.bias", at("ff_in")("bias")),
      rule(f"{torch_name}.ff.proj_out.weight", at("ff_out")("kernel"), Linear()),
      rule(f"{torch_name}.ff.proj_out.bias", at("ff_out")("bias")),
  ]


def _block(torch_name: str, ours: tuple[str, ...], cfg: SAMEConfig, level: int, mode: str) -> list[Rule]:
  width = cfg.width(level)
  c_in, c_out = (cfg.channels[level], width) if mode == "encoder" else (width, cfg.channels[level])
  rules = [rule(f"{torch_name}.new_tokens", _t(*ours, "new_tokens"), Reshape(lambda s: (1, 1, s[0])))]
  if c_in != c_out:  # a weight-normalised 1x1 conv with bias; nn.Identity (no tensors) otherwise
    rules += [rule((f"{torch_name}.mapping.weight_g", f"{torch_name}.mapping.weight_v"),
                   _t(*ours, "mapping", "kernel"), WeightNorm(Conv1x1())),
              rule(f"{torch_name}.mapping.bias", _t(*ours, "mapping", "bias"))]
  for j in range(cfg.encoder_transformer_depths[level]):
    rules += _layer(f"{torch_name}.transformers.{j}", ours, j)
  return rules


def same_rules(cfg: SAMEConfig) -> list[Rule]:
  """diffusers AutoencoderSAME names -> models.same.SAME parameters."""
  n = cfg.n_levels
  rules = [
      rule("encoder.proj.weight", _t("encoder", "proj", "kernel"), Linear()),
      rule("encoder.proj.bias", _t("encoder", "proj", "bias")),
      rule("decoder.proj.weight", _t("decoder", "proj", "kernel"), Linear()),
      rule("decoder.proj.bias", _t("decoder", "proj", "bias")),
      rule("bottleneck.scale", _t("bottleneck", "scale"), Reshape(lambda s: (1, s[0], 1))),
      rule("bottleneck.bias", _t("bottleneck", "bias"), Reshape(lambda s: (1, s[0], 1))),
      rule("bottleneck.running_std", _t("bottleneck", "running_std")),
  ]
  for level in range(n):
    rules += _block(f"encoder.blocks.{level}", ("encoder", f"block_{level}"), cfg, level, "encoder")
  for j in range(n):
    rules += _block(f"decoder.blocks.{j}", ("decoder", f"block_{j}"), cfg, n - 1 - j, "decoder")
  return rules
