"""PyTorch reference models for parity tests (diffusers / transformers, CPU torch, test-only).

Builds tiny randomly initialised references, saves them in the real on-disk layouts
(diffusers `save_pretrained`, a stable-audio-tools single file with fused to_qkv / to_kv
constructed from the same weights, a Hugging Face T5 folder) for our converter to read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel,
                       StableAudioPipeline, StableAudioProjectionModel)
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from safetensors.torch import save_file
from transformers import T5Config as HFT5Config
from transformers import T5EncoderModel

from musickv_jax.bench.torch_reference import KVBlendProcessor  # noqa: F401  (used by the parity tests)
from musickv_jax.convert.export import build_tiny_tokenizer

# Tiny configs that work together (docs/architecture.md, Testing).
DIT_TINY = dict(sample_size=16, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
                num_key_value_attention_heads=2, out_channels=4, cross_attention_dim=16, time_proj_dim=16,
                global_states_input_dim=32, cross_attention_input_dim=16)
# head_dim 64 gives rotary dim 32 exactly like SAO; representable in stable-audio-tools too.
DIT_TINY_HD64 = dict(sample_size=16, in_channels=4, num_layers=2, attention_head_dim=64, num_attention_heads=2,
                     num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=64, time_proj_dim=16,
                     global_states_input_dim=128, cross_attention_input_dim=64)
VAE_TINY = dict(encoder_hidden_size=8, downsampling_ratios=[2, 2], channel_multiples=[1, 2], decoder_channels=8,
                decoder_input_channels=4, audio_channels=2, sampling_rate=16)
T5_TINY = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
               feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
TEXT_MAX_LENGTH = 12


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Every parameter and float buffer random (norm weights near 1, weight-norm g positive), so
  no part of the model is tested only at its zero or identity initialisation."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
      if not tensor.is_floating_point():
        continue
      noise = torch.randn(tensor.shape, generator=gen)
      leaf = name.rsplit(".", 1)[-1]
      if leaf == "weight_g":
        tensor.copy_(0.2 + 0.3 * noise.abs())
      elif "norm" in name and leaf in ("weight", "gamma"):
        tensor.copy_(1.0 + 0.1 * noise)
      elif leaf in ("alpha", "beta"):  # Snake, log-scale
        tensor.copy_(0.3 * noise)
      elif leaf in ("W", "weight") and "time_proj" in name:
        tensor.copy_(noise)
      elif tensor.ndim >= 2:
        fan_in = int(np.prod(tensor.shape[1:]))
        tensor.copy_(noise * fan_in ** -0.5)
      else:
        tensor.copy_(0.1 * noise)
  return module.eval()


@dataclasses.dataclass
class TinyReference:
  """One set of tiny torch models plus the folders they were saved to."""

  dit: StableAudioDiTModel
  vae: AutoencoderOobleck
  t5: T5EncoderModel
  projection: StableAudioProjectionModel
  tokenizer: object
  pipeline: StableAudioPipeline
  diffusers_dir: Path


def build_reference(root: Path, *, dit_kwargs=None, t5_ff="relu", seed: int = 0,
                    seconds_range: tuple[float, float] = (0, 32)) -> TinyReference:
  dit_kwargs = dit_kwargs or DIT_TINY
  torch.manual_seed(seed)
  dit = randomize_(StableAudioDiTModel(**dit_kwargs), seed + 1)
  vae = randomize_(AutoencoderOobleck(**VAE_TINY), seed + 2)
  t5 = randomize_(T5EncoderModel(HFT5Config(**{**T5_TINY, "feed_forward_proj": t5_ff})), seed + 3)
  projection = randomize_(StableAudioProjectionModel(
      text_encoder_dim=T5_TINY["d_model"], conditioning_dim=dit_kwargs["cross_attention_input_dim"],
      min_value=seconds_range[0], max_value=seconds_range[1]), seed + 4)
  tokenizer = build_tiny_tokenizer(TEXT_MAX_LENGTH)
  scheduler = CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0, sigma_data=1.0,
                                                sigma_schedule="exponential", prediction_type="v_prediction")
  pipeline = StableAudioPipeline(vae=vae, text_encoder=t5, projection_model=projection, tokenizer=tokenizer,
                                 transformer=dit, scheduler=scheduler)
  out = root / "diffusers"
  pipeline.save_pretrained(out)
  return TinyReference(dit, vae, t5, projection, tokenizer, pipeline, out)


def rotary_embedding(head_dim: int, length: int):
  return get_1d_rotary_pos_embed(head_dim // 2, length, use_real=True, repeat_interleave_real=False)


# ----------------------------------------------------------------------------- stable-audio-tools file


def _sat_dit_names(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
  """diffusers DiT names -> stable-audio-tools names, fusing q|k|v and k|v as SAT stores them."""
  out = {}
  rename = {"time_proj.weight": "timestep_features.weight", "proj_in.weight": "transformer.project_in.weight",
            "proj_out.weight": "transformer.project_out.weight",
            "preprocess_conv.weight": "preprocess_conv.weight", "postprocess_conv.weight": "postprocess_conv.weight"}
  for old, new in rename.items():
    out[new] = state[old]
  out["timestep_features.weight"] = state["time_proj.weight"][:, None]  # SAT keeps (F/2, 1)
  for old, new in (("timestep_proj", "to_timestep_embed"), ("global_proj", "to_global_embed"),
                   ("cross_attention_proj", "to_cond_embed")):
    for key, value in state.items():
      if key.startswith(old + "."):
        out[new + key[len(old):]] = value
  for i in range(depth):
    d, s = f"transformer_blocks.{i}", f"transformer.layers.{i}"
    out[f"{s}.self_attn.to_qkv.weight"] = torch.cat(
        [state[f"{d}.attn1.to_{p}.weight"] for p in "qkv"], dim=0)
    out[f"{s}.self_attn.to_out.weight"] = state[f"{d}.attn1.to_out.0.weight"]
    out[f"{s}.cross_attn.to_q.weight"] = state[f"{d}.attn2.to_q.weight"]
    out[f"{s}.cross_attn.to_kv.weight"] = torch.cat([state[f"{d}.attn2.to_{p}.weight"] for p in "kv"], dim=0)
    out[f"{s}.cross_attn.to_out.weight"] = state[f"{d}.attn2.to_out.0.weight"]
    for dn, sn in (("norm1", "pre_norm"), ("norm2", "cross_attend_norm"), ("norm3", "ff_norm")):
      out[f"{s}.{sn}.gamma"] = state[f"{d}.{dn}.weight"]
      out[f"{s}.{sn}.beta"] = state[f"{d}.{dn}.bias"]
    out[f"{s}.ff.ff.0.proj.weight"] = state[f"{d}.ff.net.0.proj.weight"]
    out[f"{s}.ff.ff.0.proj.bias"] = state[f"{d}.ff.net.0.proj.bias"]
    out[f"{s}.ff.ff.2.weight"] = state[f"{d}.ff.net.2.weight"]
    out[f"{s}.ff.ff.2.bias"] = state[f"{d}.ff.net.2.bias"]
  return out


def _sat_vae_names(state: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
  """diffusers Oobleck names -> stable-audio-tools `layers.N` names (Snake params flattened to (C,))."""
  out = {}

  def unit(prefix_d: str, prefix_s: str):
    for dn, sn in (("snake1", "layers.0"), ("conv1", "layers.1"), ("snake2", "layers.2"), ("conv2", "layers.3")):
      for key, value in state.items():
        if key.startswith(f"{prefix_d}.{dn}."):
          out[f"{prefix_s}.{sn}.{key.rsplit('.', 1)[1]}"] = value

  for side in ("encoder", "decoder"):
    mapping = {f"{side}.conv1": f"{side}.layers.0", f"{side}.snake1": f"{side}.layers.{n_blocks + 1}",
               f"{side}.conv2": f"{side}.layers.{n_blocks + 2}"}
    for i in range(n_blocks):
      b, s = f"{side}.block.{i}", f"{side}.layers.{i + 1}"
      if side == "encoder":
        for j in range(3):
          unit(f"{b}.res_unit{j + 1}", f"{s}.layers.{j}")
        mapping[f"{b}.snake1"] = f"{s}.layers.3"
        mapping[f"{b}.conv1"] = f"{s}.layers.4"
      else:
        mapping[f"{b}.snake1"] = f"{s}.layers.0"
        mapping[f"{b}.conv_t1"] = f"{s}.layers.1"
        for j in range(3):
          unit(f"{b}.res_unit{j + 1}", f"{s}.layers.{j + 2}")
    for key, value in state.items():
      module, leaf = key.rsplit(".", 1)
      if module in mapping:
        out[f"{mapping[module]}.{leaf}"] = value
  return {k: (v.reshape(-1) if k.endswith((".alpha", ".beta")) else v) for k, v in out.items()}


def write_sat_checkpoint(ref: TinyReference, root: Path, *, as_ckpt: bool = False) -> tuple[Path, Path]:
  """A stable-audio-tools style model.safetensors (or model.ckpt) + model_config.json built from
  the reference's weights, and a T5 folder in Hugging Face layout. Returns (weights file, t5 dir)."""
  dit_cfg, vae_cfg = ref.dit.config, ref.vae.config
  depth = dit_cfg.num_layers
  dit_sd = _sat_dit_names(ref.dit.state_dict(), depth)
  dit_sd["transformer.rotary_pos_emb.inv_freq"] = 1.0 / (
      10000 ** (torch.arange(0, 32, 2).float() / 32))  # max(head_dim // 2, 32) = 32
  vae_sd = _sat_vae_names(ref.vae.state_dict(), len(vae_cfg.downsampling_ratios))
  proj = ref.projection.state_dict()
  cond_sd = {}
  for d, s in (("start_number_conditioner", "seconds_start"), ("end_number_conditioner", "seconds_total")):
    for key, value in proj.items():
      if key.startswith(d + ".time_positional_embedding."):
        cond_sd[f"{s}.embedder.embedding.{key.split('time_positional_embedding.')[1]}"] = value
  if "text_projection.weight" in proj:
    cond_sd["prompt.proj_out.weight"] = proj["text_projection.weight"]
    cond_sd["prompt.proj_out.bias"] = proj["text_projection.bias"]

  state = {f"model.model.{k}": v for k, v in dit_sd.items()}
  state.update({f"pretransform.model.{k}": v for k, v in vae_sd.items()})
  state.update({f"conditioner.conditioners.{k}": v for k, v in cond_sd.items()})
  state = {k: v.detach().clone().contiguous() for k, v in state.items()}

  root.mkdir(parents=True, exist_ok=True)
  hop = int(np.prod(vae_cfg.downsampling_ratios))
  latent = vae_cfg.decoder_input_channels
  model_config = {
      "model_type": "diffusion_cond", "sample_size": dit_cfg.sample_size * hop, "sample_rate": vae_cfg.sampling_rate,
      "audio_channels": 2,
      "model": {
          "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
              "encoder": {"type": "oobleck", "requires_grad": False, "config": {
                  "in_channels": 2, "channels": vae_cfg.encoder_hidden_size,
                  "c_mults": list(vae_cfg.channel_multiples), "strides": list(vae_cfg.downsampling_ratios),
                  "latent_dim": 2 * latent, "use_snake": True}},
              "decoder": {"type": "oobleck", "config": {
                  "out_channels": 2, "channels": vae_cfg.decoder_channels,
                  "c_mults": list(vae_cfg.channel_multiples), "strides": list(vae_cfg.downsampling_ratios),
                  "latent_dim": latent, "use_snake": True, "final_tanh": False}},
              "bottleneck": {"type": "vae"}, "latent_dim": latent, "downsampling_ratio": hop, "io_channels": 2}},
          "conditioning": {"configs": [
              {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": TEXT_MAX_LENGTH}},
              {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 32}},
              {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 32}}],
              "cond_dim": dit_cfg.cross_attention_input_dim},
          "diffusion": {
              "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
              "global_cond_ids": ["seconds_start", "seconds_total"], "type": "dit",
              "config": {"io_channels": dit_cfg.in_channels,
                         "embed_dim": dit_cfg.num_attention_heads * dit_cfg.attention_head_dim,
                         "depth": depth, "num_heads": dit_cfg.num_attention_heads,
                         "cond_token_dim": dit_cfg.cross_attention_dim,
                         "global_cond_dim": dit_cfg.global_states_input_dim,
                         "timestep_features_dim": dit_cfg.time_proj_dim,
                         "project_cond_tokens": False, "transformer_type": "continuous_transformer"}},
          "io_channels": latent}}
  (root / "model_config.json").write_text(json.dumps(model_config, indent=2))
  if as_ckpt:
    weights = root / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 1}, weights)
  else:
    weights = root / "model.safetensors"
    save_file(state, str(weights))

  t5_dir = root.parent / f"{root.name}-t5"
  ref.t5.save_pretrained(t5_dir)
  ref.tokenizer.save_pretrained(t5_dir)
  return weights, t5_dir



