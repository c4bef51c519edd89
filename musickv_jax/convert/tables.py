"""Name tables: which PyTorch tensor becomes which leaf of our tree, per component and layout.

Layouts: 'diffusers' (StableAudioPipeline folders) and 'sat' (stable-audio-tools single
file). T5 always uses Hugging Face transformers names. Counts of layers and blocks come
from the config, never from constants.
"""

from __future__ import annotations

from musickv_jax.config import ConditionerConfig, DiTConfig, OobleckConfig, T5Config
from musickv_jax.convert.rules import (
  Conv,
  Conv1x1,
  ConvTranspose,
  Expect,
  Fused,
  Linear,
  Reshape,
  Rule,
  Target,
  WeightNorm,
  rule,
)

DIFFUSERS, SAT = "diffusers", "sat"


def _t(*path: str, layer: int | None = None) -> Target:
  return Target(tuple(path), layer)


# ----------------------------------------------------------------------------- DiT


def dit_rules(cfg: DiTConfig, layout: str) -> list[Rule]:
  if layout == DIFFUSERS:
    names = {
        "W": "time_proj.weight", "time_in": "timestep_proj.0", "time_out": "timestep_proj.2",
        "global_in": "global_proj.0", "global_out": "global_proj.2",
        "cond_in": "cross_attention_proj.0", "cond_out": "cross_attention_proj.2",
        "proj_in": "proj_in", "proj_out": "proj_out", "block": "transformer_blocks.{i}",
    }
  elif layout == SAT:
    names = {
        "W": "timestep_features.weight", "time_in": "to_timestep_embed.0", "time_out": "to_timestep_embed.2",
        "global_in": "to_global_embed.0", "global_out": "to_global_embed.2",
        "cond_in": "to_cond_embed.0", "cond_out": "to_cond_embed.2",
        "proj_in": "transformer.project_in", "proj_out": "transformer.project_out",
        "block": "transformer.layers.{i}",
    }
  else:
    raise ValueError(layout)

  w_transform = Reshape(lambda s: (s[0], 1)) if layout == SAT else None
  rules = [
      rule(names["W"], _t("timestep_features", "W"), w_transform),
      rule(f"{names['time_in']}.weight", _t("timestep_mlp", "in", "kernel"), Linear()),
      rule(f"{names['time_in']}.bias", _t("timestep_mlp", "in", "bias")),
      rule(f"{names['time_out']}.weight", _t("timestep_mlp", "out", "kernel"), Linear()),
      rule(f"{names['time_out']}.bias", _t("timestep_mlp", "out", "bias")),
      rule(f"{names['global_in']}.weight", _t("global_mlp", "in", "kernel"), Linear()),
      rule(f"{names['global_out']}.weight", _t("global_mlp", "out", "kernel"), Linear()),
      rule(f"{names['cond_in']}.weight", _t("cond_mlp", "in", "kernel"), Linear()),
      rule(f"{names['cond_out']}.weight", _t("cond_mlp", "out", "kernel"), Linear()),
      rule("preprocess_conv.weight", _t("preprocess_conv", "kernel"), Conv1x1()),
      rule("postprocess_conv.weight", _t("postprocess_conv", "kernel"), Conv1x1()),
      rule(f"{names['proj_in']}.weight", _t("proj_in", "kernel"), Linear()),
      rule(f"{names['proj_out']}.weight", _t("proj_out", "kernel"), Linear()),
  ]
  if layout == SAT:  # derived by us; checking its shape catches a wrong rotary_dim
    rules.append(rule("transformer.rotary_pos_emb.inv_freq", (), Expect((cfg.rotary_dim // 2,))))

  for i in range(cfg.depth):
    b = names["block"].format(i=i)
    blk = lambda *p: _t("blocks", *p, layer=i)  # noqa: E731 (a local shorthand)
    if layout == DIFFUSERS:
      norms = {"self_norm": "norm1", "cross_norm": "norm2", "ff_norm": "norm3"}
      norm_keys = ("weight", "bias")
      rules += [
          rule(f"{b}.attn1.to_q.weight", blk("self_attn", "q", "kernel"), Linear()),
          rule(f"{b}.attn1.to_k.weight", blk("self_attn", "k", "kernel"), Linear()),
          rule(f"{b}.attn1.to_v.weight", blk("self_attn", "v", "kernel"), Linear()),
          rule(f"{b}.attn1.to_out.0.weight", blk("self_attn", "out", "kernel"), Linear()),
          rule(f"{b}.attn2.to_q.weight", blk("cross_attn", "q", "kernel"), Linear()),
          rule(f"{b}.attn2.to_k.weight", blk("cross_attn", "k", "kernel"), Linear()),
          rule(f"{b}.attn2.to_v.weight", blk("cross_attn", "v", "kernel"), Linear()),
          rule(f"{b}.attn2.to_out.0.weight", blk("cross_attn", "out", "kernel"), Linear()),
          rule(f"{b}.ff.net.0.proj.weight", blk("ff_in", "kernel"), Linear()),
          rule(f"{b}.ff.net.0.proj.bias", blk("ff_in", "bias")),
          rule(f"{b}.ff.net.2.weight", blk("ff_out", "kernel"), Linear()),
          rule(f"{b}.ff.net.2.bias", blk("ff_out", "bias")),
      ]
    else:
      norms = {"self_norm": "pre_norm", "cross_norm": "cross_attend_norm", "ff_norm": "ff_norm"}
      norm_keys = ("gamma", "beta")
      rules += [
          rule(f"{b}.self_attn.to_qkv.weight",
               (blk("self_attn", "q", "kernel"), blk("self_attn", "k", "kernel"), blk("self_attn", "v", "kernel")),
               Fused(3)),
          rule(f"{b}.self_attn.to_out.weight", blk("self_attn", "out", "kernel"), Linear()),
          rule(f"{b}.cross_attn.to_q.weight", blk("cross_attn", "q", "kernel"), Linear()),
          rule(f"{b}.cross_attn.to_kv.weight", (blk("cross_attn", "k", "kernel"), blk("cross_attn", "v", "kernel")),
               Fused(2)),
          rule(f"{b}.cross_attn.to_out.weight", blk("cross_attn", "out", "kernel"), Linear()),
          rule(f"{b}.ff.ff.0.proj.weight", blk("ff_in", "kernel"), Linear()),
          rule(f"{b}.ff.ff.0.proj.bias", blk("ff_in", "bias")),
          rule(f"{b}.ff.ff.2.weight", blk("ff_out", "kernel"), Linear()),
          rule(f"{b}.ff.ff.2.bias", blk("ff_out", "bias")),
      ]
    for ours, theirs in norms.items():
      rules += [rule(f"{b}.{theirs}.{norm_keys[0]}", blk(ours, "scale")),
                rule(f"{b}.{theirs}.{norm_keys[1]}", blk(ours, "bias"))]
    if cfg.qk_norm != "none":
      if layout != SAT:
        raise ValueError(f"qk_norm {cfg.qk_norm!r} exists only in the stable-audio-tools layout")
      for attention in ("self_attn", "cross_attn"):
        for norm in ("q_norm", "k_norm"):
          rules += [rule(f"{b}.{attention}.{norm}.{theirs}", blk(attention, norm, ours))
                    for ours, theirs in _QK_NORM_PARAMS[cfg.qk_norm]]
  return rules


# our parameter names -> stable-audio-tools' for each q/k norm (torch LayerNorm, its RMSNorm, DynamicTanh)
_QK_NORM_PARAMS = {"ln": (("scale", "weight"), ("bias", "bias")), "rms": (("scale", "gamma"),), "l2": (),
                   "dyt": (("alpha", "alpha"), ("scale", "gamma"), ("bias", "beta"))}


# ----------------------------------------------------------------------------- Oobleck VAE


def _wn_conv(torch_name: str, target: tuple[str, ...], bias: bool = True, transposed: bool = False) -> list[Rule]:
  inner = ConvTranspose() if transposed else Conv()
  rules = [rule((f"{torch_name}.weight_g", f"{torch_name}.weight_v"), _t(*target, "kernel"), WeightNorm(inner))]
  if bias:
    rules.append(rule(f"{torch_name}.bias", _t(*target, "bias")))
  return rules


def _snake(torch_name: str, target: tuple[str, ...], layout: str) -> list[Rule]:
  shape = (lambda s: (1, s[0], 1)) if layout == DIFFUSERS else None
  transform = Reshape(shape) if shape else None
  return [rule(f"{torch_name}.alpha", _t(*target, "alpha"), transform),
          rule(f"{torch_name}.beta", _t(*target, "beta"), transform)]


def _residual_unit(torch_name: str, target: tuple[str, ...], layout: str) -> list[Rule]:
  if layout == DIFFUSERS:
    parts = {"snake1": "snake1", "conv1": "conv1", "snake2": "snake2", "conv2": "conv2"}
  else:
    parts = {"snake1": "layers.0", "conv1": "layers.1", "snake2": "layers.2", "conv2": "layers.3"}
  return (_snake(f"{torch_name}.{parts['snake1']}", target + ("snake1",), layout)
          + _wn_conv(f"{torch_name}.{parts['conv1']}", target + ("conv1",))
          + _snake(f"{torch_name}.{parts['snake2']}", target + ("snake2",), layout)
          + _wn_conv(f"{torch_name}.{parts['conv2']}", target + ("conv2",)))


def vae_rules(cfg: OobleckConfig, layout: str) -> list[Rule]:
  n = len(cfg.strides)
  rules: list[Rule] = []
  for side in ("encoder", "decoder"):
    if layout == DIFFUSERS:
      top = {"conv1": f"{side}.conv1", "snake1": f"{side}.snake1", "conv2": f"{side}.conv2"}
      block_name = lambda i: f"{side}.block.{i}"  # noqa: E731
    else:
      top = {"conv1": f"{side}.layers.0", "snake1": f"{side}.layers.{n + 1}", "conv2": f"{side}.layers.{n + 2}"}
      block_name = lambda i: f"{side}.layers.{i + 1}"  # noqa: E731
    rules += _wn_conv(top["conv1"], (side, "conv1"))
    for i in range(n):
      b, target = block_name(i), (side, f"block_{i}")
      if side == "encoder":
        units = [f"{b}.res_unit{j + 1}" if layout == DIFFUSERS else f"{b}.layers.{j}" for j in range(3)]
        snake = f"{b}.snake1" if layout == DIFFUSERS else f"{b}.layers.3"
        conv = f"{b}.conv1" if layout == DIFFUSERS else f"{b}.layers.4"
        for j, unit in enumerate(units):
          rules += _residual_unit(unit, target + (f"res_unit{j + 1}",), layout)
        rules += _snake(snake, target + ("snake1",), layout) + _wn_conv(conv, target + ("conv1",))
      else:
        snake = f"{b}.snake1" if layout == DIFFUSERS else f"{b}.layers.0"
        conv_t = f"{b}.conv_t1" if layout == DIFFUSERS else f"{b}.layers.1"
        units = [f"{b}.res_unit{j + 1}" if layout == DIFFUSERS else f"{b}.layers.{j + 2}" for j in range(3)]
        rules += _snake(snake, target + ("snake1",), layout)
        rules += _wn_conv(conv_t, target + ("conv_t1",), transposed=True)
        for j, unit in enumerate(units):
          rules += _residual_unit(unit, target + (f"res_unit{j + 1}",), layout)
    rules += _snake(top["snake1"], (side, "snake1"), layout)
    rules += _wn_conv(top["conv2"], (side, "conv2"), bias=(side == "encoder"))
  return rules


# ----------------------------------------------------------------------------- T5


def t5_rules(cfg: T5Config) -> list[Rule]:
  rules = [
      rule([("shared.weight", "encoder.embed_tokens.weight")], _t("embedding")),
      rule("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", _t("relative_attention_bias")),
      rule("encoder.final_layer_norm.weight", _t("final_norm", "scale")),
  ]
  ff = ("wi_0", "wi_1", "wo") if cfg.is_gated else ("wi", "wo")
  for i in range(cfg.num_layers):
    b = f"encoder.block.{i}.layer"
    lyr = lambda *p: _t("layers", *p, layer=i)  # noqa: E731
    rules.append(rule(f"{b}.0.layer_norm.weight", lyr("attn_norm", "scale")))
    rules += [rule(f"{b}.0.SelfAttention.{p}.weight", lyr(p, "kernel"), Linear()) for p in ("q", "k", "v", "o")]
    rules.append(rule(f"{b}.1.layer_norm.weight", lyr("ff_norm", "scale")))
    rules += [rule(f"{b}.1.DenseReluDense.{p}.weight", lyr(p, "kernel"), Linear()) for p in ff]
  return rules


def t5_ignored(name: str) -> bool:
  """Parts of a full T5 (encoder-decoder) checkpoint that the encoder does not use."""
  return name.startswith(("decoder.", "lm_head."))


# ----------------------------------------------------------------------------- conditioners


def conditioner_rules(cfg: ConditionerConfig, layout: str) -> list[Rule]:
  if layout == DIFFUSERS:
    text = "text_projection"
    numbers = {"seconds_start": "start_number_conditioner.time_positional_embedding",
               "seconds_total": "end_number_conditioner.time_positional_embedding"}
  else:
    text = "prompt.proj_out"
    numbers = {"seconds_start": "seconds_start.embedder.embedding",
               "seconds_total": "seconds_total.embedder.embedding"}
  rules = []
  if cfg.has_text_projection:
    rules += [rule(f"{text}.weight", _t("text_projection", "kernel"), Linear()),
              rule(f"{text}.bias", _t("text_projection", "bias"))]
  for ours in cfg.numbers:
    theirs = numbers[ours]
    rules += [rule(f"{theirs}.0.weights", _t(ours, "weights")),
              rule(f"{theirs}.1.weight", _t(ours, "proj", "kernel"), Linear()),
              rule(f"{theirs}.1.bias", _t(ours, "proj", "bias"))]
  return rules
