"""The PyTorch side of the Stable Audio 3 benchmarks: diffusers' StableAudio3DiTModel, AutoencoderSAME,
StableAudio3DurationEmbedder, transformers' T5GemmaEncoderModel and a whole StableAudio3Pipeline,
each holding exactly our parameters (exported through the converter's name tables:
convert/sa3_dit_tables.py, same_tables.py, t5gemma_tables.py; every tensor accounted for, as
bench/torch_reference._holding checks). Imports torch, diffusers and transformers, which only the test
requirements install; the library itself never imports this module.

`params` is a ModelParams (models.sao.random_params, checkpoint.load_converted) or its tree
{"dit", "vae", "t5", "conditioner"}; `config` the ModelConfig of a Stable Audio 3 model."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from diffusers import (AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel,
                       StableAudio3Pipeline)
from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

from musickv_jax.bench.torch_reference import _holding
from musickv_jax.config import ModelConfig
from musickv_jax.config.sa3 import SAMEConfig, SA3DiTConfig, SA3DurationConfig, T5GemmaConfig
from musickv_jax.convert.rules import export_rules
from musickv_jax.convert.sa3_dit_tables import duration_rules, sa3_dit_rules
from musickv_jax.convert.same_tables import same_rules
from musickv_jax.convert.t5gemma_tables import t5gemma_rules


def _component(params, name: str) -> dict:
  tree = getattr(params, name) if hasattr(params, name) else params[name]
  return _float32(tree)


def _float32(tree):
  return {k: (_float32(v) if isinstance(v, dict) else np.asarray(v, np.float32)) for k, v in tree.items()}


def _state(rules, tree) -> dict[str, torch.Tensor]:
  # np.array: a writable, contiguous copy that torch may own (the Linear inverse is a transposed view)
  return {k: torch.from_numpy(np.array(v, np.float32)) for k, v in export_rules(rules, tree).items()}


def _check(config: ModelConfig) -> None:
  if not config.is_sa3:
    raise ValueError(f"{config.name} is not a Stable Audio 3 model (family {config.family})")


# ----------------------------------------------------------------------------- the components


def dit_kwargs(cfg: SA3DiTConfig) -> dict:
  """StableAudio3DiTModel's constructor arguments for our DiT config."""
  return dict(io_channels=cfg.io_channels, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
              num_heads=cfg.num_heads, cond_token_dim=cfg.cond_token_dim, global_cond_dim=cfg.global_cond_dim,
              local_add_cond_dim=cfg.local_add_cond_dim, timestep_features_dim=cfg.time_features_dim,
              ff_mult=cfg.ff_mult, num_memory_tokens=cfg.num_memory_tokens,
              use_differential_attention=cfg.differential)


def diffusers_dit(config: ModelConfig, params, dtype: str = "float32") -> StableAudio3DiTModel:
  """diffusers' StableAudio3DiTModel holding exactly our DiT parameters (its rotary inv_freq, a
  buffer, is the formula both sides compute)."""
  _check(config)
  model = StableAudio3DiTModel(**dit_kwargs(config.dit)).eval().requires_grad_(False)
  return _holding(model, _state(sa3_dit_rules(config.dit), _component(params, "dit")), "diffusers SA3 DiT", dtype)


def same_kwargs(cfg: SAMEConfig) -> dict:
  """AutoencoderSAME's constructor arguments: our config holds its options under its own names."""
  return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v)
          for f in dataclasses.fields(cfg) if f.name != "dtype"}


def diffusers_same(config: ModelConfig, params, dtype: str = "float32") -> AutoencoderSAME:
  """diffusers' AutoencoderSAME holding exactly our autoencoder parameters (running_std included)."""
  _check(config)
  model = AutoencoderSAME(**same_kwargs(config.vae)).eval().requires_grad_(False)
  return _holding(model, _state(same_rules(config.vae), _component(params, "vae")), "diffusers SAME", dtype)


def duration_kwargs(cfg: SA3DurationConfig) -> dict:
  return dict(output_dim=cfg.output_dim, fourier_dim=cfg.fourier_dim, min_val=cfg.min_val, max_val=cfg.max_val,
              min_freq=cfg.min_freq, max_freq=cfg.max_freq)


def duration_embedder(config: ModelConfig, params, dtype: str = "float32") -> StableAudio3DurationEmbedder:
  """diffusers' StableAudio3DurationEmbedder holding our duration embedder (its stored `freqs` table too)."""
  _check(config)
  model = StableAudio3DurationEmbedder(**duration_kwargs(config.conditioner)).eval().requires_grad_(False)
  return _holding(model, _state(duration_rules(config.conditioner), _component(params, "conditioner")),
                  "diffusers SA3 duration embedder", dtype)


def _number(value: float):
  """transformers' strict configs type some floats as int (query_pre_attn_scalar)."""
  return int(value) if float(value).is_integer() else float(value)


def t5gemma_config(cfg: T5GemmaConfig):
  """transformers' T5GemmaConfig of an encoder-only model (is_encoder_decoder False) from ours; the
  decoder half, required by the class and never built by T5GemmaEncoderModel, repeats the encoder's."""
  from transformers import T5GemmaConfig as HFT5GemmaConfig
  from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

  module = T5GemmaModuleConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
      num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
      num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
      query_pre_attn_scalar=_number(cfg.query_pre_attn_scalar), attn_logit_softcapping=cfg.attn_logit_softcapping,
      sliding_window=cfg.sliding_window, layer_types=list(cfg.layer_types), rms_norm_eps=cfg.rms_norm_eps,
      rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
      hidden_activation=cfg.hidden_activation, max_position_embeddings=max(8192, cfg.max_length),
      pad_token_id=0, eos_token_id=1, bos_token_id=2).to_dict()
  return HFT5GemmaConfig(encoder=module, decoder=module, is_encoder_decoder=False, vocab_size=cfg.vocab_size)


def t5gemma_encoder(config: ModelConfig, params, dtype: str = "float32"):
  """transformers' T5GemmaEncoderModel holding exactly our text encoder parameters."""
  from transformers import T5GemmaEncoderModel

  _check(config)
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  model = T5GemmaEncoderModel(t5gemma_config(config.t5)).eval().requires_grad_(False)
  return _holding(model, _state(t5gemma_rules(config.t5, "encoder"), _component(params, "t5")),
                  "transformers T5Gemma encoder", dtype)


def scheduler(stochastic_sampling: bool = True) -> FlowMatchEulerDiscreteScheduler:
  """The published SA3 scheduler: sigma is the DiT's timestep (num_train_timesteps 1), no shift;
  stochastic_sampling (ping-pong, 8 steps by default) for the distilled checkpoints."""
  return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0, use_dynamic_shifting=False,
                                         stochastic_sampling=stochastic_sampling)


def pipeline(config: ModelConfig, params, tokenizer, dtype: str = "float32",
             stochastic_sampling: bool = True) -> StableAudio3Pipeline:
  """diffusers' StableAudio3Pipeline whose four models hold exactly our parameters, with our tokenizer
  (a GemmaTokenizerFast; the pipeline caps prompts at min(its model_max_length, 256) tokens)."""
  pipe = StableAudio3Pipeline(vae=diffusers_same(config, params, dtype),
                              text_encoder=t5gemma_encoder(config, params, dtype), tokenizer=tokenizer,
                              duration_embedder=duration_embedder(config, params, dtype),
                              transformer=diffusers_dit(config, params, dtype),
                              scheduler=scheduler(stochastic_sampling))
  pipe.set_progress_bar_config(disable=True)
  return pipe
