"""The T5Gemma encoder's name table and config reader (Stable Audio 3's text encoder).

Two on-disk layouts hold the same encoder tensors under two prefixes:
  * `encoder.`        T5GemmaEncoderModel.save_pretrained: a diffusers SA3 folder's `text_encoder/`
                      (StableAudio3Pipeline declares its text_encoder a T5GemmaEncoderModel); also
                      T5GemmaModel (encoder and decoder, no LM head);
  * `model.encoder.`  T5GemmaForConditionalGeneration (the hub's google/t5gemma-b-b-ul2, and the
                      `t5gemma-b-b-ul2/` folder of Stability's own SA3 repositories).
`t5gemma_prefix` tells them apart from the names. The decoder (`decoder.*`, `model.decoder.*`) and
the LM head (`lm_head.*`, tied to the decoder's embedding and usually not saved) are ignored
(`t5gemma_ignored`); any other name the table does not know is refused by apply_rules, by name.
The rotary inv_freq is a non-persistent buffer in transformers (never saved): nothing to check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.convert.rules import Linear, Rule, Target, apply_rules, rule
from musickv_jax.errors import ConfigError
from musickv_jax.models.t5gemma import (
  ACTIVATIONS,
  T5GemmaConfig,
  T5GemmaEncoder,
  alternating_layer_types,
)

ENCODER_PREFIXES = ("encoder", "model.encoder")  # T5GemmaEncoderModel / T5GemmaModel, T5GemmaForConditionalGeneration
IGNORED_PREFIXES = ("decoder.", "model.decoder.", "lm_head.")


def _t(*path: str, layer: int | None = None) -> Target:
  return Target(tuple(path), layer)


def t5gemma_rules(cfg: T5GemmaConfig, prefix: str = "encoder") -> list[Rule]:
  """transformers' names (under `prefix`, one of ENCODER_PREFIXES) -> T5GemmaEncoder's tree."""
  rules = [
      rule(f"{prefix}.embed_tokens.weight", _t("embedding")),
      rule(f"{prefix}.norm.weight", _t("final_norm", "scale")),
  ]
  norms = {"pre_self_attn_layernorm": "pre_attn_norm", "post_self_attn_layernorm": "post_attn_norm",
           "pre_feedforward_layernorm": "pre_ff_norm", "post_feedforward_layernorm": "post_ff_norm"}
  for i in range(cfg.num_hidden_layers):
    b = f"{prefix}.layers.{i}"
    lyr = lambda *p: _t("layers", *p, layer=i)  # noqa: E731 (a local shorthand)
    rules += [rule(f"{b}.{theirs}.weight", lyr(ours, "scale")) for theirs, ours in norms.items()]
    rules += [rule(f"{b}.self_attn.{p}_proj.weight", lyr("attn", p, "kernel"), Linear()) for p in ("q", "k", "v", "o")]
    rules += [rule(f"{b}.mlp.{p}_proj.weight", lyr("mlp", p, "kernel"), Linear()) for p in ("gate", "up", "down")]
  return rules


def t5gemma_prefix(names: Iterable[str]) -> str:
  """The encoder prefix of a state dict: `model.encoder` when its names have it, else `encoder` (apply_rules then
  names whatever is missing)."""
  return "model.encoder" if any(n.startswith("model.encoder.") for n in names) else "encoder"


def t5gemma_ignored(name: str) -> bool:
  """Tensors of a full T5Gemma checkpoint that the encoder does not use: the decoder and the LM head."""
  return name.startswith(IGNORED_PREFIXES)


def t5gemma_abstract(cfg: T5GemmaConfig) -> Mapping:
  """The ShapeDtypeStruct tree of T5GemmaEncoder's parameters (nothing is initialised)."""
  ids = jnp.zeros((1, 2), jnp.int32)
  return jax.eval_shape(T5GemmaEncoder(cfg).init, jax.random.key(0), ids, ids)["params"]


def convert_t5gemma(state_dict: Mapping[str, np.ndarray], cfg: T5GemmaConfig, source: str) -> dict:
  """Our T5GemmaEncoder parameters from a transformers T5Gemma state dict (either layout), checked leaf by leaf;
  every missing, mis-shaped or unknown tensor is reported by name (ConversionError)."""
  params, _ = apply_rules(t5gemma_rules(cfg, t5gemma_prefix(state_dict)), state_dict, t5gemma_abstract(cfg),
                          component="text_encoder (T5Gemma)", source=source, ignore=t5gemma_ignored)
  return params


# ----------------------------------------------------------------------------- config.json


