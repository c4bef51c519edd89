"""Stability AI's single-file Stable Audio 3 layout, written from a tiny diffusers SA3 folder (tests/sa3_reference.py).

`write_single_file` applies the INVERSE of diffusers' conversion script (scripts/convert_stable_audio_3_to_diffusers.py
in diffusers: convert_dit, convert_vae, convert_duration_embedder, extract_text_encoder) to the state dicts the
diffusers folder holds, row by row from the script's tables (never from musickv_jax's reader), and writes:

  model.safetensors     model.model.* (DiT), pretransform.model.* (SAME), conditioner.conditioners.* (the learned
                        prompt padding and the duration embedder's Linear)
  model_config.json     the tiny model's options in Stability's format: the keys stable_audio_3/factory.py passes to
                        DiTWrapper / SAMEEncoder / SAMEDecoder / SoftNormBottleneck / PatchedPretransform /
                        T5GemmaConditioner / NumberConditioner, and the ones the script reads
                        (model.pretransform.config.encoder.config.{strides, transformer_depths, c_mults, channels,
                        latent_dim, dim_heads, sliding_window, sinusoidal_blocks}, decoder's sinusoidal_blocks,
                        io_channels, downsampling_ratio, model.diffusion.diffusion_objective)
  t5gemma-b-b-ul2/      the text encoder as T5GemmaForConditionalGeneration names it (`model.encoder.*`, plus one
                        decoder tensor the reader must ignore), its config.json and the tokenizer files

Stability-only tensors the script drops are written too, as Stability's modules hold them: every SAME transformer
layer's `rope.inv_freq` (RotaryEmbedding(head_dim // 2), a persistent buffer) and the bottleneck's empty
`noise_scaling_factor` (1, 0, 1). The duration embedder's `freqs` has no counterpart (Stability's
ExpoFourierFeatures computes it) and is not written.

Not every tiny diffusers model has a Stability counterpart: Stability's DiT rotates max(head_dim // 2, 32) channels
(diffusers head_dim // 2: the same from head_dim 64 on), its duration features are fixed at 0.5..10000 Hz, and its
SAME encoder gives every level the same number of sinusoidal layers. `build_stability_reference` builds the
reference with those three options changed (STABILITY_TINY_*) and everything else as tests/sa3_reference.py has it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
from safetensors.numpy import load_file, save_file

from tests import sa3_reference as R

STABILITY_TINY_DIT = {"embed_dim": 64, "num_heads": 1}  # head_dim 64
STABILITY_TINY_SAME = {"encoder_sinusoidal_blocks": [2]}  # one count for every encoder level
STABILITY_TINY_DURATION = {"min_freq": 0.5, "max_freq": 10000.0}  # ExpoFourierFeatures' fixed range
T5_FOLDER = "t5gemma-b-b-ul2"


def build_stability_reference(root: Path, **kwargs) -> R.SA3Reference:
  """tests/sa3_reference.build_sa3_reference with the options above changed."""
  with mock.patch.dict(R.DIT_TINY, STABILITY_TINY_DIT), mock.patch.dict(R.SAME_TINY, STABILITY_TINY_SAME), \
       mock.patch.dict(R.DURATION_TINY, STABILITY_TINY_DURATION):
    return R.build_sa3_reference(root, **kwargs)


# ----------------------------------------------------------------------------- the script's tables, inverted

# convert_dit's top_renames: reference key (under model.model.) -> diffusers key
_SCRIPT_DIT_TOP = {
    "to_timestep_embed.0.weight": "to_timestep_embed.0.weight", "to_timestep_embed.0.bias": "to_timestep_embed.0.bias",
    "to_timestep_embed.2.weight": "to_timestep_embed.2.weight", "to_timestep_embed.2.bias": "to_timestep_embed.2.bias",
    "to_cond_embed.0.weight": "to_cond_embed.0.weight", "to_cond_embed.2.weight": "to_cond_embed.2.weight",
    "to_global_embed.0.weight": "to_global_embed.0.weight", "to_global_embed.2.weight": "to_global_embed.2.weight",
    "preprocess_conv.weight": "preprocess_conv.weight", "postprocess_conv.weight": "postprocess_conv.weight",
    "transformer.project_in.weight": "proj_in.weight", "transformer.project_out.weight": "proj_out.weight",
    "transformer.memory_tokens": "memory_tokens", "transformer.rotary_pos_emb.inv_freq": "rotary_pos_emb.inv_freq",
    "transformer.global_cond_embedder.0.weight": "global_cond_embedder.0.weight",
    "transformer.global_cond_embedder.0.bias": "global_cond_embedder.0.bias",
    "transformer.global_cond_embedder.2.weight": "global_cond_embedder.2.weight",
    "transformer.global_cond_embedder.2.bias": "global_cond_embedder.2.bias",
}
_SCRIPT_DIT_BLOCK_RENAMES = [("ff.ff.0.proj.", "ff.proj_in."), ("ff.ff.2.", "ff.proj_out.")]
_SCRIPT_TRB_BLOCK_RENAMES = [("pre_norm.", "norm_attn."), ("self_attn.to_qkv.", "attn.to_qkv."),
                             ("self_attn.to_out.", "attn.to_out."), ("self_attn.q_norm.", "attn.q_norm."),
                             ("self_attn.k_norm.", "attn.k_norm."), ("ff_norm.", "norm_ff."),
                             ("ff.ff.0.proj.", "ff.proj_in."), ("ff.ff.2.", "ff.proj_out.")]
_SCRIPT_BOTTLENECK = {"scaling_factor": "scale", "bias": "bias", "running_std": "running_std"}


def _unrename(local: str, renames) -> str:
  """The inverse of the script's _apply_renames: the first (new -> old) pair that occurs, once."""
  for old, new in renames:
    if new in local:
      return local.replace(new, old, 1)
  return local


