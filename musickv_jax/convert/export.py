"""Writing our parameters back out in the diffusers layout (no torch needed).

Used for the demo's embedded checkpoint (random weights written exactly as a real
StableAudioPipeline folder is, then converted by the real converter) and to prove the
name tables are invertible. A small offline T5 tokenizer is built here too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
  Tokenizer,
  decoders,
  models,
  normalizers,
  pre_tokenizers,
  processors,
)
from transformers import T5TokenizerFast

from musickv_jax.config import ModelConfig
from musickv_jax.convert import tables
from musickv_jax.convert.rules import export_rules
from musickv_jax.models.sao import ModelParams

DIFFUSERS_VERSION = "0.42.1"

# A hand-made Unigram vocabulary (the trainer is not deterministic, so no training).
_TINY_WORDS = (
    "piano solo acoustic guitar country soft electric rock jazz drums bass violin cello synth ambient "
    "pop classical orchestra lofi hip hop beat calm happy sad dark bright fast slow loud quiet bpm with and "
    "the a of in music song melody chords warm clean indie excited upbeat").split()


def build_tiny_tokenizer(model_max_length: int, vocab_size: int = 128):
  """An offline T5TokenizerFast: <pad>=0, </s>=1, <unk>=2, then '▁word' pieces and characters."""

  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no PyTorch notice: only the tokenizer is used

  vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
  vocab += [(f"▁{w}", -3.0 - 0.01 * i) for i, w in enumerate(_TINY_WORDS)]
  vocab += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'"]
  if len(vocab) > vocab_size:
    raise ValueError(f"tiny tokenizer needs vocab_size >= {len(vocab)}")
  vocab += [(f"<extra_unused_{i}>", -100.0) for i in range(vocab_size - len(vocab))]
  tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
  tok.normalizer = normalizers.Lowercase()  # the toy vocabulary has no capitals
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                     special_tokens=[("</s>", 1)])
  return T5TokenizerFast(tokenizer_object=tok, extra_ids=0, pad_token="<pad>", eos_token="</s>",
                         unk_token="<unk>", model_max_length=model_max_length)


def component_configs(config: ModelConfig) -> dict[str, dict]:
  d, v, t, c = config.dit, config.vae, config.t5, config.conditioner
  if d.rotary_dim != d.head_dim // 2:
    raise ValueError("the diffusers layout fixes rotary_dim = head_dim // 2")
  if c.number_features_dim != 256:
    raise ValueError("the diffusers layout fixes number_features_dim = 256")
  return {
      "transformer": {
          "_class_name": "StableAudioDiTModel", "_diffusers_version": DIFFUSERS_VERSION,
          "sample_size": d.sample_size, "in_channels": d.io_channels, "num_layers": d.depth,
          "attention_head_dim": d.head_dim, "num_attention_heads": d.num_heads,
          "num_key_value_attention_heads": d.cross_kv_heads, "out_channels": d.io_channels,
          "cross_attention_dim": d.cond_token_dim, "time_proj_dim": d.time_features_dim,
          "global_states_input_dim": d.global_cond_dim, "cross_attention_input_dim": d.cond_input_dim},
      "vae": {
          "_class_name": "AutoencoderOobleck", "_diffusers_version": DIFFUSERS_VERSION,
          "encoder_hidden_size": v.encoder_channels, "downsampling_ratios": list(v.strides),
          "channel_multiples": list(v.channel_mults), "decoder_channels": v.decoder_channels,
          "decoder_input_channels": v.latent_dim, "audio_channels": v.audio_channels, "sampling_rate": v.sample_rate},
      "text_encoder": {
          "architectures": ["T5EncoderModel"], "model_type": "t5", "vocab_size": t.vocab_size, "d_model": t.d_model,
          "d_kv": t.d_kv, "d_ff": t.d_ff, "num_layers": t.num_layers, "num_heads": t.num_heads,
          "relative_attention_num_buckets": t.relative_attention_num_buckets,
          "relative_attention_max_distance": t.relative_attention_max_distance, "dropout_rate": 0.0,
          "layer_norm_epsilon": t.layer_norm_epsilon, "feed_forward_proj": t.feed_forward_proj,
          "is_encoder_decoder": True, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
          "torch_dtype": "float32"},
      "projection_model": {
          "_class_name": "StableAudioProjectionModel", "_diffusers_version": DIFFUSERS_VERSION,
          "text_encoder_dim": c.text_dim, "conditioning_dim": c.cond_dim,
          "min_value": int(c.seconds_min), "max_value": int(c.seconds_max)},
      "scheduler": {
          "_class_name": "CosineDPMSolverMultistepScheduler", "_diffusers_version": DIFFUSERS_VERSION,
          "sigma_min": 0.3, "sigma_max": 500.0, "sigma_data": 1.0, "sigma_schedule": "exponential",
          "num_train_timesteps": 1000, "solver_order": 2, "prediction_type": "v_prediction", "rho": 7.0,
          "solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False,
          "final_sigmas_type": "zero"},
  }


def to_torch_state_dicts(config: ModelConfig, params: ModelParams | dict,
                         layout: str = tables.DIFFUSERS) -> dict[str, dict]:
  """Our params -> one PyTorch-named state dict per component (float32 NumPy)."""
  as_f32 = lambda tree: {k: (as_f32(v) if isinstance(v, dict) else np.asarray(v, np.float32))  # noqa: E731
                         for k, v in tree.items()}
  params = as_f32(params.to_tree() if isinstance(params, ModelParams) else params)
  return {
      "dit": export_rules(tables.dit_rules(config.dit, layout), params["dit"]),
      "vae": export_rules(tables.vae_rules(config.vae, layout), params["vae"]),
      "t5": export_rules(tables.t5_rules(config.t5), params["t5"]),
      "conditioner": export_rules(tables.conditioner_rules(config.conditioner, layout), params["conditioner"]),
  }


def write_diffusers_checkpoint(directory: str | Path, config: ModelConfig, params: ModelParams | dict,
                               tokenizer) -> Path:
  """A StableAudioPipeline folder (configs, safetensors, tokenizer) holding `params`."""
  root = Path(directory)
  configs = component_configs(config)
  state = to_torch_state_dicts(config, params)
  files = {"transformer": ("dit", "diffusion_pytorch_model.safetensors"),
           "vae": ("vae", "diffusion_pytorch_model.safetensors"),
           "text_encoder": ("t5", "model.safetensors"),
           "projection_model": ("conditioner", "diffusion_pytorch_model.safetensors")}
  for folder, (component, filename) in files.items():
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "config.json").write_text(json.dumps(configs[folder], indent=2))
    tensors = {k: np.ascontiguousarray(v) for k, v in state[component].items()}
    save_file(tensors, str(root / folder / filename), metadata={"format": "pt"})
  (root / "scheduler").mkdir(parents=True, exist_ok=True)
  (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=2))
  tokenizer.save_pretrained(str(root / "tokenizer"))
  index = {
      "_class_name": "StableAudioPipeline", "_diffusers_version": DIFFUSERS_VERSION,
      "projection_model": ["stable_audio", "StableAudioProjectionModel"],
      "scheduler": ["diffusers", "CosineDPMSolverMultistepScheduler"],
      "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
      "transformer": ["diffusers", "StableAudioDiTModel"], "vae": ["diffusers", "AutoencoderOobleck"]}
  (root / "model_index.json").write_text(json.dumps(index, indent=2))
  return root