def torch_invert(pipe: StableAudioPipeline, prompt: str, x0: np.ndarray, steps: int, seconds_total: float,
                 sigma_min: float = 0.3, sigma_max: float = 500.0) -> np.ndarray:
  """MusicKV's inversion of a clean latent x0 (B, C, T), written here from the method's
  description (its inverse DPM-Solver++(2M) scheduler) with diffusers' DiT and conditioning,
  computing its own sigmas and timesteps:
    sigmas  [0, sigma_min, ..., sigma_max] (SAO's exponential schedule, ascending, a 0 in front);
    step i  the model input is scaled with sigmas[i] and D is the denoised estimate there, but the
            DiT's timestep is atan(sigmas[i + 1]) * 2 / pi: the reference's indexing, one ahead;
    update  x <- (s_t / s_s) x - expm1(-h) (D + D1 / 2), h = log(s_s / s_t), D1 = (D - D_prev) / r,
            with step 0 an identity step (s_s taken as sigma_min), and steps 0, 1 and the last
            first order (no D1).
  Conditional only (guidance 1), seconds_start 0. Returns the latent at sigma_max (float64)."""
  with torch.no_grad():
    text = pipe.encode_prompt(prompt, "cpu", False)
    start, end = pipe.encode_duration(0.0, seconds_total, "cpu", False, 1)
    cross = torch.cat([text, start, end], dim=1)
    glob = torch.cat([start, end], dim=2)
    sigmas = np.concatenate([[0.0], np.exp(np.linspace(np.log(sigma_min), np.log(sigma_max), steps))])
    rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, x0.shape[-1] + 1, use_real=True,
                                     repeat_interleave_real=False)
    x = np.asarray(x0, np.float64)
    prev_d = prev_h = None
    for i in range(steps):
      s_in, s_next = sigmas[i], sigmas[i + 1]
      t = torch.tensor([np.arctan(s_next) * 2 / np.pi], dtype=torch.float32)
      model_input = torch.from_numpy((x / np.sqrt(s_in ** 2 + 1)).astype(np.float32))
      v = pipe.transformer(model_input, t, encoder_hidden_states=cross.expand(len(x), -1, -1),
                           global_hidden_states=glob.expand(len(x), -1, -1), rotary_embedding=rotary,
                           return_dict=False)[0].double().numpy()
      d = x / (s_in ** 2 + 1) - v * s_in / np.sqrt(s_in ** 2 + 1)
      s_s = sigmas[1] if i == 0 else s_in
      h = np.log(s_s) - np.log(s_next)
      x_new = (s_next / s_s) * x - np.expm1(-h) * d
      if 2 <= i < steps - 1:
        x_new -= 0.5 * np.expm1(-h) * (d - prev_d) / (prev_h / h)
      x, prev_d, prev_h = x_new, d, h
  return x