def unreorder_differential_qkv(weight: np.ndarray) -> np.ndarray:
  """The inverse of the script's _reorder_differential_qkv: diffusers [q1|q2|k1|k2|v] -> reference [q|k|v|q2|k2]."""
  q1, q2, k1, k2, v = np.split(weight, 5, axis=0)
  return np.concatenate([q1, k1, v, q2, k2], axis=0)


def stability_dit(diffusers_sd: dict, differential: bool) -> dict:
  top = {ours: f"model.model.{ref}" for ref, ours in _SCRIPT_DIT_TOP.items()}
  out = {}
  for key, value in diffusers_sd.items():
    if key in top:
      out[top[key]] = value
    elif key == "prompt_padding_embedding":
      out["conditioner.conditioners.prompt.padding_embedding"] = value
    else:
      match = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", key)
      assert match, f"a diffusers DiT tensor the script does not map: {key}"
      if differential and match.group(2) == "self_attn.to_qkv.weight":
        value = unreorder_differential_qkv(value)
      out[f"model.model.transformer.layers.{match.group(1)}.{_unrename(match.group(2), _SCRIPT_DIT_BLOCK_RENAMES)}"] \
          = value
  return out


def _rope_inv_freq(head_dim: int) -> np.ndarray:
  """Stability's TransformerBlock RotaryEmbedding(head_dim // 2).inv_freq (base 10000), in float32 as torch has it."""
  import torch  # noqa: PLC0415 (the formula as torch computes it)

  dim = head_dim // 2
  return (1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))).numpy()