def _number(raw: Mapping, key: str, default=None, kind=int):
  value = raw.get(key, default)
  if value is None:
    raise ConfigError(f"T5Gemma config: {key} is missing")
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and float(value) != int(value)):
    raise ConfigError(f"T5Gemma config: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
  return kind(value)


def _rope_theta(raw: Mapping) -> float:
  """transformers 5 writes rope_parameters {rope_type, rope_theta}; 4.x wrote rope_theta and rope_scaling."""
  parameters = raw.get("rope_parameters")
  if parameters is not None:
    if not isinstance(parameters, Mapping):
      raise ConfigError(f"T5Gemma config: rope_parameters must be an object, got {parameters!r}")
    kind = parameters.get("rope_type", "default")
    if kind != "default":
      raise ConfigError(f"T5Gemma config: rope_parameters.rope_type {kind!r} is not supported (only 'default')")
    return _number(parameters, "rope_theta", raw.get("rope_theta", 10000.0), float)
  scaling = raw.get("rope_scaling")
  if scaling is not None and (not isinstance(scaling, Mapping) or
                              scaling.get("rope_type", scaling.get("type", "default")) != "default"):
    raise ConfigError(f"T5Gemma config: rope_scaling {scaling!r} is not supported (only the default rotary embedding)")
  return _number(raw, "rope_theta", 10000.0, float)


def t5gemma_config_from_hf(config_dict: Mapping, max_length: int = 256, dtype: str = "float32") -> T5GemmaConfig:
  """Our T5GemmaConfig from a transformers config.json: a T5GemmaConfig (model_type 't5gemma', the encoder's options
  nested under 'encoder'; the top level's own vocab_size is not the encoder's) or an encoder module config
  (model_type 't5_gemma_module'). Options the encoder does not use (dropout, the decoder, the LM head's
  final_logit_softcapping, max_position_embeddings) are not read. Raises ConfigError, one line naming the key, for a
  missing or unsupported option."""
  kind = config_dict.get("model_type")
  if kind == "t5gemma":
    raw = config_dict.get("encoder")
    if not isinstance(raw, Mapping):
      raise ConfigError("T5Gemma config: the encoder's options ('encoder') are missing")
  elif kind == "t5_gemma_module":
    raw = config_dict
  else:
    raise ConfigError(f"T5Gemma config: model_type {kind!r} is not a T5Gemma model ('t5gemma')")
  if raw.get("is_decoder"):
    raise ConfigError("T5Gemma config: is_decoder is true; the text encoder needs the encoder's options")
  if raw.get("attention_bias"):
    raise ConfigError("T5Gemma config: attention_bias true is not supported (the published encoders have none)")
  activation = raw.get("hidden_activation", "gelu_pytorch_tanh")
  if activation not in ACTIVATIONS:
    raise ConfigError(f"T5Gemma config: hidden_activation {activation!r} is not supported; use one of {ACTIVATIONS}")

  layers = _number(raw, "num_hidden_layers")
  heads = _number(raw, "num_attention_heads")
  hidden = _number(raw, "hidden_size")
  head_dim = _number(raw, "head_dim") if raw.get("head_dim") is not None else hidden // heads  # as transformers
  layer_types = raw.get("layer_types")
  if layer_types is not None and not isinstance(layer_types, (list, tuple)):
    raise ConfigError(f"T5Gemma config: layer_types must be a list, got {layer_types!r}")
  layer_types = alternating_layer_types(layers) if layer_types is None else tuple(layer_types)
  softcap = raw.get("attn_logit_softcapping", 50.0)
  sliding = raw.get("sliding_window", 4096)
  if sliding is None:  # allowed when no layer slides; the value is then never read
    if any(t == "sliding_attention" for t in layer_types):
      raise ConfigError("T5Gemma config: sliding_window is null but layer_types has sliding_attention layers")
    sliding = 1
  cfg = T5GemmaConfig(
      vocab_size=_number(raw, "vocab_size"), hidden_size=hidden, intermediate_size=_number(raw, "intermediate_size"),
      num_hidden_layers=layers, num_attention_heads=heads,
      num_key_value_heads=_number(raw, "num_key_value_heads", heads), head_dim=head_dim,
      query_pre_attn_scalar=_number(raw, "query_pre_attn_scalar", 256, float),
      attn_logit_softcapping=None if softcap is None else _number(raw, "attn_logit_softcapping", kind=float),
      sliding_window=_number({"sliding_window": sliding}, "sliding_window"), layer_types=layer_types,
      rms_norm_eps=_number(raw, "rms_norm_eps", 1e-6, float), rope_theta=_rope_theta(raw),
      hidden_activation=activation, max_length=int(max_length), dtype=dtype)
  cfg.validate()
  return cfg
