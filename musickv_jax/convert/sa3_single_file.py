"""Reading Stable Audio 3 as Stability AI publishes it in one file (its stable-audio-tools-style layout):

  model.safetensors     the DiT (`model.model.*`), SAME (`pretransform.model.*`) and the conditioners
                        (`conditioner.conditioners.*`) in one state dict
  model_config.json     Stability's model options (stable_audio_3/factory.py reads them)
  t5gemma-b-b-ul2/      the T5Gemma text encoder (Hugging Face names `model.encoder.*`, a
                        T5GemmaForConditionalGeneration) and its Gemma tokenizer; the frozen encoder is not saved
                        in model.safetensors (T5GemmaConditioner keeps it outside its state dict)

The state dicts are RENAMED to diffusers' names, so the diffusers name tables (convert/sa3_dit_tables.py,
same_tables.py, t5gemma_tables.py) apply unchanged. The mapping is diffusers' own conversion script
(scripts/convert_stable_audio_3_to_diffusers.py: convert_dit, convert_vae, convert_duration_embedder,
extract_text_encoder), row by row:

  DiT (`model.model.` stripped)
    to_timestep_embed.{0,2}.{weight,bias}, to_cond_embed.{0,2}.weight, to_global_embed.{0,2}.weight,
    {pre,post}process_conv.weight                                  same names
    transformer.project_in / project_out.weight                    proj_in / proj_out.weight
    transformer.memory_tokens, transformer.rotary_pos_emb.inv_freq  memory_tokens, rotary_pos_emb.inv_freq
    transformer.global_cond_embedder.{0,2}.{weight,bias}            global_cond_embedder.*
    transformer.layers.{i}.X                                        transformer_blocks.{i}.X, with
        ff.ff.0.proj.* -> ff.proj_in.*, ff.ff.2.* -> ff.proj_out.*, and self_attn.to_qkv.weight's rows
        reordered [q|k|v|q2|k2] -> [q|q2|k|k2|v] when the attention is differential (3-way q|k|v: unchanged);
        pre_norm, cross_attend_norm, ff_norm, the cross-attention, to_scale_shift_gate, to_local_embed: unchanged
    conditioner.conditioners.prompt.padding_embedding               prompt_padding_embedding
  SAME (`pretransform.model.` stripped; n = the number of levels, len(strides))
    encoder.layers.{i}.* (i < n)  -> encoder.blocks.{i}.*      encoder.layers.{n+1}.* -> encoder.proj.*
    decoder.layers.1.*            -> decoder.proj.*            decoder.layers.{3+j}.* -> decoder.blocks.{j}.*
    in a block: mapping.{weight_g,weight_v,bias} and new_tokens unchanged (both sides keep torch's weight
        norm: the name table folds w = g v / |v|); transformers.{j}.pre_norm / ff_norm -> norm_attn / norm_ff,
        self_attn.* -> attn.* (to_qkv reordered as the DiT's), ff.ff.0.proj / ff.ff.2 -> ff.proj_in / proj_out;
        rope.inv_freq dropped (diffusers' SAME computes it; its shape is checked here)
    bottleneck.{scaling_factor,bias,running_std} -> bottleneck.{scale,bias,running_std};
        noise_scaling_factor (empty without noise augmentation) dropped
  Duration: conditioner.conditioners.seconds_total.embedder.embedding.1.{weight,bias} -> linear.*; the
    `freqs` buffer is computed (the script recomputes it; Stability's ExpoFourierFeatures has no buffer)
  Text: conditioner.conditioners.prompt.model.* (only when the encoder was trained, enable_grad) is laid over
    the T5Gemma folder's weights, as the script loads it over google/t5gemma-b-b-ul2 (names `encoder.*`).

Every tensor the mapping does not name keeps its own name and is reported by name as not part of the model.

The config. The script infers the DiT and duration embedder options from tensor shapes and reads only the
autoencoder's options and the objective from model_config.json, assuming the rest. This reader reads every
option of the file (as stable_audio_3/factory.py passes it to Stability's modules) and refuses, in one line
naming it, an option it does not know and one whose value diffusers' modules (and ours) do not implement.
Where the script assumes a value and the file can say otherwise, Stability's code decides what the option
means: the sampling rate (the script: 44100), SAME's ff_mult (the script: 3) and differential attention (the
script: always), the duration range min_val / max_val (the script: 0 and 384; refused when the file lacks
them, since Stability's defaults, 0 and 1, and the script's then disagree), the prompt length max_length
(Stability's T5GemmaConditioner pads to it; default 128). The longest latent (our dit.sample_size) is the
config's own sample_size (samples) // the autoencoder's downsampling_ratio, as Stability's generate does.

What cannot be made to agree and is refused: a DiT head dim below 64 (Stability rotates max(head_dim // 2, 32)
channels, diffusers head_dim // 2), different epsilons for the residual and q/k RMSNorms (one epsilon here
and in diffusers), duration Fourier features other than 0.5..10000 Hz (fixed in Stability's code; recomputed
here with models.sa3_conditioning.expo_frequencies, which can differ from the table diffusers' script writes,
computed by torch's vectorised CPU code, by an ulp at a few of the 128 entries of the real dimension 256).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from musickv_jax.config import DiffusionConfig, DistributionShift, ModelConfig, SAMEConfig
from musickv_jax.convert.layout import SourceCheckpoint, text_encoder_folders
from musickv_jax.convert.sa3_dit_tables import duration_config, duration_rules, sa3_dit_config, sa3_dit_rules
from musickv_jax.convert.same_tables import same_rules
from musickv_jax.convert.t5gemma_tables import t5gemma_config_from_hf, t5gemma_ignored, t5gemma_prefix, t5gemma_rules
from musickv_jax.convert.tensors import ConversionError, read_sharded, read_weights
from musickv_jax.errors import ConfigError

SINGLE_FILE_LAYOUT = "sa3-single-file"
T5_SUBFOLDER = "t5gemma-b-b-ul2"  # the text encoder's folder in Stability's SA3 repositories
T5GEMMA_MODEL = "google/t5gemma-b-b-ul2"  # the only model_name Stability's T5GemmaConditioner accepts
DURATION_MIN_FREQ, DURATION_MAX_FREQ = 0.5, 10000.0  # ExpoFourierFeatures' defaults, fixed in Stability's code
DIT_MIN_HEAD_DIM = 64  # below it Stability's rotary width max(head_dim // 2, 32) is not diffusers' head_dim // 2
PROMPT, DURATION = "prompt", "seconds_total"
INPAINT_IDS = ["inpaint_mask", "inpaint_masked_input"]  # StableAudioModel.generate's local conditioning, in order

DIT, VAE, COND = "model.model.", "pretransform.model.", "conditioner.conditioners."


# ----------------------------------------------------------------------------- detection


def _get(tree: Any, *keys: str) -> Any:
  for key in keys:
    if not isinstance(tree, Mapping):
      return None
    tree = tree.get(key)
  return tree


def is_sa3_single_file(config: dict) -> bool:
  """Whether a model_config.json describes Stable Audio 3 (a T5Gemma prompt conditioner, or a SAME autoencoder:
  transformer resampling blocks) rather than Stable Audio Open (a T5 conditioner and an Oobleck autoencoder)."""
  configs = _get(config, "model", "conditioning", "configs")
  if isinstance(configs, list) and any(_get(c, "type") == "t5gemma" for c in configs):
    return True
  return isinstance(_get(config, "model", "pretransform", "config", "encoder", "config", "transformer_depths"), list)


# ----------------------------------------------------------------------------- options


class _Options:
  """One object of model_config.json: every key must be read, ignored (no effect on the model's function), or
  fixed to the values diffusers implements; anything else is refused in one line naming it."""

  def __init__(self, where: str, path: str, value: Any, *, read=(), ignored=(), fixed: Mapping | None = None):
    if not isinstance(value, Mapping):
      raise ConversionError(f"{where}: {path} should be an object, found {value!r}")
    self.where, self.path, self.value = where, path, value
    fixed = dict(fixed or {})
    for key, given in value.items():
      if key in read or key in ignored:
        continue
      if key not in fixed:
        raise ConversionError(f"{where}: {self.name(key)} is an option this reader does not know (not one of "
                              "Stability's Stable Audio 3 options that diffusers' modules implement)")
      allowed = fixed[key]
      if not any(_same(given, a) for a in allowed):
        choices = " or ".join(repr(a) for a in allowed)
        raise ConversionError(f"{where}: {self.name(key)} = {given!r} is not supported (only {choices}, what "
                              "diffusers' Stable Audio 3 modules implement)")

  def name(self, key: str) -> str:
    return f"{self.path}.{key}" if self.path else key

  def has(self, key: str) -> bool:
    return key in self.value

  def require(self, key: str, value: Any, why: str) -> None:
    """A key whose default in Stability's code is not what diffusers implements: it must be given, equal to value."""
    if key not in self.value or not _same(self.value[key], value):
      found = f"= {self.value[key]!r}" if key in self.value else "is missing"
      raise ConversionError(f"{self.where}: {self.name(key)} {found}; only {value!r} is supported ({why})")

  def int(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
    value = self.value.get(key, default)
    if value is None:
      raise ConversionError(f"{self.where}: {self.name(key)} is missing")
    return _as_int(self.where, self.name(key), value, minimum)

  def number(self, key: str, default: float | None = None) -> float:
    value = self.value.get(key, default)
    if value is None:
      raise ConversionError(f"{self.where}: {self.name(key)} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise ConversionError(f"{self.where}: {self.name(key)} should be a number, found {value!r}")
    return float(value)

  def bool(self, key: str, default: bool) -> bool:
    value = self.value.get(key, default)
    if not isinstance(value, bool):
      raise ConversionError(f"{self.where}: {self.name(key)} should be true or false, found {value!r}")
    return value

  def ints(self, key: str, default: list | None = None) -> tuple[int, ...]:
    values = self.value.get(key, default)
    if not isinstance(values, list) or not values:
      raise ConversionError(f"{self.where}: {self.name(key)} should be a non-empty list of integers, found "
                            f"{values!r}")
    return tuple(_as_int(self.where, f"{self.name(key)}[{i}]", v) for i, v in enumerate(values))

  def sub(self, key: str, *, default: Any = None, **kwargs) -> "_Options":
    value = self.value.get(key, default)
    if value is None:
      raise ConversionError(f"{self.where}: {self.name(key)} is missing")
    return _Options(self.where, self.name(key), value, **kwargs)


def _as_int(where: str, name: str, value: Any, minimum: int | None = None) -> int:
  """Configs written by some tools store integers as floats (1024.0): accepted; 10.5 and true are not."""
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if not isinstance(value, int) or isinstance(value, bool):
    raise ConversionError(f"{where}: {name} should be an integer, found {value!r}")
  if minimum is not None and value < minimum:
    raise ConversionError(f"{where}: {name} = {value} should be at least {minimum}")
  return value


def _same(a: Any, b: Any) -> bool:
  """JSON values equal, true and false never equal to numbers."""
  if isinstance(a, bool) or isinstance(b, bool):
    return a is b
  return a == b


def _canonical(value: Any) -> str:
  def plain(v):
    if isinstance(v, float) and v.is_integer():
      return int(v)
    return [plain(x) for x in v] if isinstance(v, list) else v
  return json.dumps(plain(value))


def _equal(where: str, what: str, values: Mapping[str, Any]) -> Any:
  """All the named values agree (diffusers has one option for them); the common value."""
  distinct = {_canonical(v) for v in values.values()}
  if len(distinct) > 1:
    listed = ", ".join(f"{k} = {v!r}" for k, v in values.items())
    raise ConversionError(f"{where}: {listed} differ; diffusers' Stable Audio 3 has one {what} for them")
  return next(iter(values.values()))


# ----------------------------------------------------------------------------- the DiT's options

_DIT_READ = ("io_channels", "patch_size", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim",
             "local_add_cond_dim", "timestep_features_dim", "num_memory_tokens", "attn_kwargs", "ff_kwargs",
             "norm_kwargs", "global_cond_type", "timestep_features_type", "norm_type")
_DIT_IGNORED = ("timestep_embed_dim",  # unused with timestep_cond_type "global" (the embed width is embed_dim)
                "zero_init_branch_outputs",  # initialisation only
                "abs_pos_emb_max_length")  # unused without use_abs_pos_emb
_DIT_FIXED = {"project_cond_tokens": (True,), "project_global_cond": (True,), "input_concat_dim": (0,),
              "prepend_cond_dim": (0,), "transformer_type": ("continuous_transformer",),
              "timestep_cond_type": ("global",), "timestep_features_logsnr": (False,), "final_cross_attn_ix": (-1,),
              "causal": (False,), "rotary_pos_emb": (True,), "cross_attn_rotary_pos_emb": (False,),
              "conformer": (False,), "use_sinusoidal_emb": (False,), "use_abs_pos_emb": (False,),
              "sliding_window": (None,), "add_rope": (False,), "layer_scale": (False,)}


def _dit_fields(where: str, dc: _Options, cond_dim: int) -> tuple[dict, float]:
  """diffusers' StableAudio3DiTModel config (its own key names) and the RMSNorm epsilon from diffusion.config."""
  dc.require("global_cond_type", "adaLN", "diffusers' DiT modulates every block by the global conditioning")
  dc.require("timestep_features_type", "expo", "diffusers' DiT has exponential Fourier timestep features")
  dc.require("norm_type", "rms_norm", "diffusers' DiT normalises with RMSNorm")
  attn = dc.sub("attn_kwargs", default={}, read=("qk_norm", "qk_norm_eps", "differential"),
                fixed={"feat_scale": (False,)})
  attn.require("qk_norm", "rms", "diffusers' DiT normalises queries and keys with RMSNorm")
  ff = dc.sub("ff_kwargs", default={}, read=("mult",), ignored=("conv_kernel_size",),
              fixed={"glu": (True,), "no_bias": (False,), "use_conv": (False,), "sinusoidal": (False,)})
  norm = dc.sub("norm_kwargs", default={}, read=("eps",),
                ignored=("force_fp32",  # the precision of half-precision runs; our norms compute in float32
                         "fix_scale"))  # gamma a buffer instead of a parameter: saved and used the same
  eps = _equal(where, "RMSNorm epsilon", {norm.name("eps"): norm.number("eps", 1e-5),  # Stability's RMSNorm default
                                          attn.name("qk_norm_eps"): attn.number("qk_norm_eps", 1e-6)})
  embed, heads = dc.int("embed_dim", 768, 1), dc.int("num_heads", 8, 1)
  if embed % heads:
    raise ConversionError(f"{where}: {dc.name('embed_dim')} {embed} is not a multiple of num_heads {heads}")
  if embed // heads < DIT_MIN_HEAD_DIM:
    raise ConversionError(f"{where}: the DiT's head dim embed_dim / num_heads = {embed // heads} is below "
                          f"{DIT_MIN_HEAD_DIM}: Stability's DiT then rotates max(head_dim / 2, 32) channels and "
                          "diffusers' head_dim / 2, so the two models differ; not supported")
  if not dc.has("local_add_cond_dim"):
    raise ConversionError(f"{where}: {dc.name('local_add_cond_dim')} is missing: a DiT without the inpainting "
                          "projection (to_local_embed) is not supported (diffusers' StableAudio3DiTModel always "
                          "has it)")
  for key in ("cond_token_dim", "global_cond_dim"):
    if dc.int(key, 0) != cond_dim:
      raise ConversionError(f"{where}: {dc.name(key)} = {dc.int(key, 0)} must be the conditioning's cond_dim "
                            f"({cond_dim}): the text, duration token and duration vector all have that width")
  fields = {"io_channels": dc.int("io_channels", 32, 1), "patch_size": dc.int("patch_size", 1, 1),
            "embed_dim": embed, "depth": dc.int("depth", 12, 1), "num_heads": heads,
            "cond_token_dim": cond_dim, "global_cond_dim": cond_dim,
            "local_add_cond_dim": dc.int("local_add_cond_dim", minimum=1),
            "timestep_features_dim": dc.int("timestep_features_dim", 256, 2),
            "ff_mult": ff.number("mult", 4.0), "num_memory_tokens": dc.int("num_memory_tokens", 0, 0),
            "use_differential_attention": attn.bool("differential", False)}
  return fields, eps


def _diffusion(where: str, model: _Options) -> tuple[_Options, DiffusionConfig]:
  diffusion = model.sub("diffusion", read=("config", "diffusion_objective", "cross_attention_cond_ids",
                                           "global_cond_ids", "local_add_cond_ids",
                                           "sampling_distribution_shift_options"),
                        ignored=("distribution_shift_options",  # training's time distribution
                                 "mask_padding_attention", "use_effective_length_for_schedule"),  # generate's own
                        fixed={"type": ("dit",), "input_concat_ids": ([],), "prepend_cond_ids": ([],),
                               "modular_local_cond_configs": ([], None)})
  objective = diffusion.value.get("diffusion_objective")
  if objective not in ("rf_denoiser", "rectified_flow"):
    found = f"= {objective!r}" if diffusion.has("diffusion_objective") else "is missing (Stability's default 'v')"
    raise ConversionError(f"{where}: {diffusion.name('diffusion_objective')} {found}; Stable Audio 3 is "
                          "'rf_denoiser' (distilled: ping-pong) or 'rectified_flow' (-base: Euler)")
  for key, expected in (("cross_attention_cond_ids", [PROMPT, DURATION]), ("global_cond_ids", [DURATION])):
    if diffusion.value.get(key) != expected:
      raise ConversionError(f"{where}: {diffusion.name(key)} = {diffusion.value.get(key)!r}; diffusers' Stable "
                            f"Audio 3 pipelines condition on {expected}")
  local = diffusion.value.get("local_add_cond_ids", [])
  if local not in ([], INPAINT_IDS):
    raise ConversionError(f"{where}: {diffusion.name('local_add_cond_ids')} = {local!r}; only {INPAINT_IDS} "
                          "(the inpainting mask, then the masked latents, as diffusers' pipeline concatenates them)")
  shift = DistributionShift(kind="sa3", anchor_logsnr=-6.2, logsnr_end=2.0)  # LogSNRShift(rate=0), the default
  if diffusion.value.get("sampling_distribution_shift_options") is not None:
    options = diffusion.sub("sampling_distribution_shift_options",
                            read=("type", "rate", "anchor_logsnr", "logsnr_end"),
                            ignored=("anchor_length",))  # unused at rate 0
    options.require("type", "logsnr", "the pipelines' schedule is a log-SNR one; Stability's default type is 'full'")
    if options.number("rate", 1.0) != 0:
      raise ConversionError(f"{where}: {options.name('rate')} = {options.value.get('rate', 1.0)!r} (Stability's "
                            "default is 1); only 0 is supported (the pipelines' schedule does not depend on the "
                            "length)")
    shift = DistributionShift(kind="sa3", anchor_logsnr=options.number("anchor_logsnr", -6.2),
                              logsnr_end=options.number("logsnr_end", 2.0))
  return diffusion, DiffusionConfig(objective=objective, shift=shift)


# ----------------------------------------------------------------------------- the autoencoder's options

_TRB_IGNORED = ("checkpointing", "freeze_backbone",  # training only
                "causal",  # swallowed by TransformerResamplingBlock's **kwargs: its blocks are never causal
                "chunk_size", "chunk_midpoint_shift")  # chunked attention, unused with a sliding window
_TRB_FIXED = {"conformer": (False,), "layer_scale": (False,), "mask_noise": (0, 0.0), "conv_mapping": (False,),
              "feat_scale": (False,), "mapping_bias": (True,), "cross_attn": (False,), "dyt": (True,)}
_TRB_READ = ("channels", "latent_dim", "c_mults", "strides", "transformer_depths", "sliding_window", "dim_heads",
             "ff_mult", "differential", "variable_stride", "sinusoidal_blocks")


def _sliding_window(where: str, side: _Options) -> int:
  value = side.value.get("sliding_window")
  if value is None:
    raise ConversionError(f"{where}: {side.name('sliding_window')} is missing: SAME's chunked attention (no "
                          "sliding window) is not supported (diffusers' AutoencoderSAME uses a sliding window)")
  if not (isinstance(value, list) and len(value) == 2 and value[0] == value[1]):
    raise ConversionError(f"{where}: {side.name('sliding_window')} = {value!r}; only [w, w] (a symmetric window, "
                          "as diffusers' AutoencoderSAME has) is supported")
  return _as_int(where, side.name("sliding_window"), value[0], minimum=0)


def _vae_fields(where: str, model: _Options, sample_rate: int) -> tuple[dict, bool]:
  """diffusers' AutoencoderSAME config (its own key names) and whether its bottleneck stores running_std."""
  block = model.sub("pretransform", read=("config",), ignored=("chunked", "iterate_batch"),  # how generate decodes
                    fixed={"type": ("autoencoder",)})
  ae = block.sub("config", read=("encoder", "decoder", "pretransform", "bottleneck", "latent_dim",
                                 "downsampling_ratio", "io_channels", "in_channels", "out_channels"))
  enc = ae.sub("encoder", read=("config",), ignored=("type",)).sub(
      "config", read=_TRB_READ + ("in_channels",), ignored=_TRB_IGNORED, fixed=_TRB_FIXED)
  dec = ae.sub("decoder", read=("config",), ignored=("type",), fixed={"soft_clip": (False,)}).sub(
      "config", read=_TRB_READ + ("out_channels",), ignored=_TRB_IGNORED, fixed=_TRB_FIXED)
  patched = ae.sub("pretransform", read=("config",), ignored=("type",)).sub(
      "config", read=("channels", "patch_size"), fixed={"oversampling": (1,), "postfilter_channels": (0,)})
  bottleneck = ae.sub("bottleneck", read=("config",), ignored=("type",)).sub(
      "config", read=("dim", "auto_scale"), ignored=("freeze",),
      fixed={"noise_augment_dim": (0,), "noise_regularize": (False,)})

  audio = ae.int("io_channels", 2, 1)
  for side, key in ((ae, "in_channels"), (ae, "out_channels"), (patched, "channels")):
    if side.has(key) and side.int(key) != audio:
      raise ConversionError(f"{where}: {side.name(key)} = {side.int(key)} is not io_channels ({audio})")
  strides = enc.ints("strides", [2, 4, 8, 8])
  patch = patched.int("patch_size", minimum=1)
  ratio = ae.int("downsampling_ratio", minimum=1)
  if ratio != patch * math.prod(strides):  # the script: patch_size = downsampling_ratio // prod(strides)
    raise ConversionError(f"{where}: {ae.name('downsampling_ratio')} = {ratio} is not patch_size x prod(strides) "
                          f"= {patch} x {math.prod(strides)}")
  for side, key in ((enc, "in_channels"), (dec, "out_channels")):
    if side.int(key, 2) != audio * patch:
      raise ConversionError(f"{where}: {side.name(key)} = {side.int(key, 2)} should be io_channels x patch_size = "
                            f"{audio * patch} (the patched audio)")
  if not dec.bool("variable_stride", False):
    raise ConversionError(f"{where}: {dec.name('variable_stride')} is not true: a decoder with one new token per "
                          "output position is not supported (diffusers' AutoencoderSAME shares one)")
  enc.bool("variable_stride", False)  # either way the encoder appends one new token per segment
  # Stability's defaults (SAMEEncoder / SAMEDecoder / TransformerResamplingBlock); diffusers has one of each
  defaults = {"channels": 128, "latent_dim": 32, "c_mults": [1, 2, 4, 8], "strides": [2, 4, 8, 8],
              "transformer_depths": [3, 3, 3, 3], "dim_heads": 128, "ff_mult": 3, "differential": True,
              "sliding_window": None}
  for key, default in defaults.items():
    _equal(where, "value", {side.name(key): side.value.get(key, default) for side in (enc, dec)})
  latent = enc.int("latent_dim", 32, 1)
  for side, key in ((ae, "latent_dim"), (bottleneck, "dim")):
    if side.has(key) and side.int(key) != latent:
      raise ConversionError(f"{where}: {side.name(key)} = {side.int(key)} is not the encoder's latent_dim ({latent})")
  levels = len(strides)
  encoder_sin = enc.value.get("sinusoidal_blocks", 0)
  if isinstance(encoder_sin, list):
    raise ConversionError(f"{where}: {enc.name('sinusoidal_blocks')} = {encoder_sin!r}; Stability's encoder passes "
                          "one number to every level (a list is not supported)")
  decoder_sin = dec.ints("sinusoidal_blocks", [0] * levels)
  if len(decoder_sin) != levels:
    raise ConversionError(f"{where}: {dec.name('sinusoidal_blocks')} has {len(decoder_sin)} entries for "
                          f"{levels} levels")
  dim_heads = enc.int("dim_heads", 128, 1)
  ff_mult = enc.number("ff_mult", 3)
  if not float(ff_mult).is_integer():
    raise ConversionError(f"{where}: {enc.name('ff_mult')} = {ff_mult} is not a whole number (diffusers' "
                          "AutoencoderSAME takes an integer)")
  fields = {"audio_channels": audio, "patch_size": patch, "encoder_channels": enc.int("channels", 128, 1),
            "encoder_c_mults": list(enc.ints("c_mults", [1, 2, 4, 8])), "encoder_strides": list(strides),
            "encoder_transformer_depths": list(enc.ints("transformer_depths", [3, 3, 3, 3])),
            "latent_dim": latent, "use_differential_attention": enc.bool("differential", True),
            "dim_heads": dim_heads, "ff_mult": int(ff_mult), "sliding_window": _sliding_window(where, enc),
            "encoder_sinusoidal_blocks": [_as_int(where, enc.name("sinusoidal_blocks"), encoder_sin, minimum=0)],
            "decoder_sinusoidal_blocks": list(decoder_sin), "sampling_rate": sample_rate}
  return fields, bottleneck.bool("auto_scale", False)


# ----------------------------------------------------------------------------- the conditioners' options


def _conditioners(where: str, model: _Options) -> tuple[int, _Options, _Options]:
  conditioning = model.sub("conditioning", read=("cond_dim", "configs"),
                           ignored=("default_keys", "pre_encoded_keys"))  # how batches name and carry their inputs
  cond_dim = conditioning.int("cond_dim", minimum=1)
  configs = conditioning.value.get("configs")
  if not isinstance(configs, list):
    raise ConversionError(f"{where}: {conditioning.name('configs')} should be a list of conditioners")
  by_id = {}
  for number, item in enumerate(configs):
    entry = _Options(where, f"{conditioning.name('configs')}[{number}]", item, read=("id", "type", "config"))
    by_id[entry.value.get("id")] = entry
  expected = {PROMPT: "t5gemma", DURATION: "number"}
  if set(by_id) != set(expected) or any(by_id[i].value.get("type") != t for i, t in expected.items()):
    found = {i: e.value.get("type") for i, e in by_id.items()}
    raise ConversionError(f"{where}: the conditioners are {found}; Stable Audio 3 has exactly {expected}")

  def options(cid: str, **kwargs) -> _Options:
    sub = by_id[cid].sub("config", default={}, **kwargs)
    if sub.has("output_dim") and sub.int("output_dim") != cond_dim:
      raise ConversionError(f"{where}: {sub.name('output_dim')} = {sub.int('output_dim')} is not cond_dim {cond_dim}")
    return sub

  prompt = options(PROMPT, read=("model_name", "max_length", "padding_mode", "enable_grad", "output_dim"),
                   ignored=("model_path", "repo_id", "subfolder"),  # where Stability's code loads T5Gemma from
                   fixed={"project_out": (False,)})
  if prompt.value.get("model_name", T5GEMMA_MODEL) != T5GEMMA_MODEL:
    raise ConversionError(f"{where}: {prompt.name('model_name')} = {prompt.value['model_name']!r}; Stability's "
                          f"T5GemmaConditioner accepts only {T5GEMMA_MODEL!r}")
  if prompt.value.get("padding_mode", "zero") not in ("learned", "zero"):
    raise ConversionError(f"{where}: {prompt.name('padding_mode')} = {prompt.value['padding_mode']!r} is not "
                          "supported (only 'learned' or 'zero': diffusers replaces padded positions by "
                          "prompt_padding_embedding)")
  duration = options(DURATION, read=("min_val", "max_val", "output_dim"),
                     fixed={"fourier_features_type": ("expo",)})
  duration.require("fourier_features_type", "expo",
                   "diffusers' duration embedder has exponential Fourier features; Stability's default is 'learned'")
  for key in ("min_val", "max_val"):
    if not duration.has(key):
      raise ConversionError(f"{where}: {duration.name(key)} is missing: Stability's default (min 0, max 1) and "
                            "diffusers' conversion script (min 0, max 384) disagree; give it")
  return cond_dim, prompt, duration


# ----------------------------------------------------------------------------- weights

_DIT_TOP = {  # convert_dit's top_renames, under model.model.
    **{f"{m}.{i}.{p}": f"{m}.{i}.{p}" for m, ps in (("to_timestep_embed", ("weight", "bias")),
                                                      ("to_cond_embed", ("weight",)), ("to_global_embed", ("weight",)))
       for i in (0, 2) for p in ps},
    "preprocess_conv.weight": "preprocess_conv.weight", "postprocess_conv.weight": "postprocess_conv.weight",
    "transformer.project_in.weight": "proj_in.weight", "transformer.project_out.weight": "proj_out.weight",
    "transformer.memory_tokens": "memory_tokens", "transformer.rotary_pos_emb.inv_freq": "rotary_pos_emb.inv_freq",
    **{f"transformer.global_cond_embedder.{i}.{p}": f"global_cond_embedder.{i}.{p}"
       for i in (0, 2) for p in ("weight", "bias")},
}
_DIT_BLOCK_RENAMES = (("ff.ff.0.proj.", "ff.proj_in."), ("ff.ff.2.", "ff.proj_out."))
_TRB_RENAMES = (("pre_norm.", "norm_attn."), ("self_attn.to_qkv.", "attn.to_qkv."),
                ("self_attn.to_out.", "attn.to_out."), ("self_attn.q_norm.", "attn.q_norm."),
                ("self_attn.k_norm.", "attn.k_norm."), ("ff_norm.", "norm_ff."), ("ff.ff.0.proj.", "ff.proj_in."),
                ("ff.ff.2.", "ff.proj_out."))
_LAYER = re.compile(r"^(\d+)\.(.+)$")


def _rename(local: str, renames) -> str:
  """The script's _apply_renames: the first rename whose old part occurs, once."""
  for old, new in renames:
    if old in local:
      return local.replace(old, new, 1)
  return local


def reorder_differential_qkv(weight: np.ndarray) -> np.ndarray:
  """Stability's fused differential to_qkv rows [q | k | v | q2 | k2] -> diffusers' [q | q2 | k | k2 | v]. A weight
  whose rows are not 5 equal parts is left as it is (the shape check names it)."""
  if weight.ndim != 2 or weight.shape[0] % 5:
    return weight
  q, k, v, q2, k2 = np.split(weight, 5, axis=0)
  return np.concatenate([q, q2, k, k2, v], axis=0)


class _Renamed:
  """One component's state dict in diffusers' names, remembering each tensor's name in the file."""

  def __init__(self):
    self.tensors: dict[str, np.ndarray] = {}
    self.origin: dict[str, str] = {}

  def put(self, name: str, value: np.ndarray, origin: str | None) -> None:
    self.tensors[name] = value
    if origin is not None and origin != name:
      self.origin[name] = origin


def _dit_weights(state: Mapping[str, np.ndarray], differential: bool, out: _Renamed) -> None:
  for key, value in state.items():
    local = key[len(DIT):]
    if local in _DIT_TOP:
      out.put(_DIT_TOP[local], value, key)
      continue
    match = _LAYER.match(local[len("transformer.layers."):]) if local.startswith("transformer.layers.") else None
    if match is None:
      out.put(key, value, None)  # not part of the mapping: reported by its own name
      continue
    name = f"transformer_blocks.{match.group(1)}.{_rename(match.group(2), _DIT_BLOCK_RENAMES)}"
    if differential and match.group(2) == "self_attn.to_qkv.weight":
      value = reorder_differential_qkv(value)
    out.put(name, value, key)


def _rope_shape(vae: SAMEConfig, level: int) -> tuple[int]:
  """Stability's per-layer RotaryEmbedding(head_dim // 2).inv_freq: arange(0, head_dim // 2, 2)."""
  return (-(-(vae.head_dim(level) // 2) // 2),)


def _vae_weights(state: Mapping[str, np.ndarray], vae: SAMEConfig, where: str, out: _Renamed) -> None:
  n = vae.n_levels
  differential = vae.use_differential_attention

  def block(key: str, local: str, ours: str, level: int, value: np.ndarray) -> bool:
    if local.startswith("mapping.") or local == "new_tokens":
      out.put(f"{ours}.{local}", value, key)
      return True
    if not local.startswith("transformers."):
      return False
    j, _, rest = local[len("transformers."):].partition(".")
    if rest == "rope.inv_freq":  # diffusers' SAME computes it (a non-persistent buffer): check its width only
      if tuple(value.shape) != _rope_shape(vae, level):
        raise ConversionError(f"{where}: tensor {key} has shape {tuple(value.shape)} but the model config needs "
                              f"{_rope_shape(vae, level)}; the weights and the model config do not fit each other")
      return True
    name = f"{ours}.{_rename(local, _TRB_RENAMES)}"
    if differential and name.endswith("attn.to_qkv.weight"):
      value = reorder_differential_qkv(value)
    out.put(name, value, key)
    return True

  bottleneck = {"bottleneck.scaling_factor": "bottleneck.scale", "bottleneck.bias": "bottleneck.bias",
                "bottleneck.running_std": "bottleneck.running_std"}
  for key, value in state.items():
    local = key[len(VAE):]
    if local in bottleneck:
      out.put(bottleneck[local], value, key)
      continue
    if local == "bottleneck.noise_scaling_factor" and value.size == 0:
      continue  # the empty noise-augmentation scale (noise_augment_dim 0)
    side, _, rest = local.partition(".layers.")
    match = _LAYER.match(rest) if side in ("encoder", "decoder") else None
    if match is not None:
      index, inner = int(match.group(1)), match.group(2)
      if side == "encoder" and index < n and block(key, inner, f"encoder.blocks.{index}", index, value):
        continue
      if side == "encoder" and index == n + 1:
        out.put(f"encoder.proj.{inner}", value, key)
        continue
      if side == "decoder" and index == 1:
        out.put(f"decoder.proj.{inner}", value, key)
        continue
      if side == "decoder" and 3 <= index < 3 + n and block(key, inner, f"decoder.blocks.{index - 3}",
                                                             n - 1 - (index - 3), value):
        continue
    out.put(key, value, None)


# ----------------------------------------------------------------------------- files


def _read_json(path: Path) -> dict:
  if not path.is_file():
    raise ConversionError(f"{path}: file not found")
  try:
    value = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise ConversionError(f"{path}: expected a JSON object")
  return value


def _find_t5(weights_file: Path, t5_dir: Path | None, subfolder: Any) -> tuple[Path, Path]:
  """(T5Gemma weights and config folder, tokenizer folder): t5_dir (a T5Gemma folder, or a diffusers Stable Audio 3
  folder's text_encoder/ and tokenizer/), else the folder the config's subfolder names (t5gemma-b-b-ul2) beside
  the weights."""
  if t5_dir is None:
    name = subfolder if isinstance(subfolder, str) and subfolder else T5_SUBFOLDER
    t5_dir = weights_file.parent / name
    if not (t5_dir / "config.json").is_file():
      raise ConversionError(f"{weights_file}: no T5Gemma text encoder beside it (looked for {t5_dir}/config.json); "
                            "pass {field} with the repository's t5gemma-b-b-ul2 folder", field="t5_dir")
  return text_encoder_folders(t5_dir, "a T5Gemma folder", "a diffusers Stable Audio 3 folder")


def _tokenizer_limit(tokenizer_dir: Path) -> int | None:
  path = tokenizer_dir / "tokenizer_config.json"
  value = _read_json(path).get("model_max_length") if path.is_file() else None
  return int(value) if isinstance(value, (int, float)) and 0 < value < 1e9 else None


# ----------------------------------------------------------------------------- the reader


def read_sa3_single_file(weights_file: Path, model_config: Path | None = None,
                         t5_dir: Path | None = None) -> SourceCheckpoint:
  """Stability's single-file Stable Audio 3 (model.safetensors + model_config.json beside it by default, the
  T5Gemma folder t5gemma-b-b-ul2/ beside it by default or `t5_dir`) -> SourceCheckpoint in diffusers' names."""
  weights_file = Path(weights_file)
  config_path = Path(model_config) if model_config else weights_file.parent / "model_config.json"
  if not config_path.is_file():
    raise ConversionError(f"{weights_file}: no model_config.json beside it; pass {{field}}", field="model_config")
  where = str(config_path)
  top = _Options(where, "", _read_json(config_path), read=("model", "sample_size", "sample_rate"),
                 ignored=("training", "svd_bases_path",  # training and LoRA settings
                          "audio_channels"),  # never read by Stability's code (the autoencoder's io_channels is)
                 fixed={"model_type": ("diffusion_cond",)})
  model = top.sub("model", read=("pretransform", "conditioning", "diffusion", "io_channels"))
  sample_rate = top.int("sample_rate", minimum=1)
  cond_dim, prompt, duration_options = _conditioners(where, model)
  diffusion, diffusion_config = _diffusion(where, model)
  dit_fields, norm_eps = _dit_fields(where, diffusion.sub(
      "config", read=_DIT_READ, ignored=_DIT_IGNORED, fixed=_DIT_FIXED), cond_dim)
  vae_fields, auto_scale = _vae_fields(where, model, sample_rate)
  if model.has("io_channels") and model.int("io_channels") != dit_fields["io_channels"]:
    raise ConversionError(f"{where}: model.io_channels = {model.int('io_channels')} is not the DiT's io_channels "
                          f"({dit_fields['io_channels']})")
  if diffusion.value.get("local_add_cond_ids") and dit_fields["local_add_cond_dim"] != 1 + dit_fields["io_channels"]:
    raise ConversionError(f"{where}: model.diffusion.config.local_add_cond_dim = {dit_fields['local_add_cond_dim']} "
                          f"is not 1 + io_channels ({1 + dit_fields['io_channels']}): the mask and the masked latents")
  hop = vae_fields["patch_size"] * math.prod(vae_fields["encoder_strides"])
  frames = top.int("sample_size", minimum=hop) // hop  # Stability's generate: samples // downsampling_ratio
  max_length = prompt.int("max_length", 128, 1)  # T5GemmaConditioner's default
  padding_mode = prompt.value.get("padding_mode", "zero")

  t5_root, tokenizer_dir = _find_t5(weights_file, t5_dir, _get(prompt.value, "subfolder"))
  limit = _tokenizer_limit(tokenizer_dir)
  if limit is not None and limit < max_length:
    raise ConversionError(f"{where}: the prompt conditioner pads to max_length {max_length} but the tokenizer in "
                          f"{tokenizer_dir} stops at model_max_length {limit}; not supported")

  state = read_weights(weights_file)
  fourier = state.get(f"{COND}{DURATION}.embedder.embedding.1.weight")
  if fourier is None or fourier.ndim != 2:
    raise ConversionError(f"{weights_file}: tensor {COND}{DURATION}.embedder.embedding.1.weight (the duration "
                          "embedder's Linear) is missing")
  try:
    vae = SAMEConfig.from_diffusers(vae_fields)
    dit = sa3_dit_config(dit_fields, sample_size=frames, norm_eps=norm_eps)
    duration = duration_config({"output_dim": cond_dim, "fourier_dim": int(fourier.shape[1]),
                                "min_val": duration_options.number("min_val"),
                                "max_val": duration_options.number("max_val"),
                                "min_freq": DURATION_MIN_FREQ, "max_freq": DURATION_MAX_FREQ})
    text = t5gemma_config_from_hf(_read_json(t5_root / "config.json"), max_length=max_length)
    config = ModelConfig(dit=dit, vae=vae, t5=text, conditioner=duration, diffusion=diffusion_config,
                         name=weights_file.parent.name or weights_file.stem, family="sa3")
  except ConfigError as e:
    raise ConversionError(f"{where}: {e}") from None

  parts = {name: _Renamed() for name in ("dit", "vae", "t5", "conditioner")}
  text_overlay: dict[str, np.ndarray] = {}
  _dit_weights({k: v for k, v in state.items() if k.startswith(DIT)}, dit.differential, parts["dit"])
  _vae_weights({k: v for k, v in state.items() if k.startswith(VAE)}, vae, where, parts["vae"])
  for key, value in state.items():
    if key.startswith((DIT, VAE)):
      continue
    local = key[len(COND):] if key.startswith(COND) else None
    if local == f"{PROMPT}.padding_embedding" and padding_mode == "learned":
      parts["dit"].put("prompt_padding_embedding", value, key)
    elif local is not None and local.startswith(f"{PROMPT}.model."):
      text_overlay[local[len(f"{PROMPT}.model."):]] = value
    elif local in (f"{DURATION}.embedder.embedding.1.weight", f"{DURATION}.embedder.embedding.1.bias"):
      parts["conditioner"].put(f"linear.{local.rsplit('.', 1)[1]}", value, key)
    else:  # not part of the mapping: reported by its own name with the component it would belong to
      component = "conditioner" if local is not None and local.startswith(DURATION) else \
          "t5" if local is not None and local.startswith(PROMPT) else "dit"
      parts[component].put(key, value, None)
  if padding_mode == "zero":  # embeddings * mask: padded positions are zero vectors (diffusers: a zero embedding)
    parts["dit"].put("prompt_padding_embedding", np.zeros((cond_dim,), np.float32), None)
  if not auto_scale:  # Stability's bottleneck then divides by nothing; diffusers' running_std buffer stays 1
    if f"{VAE}bottleneck.running_std" in state:
      raise ConversionError(f"{weights_file}: tensor {VAE}bottleneck.running_std is present but the bottleneck's "
                            "auto_scale is false (Stability's model ignores it, diffusers' conversion uses it)")
    parts["vae"].put("bottleneck.running_std", np.ones((1,), np.float32), None)
  from musickv_jax.models.sa3_conditioning import expo_frequencies  # noqa: PLC0415 (jax: only when converting)

  parts["conditioner"].put("freqs", expo_frequencies(duration.fourier_dim, duration.min_freq, duration.max_freq), None)

  text_state, text_files = read_sharded(t5_root, ("model", "pytorch_model"))
  t5_origin = ", ".join(str(f) for f in text_files)
  if text_overlay:  # the script loads the trained encoder over the base weights (names of T5GemmaEncoderModel)
    for key, value in text_state.items():
      parts["t5"].put(key[len("model."):] if key.startswith("model.") else key, value, key)
    for key, value in text_overlay.items():
      parts["t5"].put(key, value, f"{COND}{PROMPT}.model.{key}")
    t5_origin += f" with {weights_file} [{COND}{PROMPT}.model.*]"
  else:
    for key, value in text_state.items():
      parts["t5"].put(key, value, None)

  source = SourceCheckpoint(
      layout=SINGLE_FILE_LAYOUT, config=config,
      state_dicts={name: part.tensors for name, part in parts.items()},
      origins={"dit": f"{weights_file} [{DIT}*, {COND}{PROMPT}.padding_embedding, in diffusers' names]",
               "vae": f"{weights_file} [{VAE}*, in diffusers' names]", "t5": t5_origin,
               "conditioner": f"{weights_file} [{COND}{DURATION}.*, in diffusers' names]"},
      tokenizer_dir=tokenizer_dir, ignore={"t5": t5gemma_ignored},
      scheduler={"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1, "shift": 1.0,
                 "stochastic_sampling": diffusion_config.objective == "rf_denoiser"})  # what the script writes
  check_shapes(source, {name: part.origin for name, part in parts.items()})
  return source


def check_shapes(source: SourceCheckpoint, origin: Mapping[str, Mapping[str, str]]) -> None:
  """Before conversion: a tensor whose shape the config does not expect is refused in one line under its name in
  the file (the conversion itself would name it in diffusers' names). Missing and unexpected tensors are left
  to the conversion, which reports every one."""
  from musickv_jax.models.sao import abstract_params  # noqa: PLC0415 (jax and the models: only here)

  cfg = source.config
  abstract = abstract_params(cfg)
  tables = {"dit": sa3_dit_rules(cfg.dit), "vae": same_rules(cfg.vae),  # convert/pipeline.py's component_rules
            "t5": t5gemma_rules(cfg.t5, prefix=t5gemma_prefix(source.state_dicts["t5"])),
            "conditioner": duration_rules(cfg.conditioner)}
  problems = []
  for component, rules in tables.items():
    tensors = source.state_dicts[component]
    for r in rules:
      shapes = []
      for target in r.targets:
        leaf = abstract[component]
        for key in target.path:
          leaf = leaf[key]
        shapes.append(tuple(leaf.shape) if target.layer is None else tuple(leaf.shape)[1:])
      for spec, expected in zip(r.sources, r.transform.torch_shapes(shapes)):
        for name in (spec,) if isinstance(spec, str) else spec:
          if name in tensors and tuple(tensors[name].shape) != tuple(expected):
            file_name = origin[component].get(name, name)
            renamed = f" (diffusers' {name})" if file_name != name else ""
            problems.append(f"tensor {file_name}{renamed} has shape {tuple(tensors[name].shape)} but the model "
                            f"config needs {tuple(expected)}")
  if problems:
    more = f" ({len(problems)} tensors of the wrong shape in all)" if len(problems) > 1 else ""
    error = ConversionError(f"cannot convert {source.origins['dit'].split(' [')[0]}: {problems[0]}{more}; the "
                            "weights and the model config do not fit each other")
    error.details = "\n".join(problems)
    raise error