def stability_vae(diffusers_sd: dict, vae_config: dict) -> dict:
  n = len(vae_config["encoder_strides"])
  channels = [vae_config["audio_channels"] * vae_config["patch_size"]] + \
      [vae_config["encoder_channels"] * m for m in vae_config["encoder_c_mults"]]
  base = "pretransform.model."
  out = {}

  def block(ref_prefix: str, local: str, value: np.ndarray) -> None:
    if local.startswith("transformers."):
      local = _unrename(local, _SCRIPT_TRB_BLOCK_RENAMES)
      if vae_config["use_differential_attention"] and local.endswith("self_attn.to_qkv.weight"):
        value = unreorder_differential_qkv(value)
    out[ref_prefix + local] = value

  for key, value in diffusers_sd.items():
    if m := re.fullmatch(r"encoder\.blocks\.(\d+)\.(.+)", key):
      block(f"{base}encoder.layers.{m.group(1)}.", m.group(2), value)
    elif m := re.fullmatch(r"decoder\.blocks\.(\d+)\.(.+)", key):
      block(f"{base}decoder.layers.{3 + int(m.group(1))}.", m.group(2), value)
    elif key.startswith("encoder.proj."):
      out[f"{base}encoder.layers.{n + 1}.{key[len('encoder.proj.'):]}"] = value
    elif key.startswith("decoder.proj."):
      out[f"{base}decoder.layers.1.{key[len('decoder.proj.'):]}"] = value
    elif key.startswith("bottleneck."):
      ref = {v: k for k, v in _SCRIPT_BOTTLENECK.items()}[key[len("bottleneck."):]]
      out[f"{base}bottleneck.{ref}"] = value
    else:
      raise AssertionError(f"a diffusers SAME tensor the script does not map: {key}")
  # Stability-only tensors (dropped by the script)
  for level in range(n):
    head_dim = min(vae_config["dim_heads"], channels[level + 1])
    for j in range(vae_config["encoder_transformer_depths"][level]):
      out[f"{base}encoder.layers.{level}.transformers.{j}.rope.inv_freq"] = _rope_inv_freq(head_dim)
      out[f"{base}decoder.layers.{3 + n - 1 - level}.transformers.{j}.rope.inv_freq"] = _rope_inv_freq(head_dim)
  out[f"{base}bottleneck.noise_scaling_factor"] = np.ones((1, 0, 1), np.float32)
  return out


def stability_duration(diffusers_sd: dict) -> dict:
  """convert_duration_embedder inverted: linear.* <- embedding.1.*; the freqs buffer has no reference tensor."""
  return {f"conditioner.conditioners.seconds_total.embedder.embedding.1.{p}": diffusers_sd[f"linear.{p}"]
          for p in ("weight", "bias")}


# ----------------------------------------------------------------------------- model_config.json


def stability_model_config(ref: R.SA3Reference) -> dict:
  """The tiny model's model_config.json in Stability's format."""
  root = ref.diffusers_dir
  dit = json.loads((root / "transformer" / "config.json").read_text())
  vae = json.loads((root / "vae" / "config.json").read_text())
  duration = json.loads((root / "duration_embedder" / "config.json").read_text())
  scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
  hop = vae["patch_size"] * math.prod(vae["encoder_strides"])
  frames = math.ceil(duration["max_val"] * vae["sampling_rate"] / hop)  # the diffusers reader's longest latent
  patched = vae["audio_channels"] * vae["patch_size"]
  trb = {"channels": vae["encoder_channels"], "latent_dim": vae["latent_dim"], "c_mults": vae["encoder_c_mults"],
         "strides": vae["encoder_strides"], "transformer_depths": vae["encoder_transformer_depths"],
         "sliding_window": [vae["sliding_window"], vae["sliding_window"]], "dim_heads": vae["dim_heads"],
         "ff_mult": vae["ff_mult"], "differential": vae["use_differential_attention"], "variable_stride": True,
         "chunk_size": 128, "dyt": True, "mapping_bias": True, "checkpointing": False}
  (encoder_sin,) = set(vae["encoder_sinusoidal_blocks"])
  return {
      "model_type": "diffusion_cond", "sample_size": frames * hop, "sample_rate": vae["sampling_rate"],
      "audio_channels": vae["audio_channels"],
      "model": {
          "io_channels": dit["io_channels"],
          "pretransform": {"type": "autoencoder", "iterate_batch": False, "chunked": False, "config": {
              "encoder": {"type": "same", "config": {"in_channels": patched, **trb, "sinusoidal_blocks": encoder_sin}},
              "decoder": {"type": "same", "soft_clip": False, "config": {
                  "out_channels": patched, **trb, "sinusoidal_blocks": vae["decoder_sinusoidal_blocks"]}},
              "bottleneck": {"type": "soft_norm", "config": {"dim": vae["latent_dim"], "auto_scale": True}},
              "pretransform": {"type": "patched", "config": {"channels": vae["audio_channels"],
                                                             "patch_size": vae["patch_size"]}},
              "latent_dim": vae["latent_dim"], "downsampling_ratio": hop, "io_channels": vae["audio_channels"]}},
          "conditioning": {"cond_dim": dit["cond_token_dim"], "configs": [
              {"id": "prompt", "type": "t5gemma", "config": {
                  "model_name": "google/t5gemma-b-b-ul2", "max_length": ref.tokenizer.model_max_length,
                  "padding_mode": "learned", "repo_id": "stabilityai/stable-audio-3-tiny", "subfolder": T5_FOLDER}},
              {"id": "seconds_total", "type": "number", "config": {
                  "min_val": duration["min_val"], "max_val": duration["max_val"], "fourier_features_type": "expo"}}]},
          "diffusion": {
              "type": "dit", "diffusion_objective": "rf_denoiser" if scheduler["stochastic_sampling"]
              else "rectified_flow",
              "cross_attention_cond_ids": ["prompt", "seconds_total"], "global_cond_ids": ["seconds_total"],
              "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
              "sampling_distribution_shift_options": {"type": "logsnr", "rate": 0, "anchor_logsnr": -6.2,
                                                      "logsnr_end": 2.0},
              "config": {
                  "io_channels": dit["io_channels"], "patch_size": dit["patch_size"], "embed_dim": dit["embed_dim"],
                  "depth": dit["depth"], "num_heads": dit["num_heads"], "cond_token_dim": dit["cond_token_dim"],
                  "global_cond_dim": dit["global_cond_dim"], "local_add_cond_dim": dit["local_add_cond_dim"],
                  "project_cond_tokens": True, "global_cond_type": "adaLN", "timestep_features_type": "expo",
                  "timestep_features_dim": dit["timestep_features_dim"],
                  "num_memory_tokens": dit["num_memory_tokens"], "norm_type": "rms_norm",
                  "norm_kwargs": {"eps": 1e-6, "force_fp32": True},
                  "attn_kwargs": {"qk_norm": "rms", "qk_norm_eps": 1e-6,
                                  "differential": dit["use_differential_attention"]},
                  "ff_kwargs": {"mult": dit["ff_mult"], "no_bias": False}}}}}


# ----------------------------------------------------------------------------- the files


def _save(tensors: dict, path: Path) -> None:
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


def write_single_file(ref: R.SA3Reference, out: Path) -> Path:
  """Writes out/model.safetensors, out/model_config.json and out/t5gemma-b-b-ul2/; returns the weights file."""
  root = ref.diffusers_dir
  out.mkdir(parents=True, exist_ok=True)
  dit_config = json.loads((root / "transformer" / "config.json").read_text())
  vae_config = json.loads((root / "vae" / "config.json").read_text())
  state = {}
  state.update(stability_dit(load_file(str(root / "transformer" / "diffusion_pytorch_model.safetensors")),
                             dit_config["use_differential_attention"]))
  state.update(stability_vae(load_file(str(root / "vae" / "diffusion_pytorch_model.safetensors")), vae_config))
  state.update(stability_duration(load_file(str(root / "duration_embedder" / "diffusion_pytorch_model.safetensors"))))
  _save(state, out / "model.safetensors")
  (out / "model_config.json").write_text(json.dumps(stability_model_config(ref), indent=2))

  t5 = out / T5_FOLDER
  t5.mkdir(exist_ok=True)
  text = {f"model.{k}": v for k, v in load_file(str(root / "text_encoder" / "model.safetensors")).items()}
  text["model.decoder.norm.weight"] = np.zeros((R.COND_DIM,), np.float32)  # a decoder tensor, to be ignored
  _save(text, t5 / "model.safetensors")
  shutil.copy(root / "text_encoder" / "config.json", t5 / "config.json")
  for item in (root / "tokenizer").iterdir():
    shutil.copy(item, t5 / item.name)
  return out / "model.safetensors"
