"""Reading Stable Audio 3 checkpoints as they are published in the diffusers layout.

  model_index.json   names StableAudio3Pipeline (or its audio-to-audio / inpaint siblings)
  transformer/       StableAudio3DiTModel: config.json + diffusion_pytorch_model*.safetensors
  vae/               AutoencoderSAME
  text_encoder/      T5GemmaEncoderModel (keys "encoder.*"; a whole T5Gemma's "model.encoder.*" too)
  duration_embedder/ StableAudio3DurationEmbedder
  tokenizer/         the Gemma tokenizer (tokenizer.json, tokenizer_config.json)
  scheduler/         FlowMatchEulerDiscreteScheduler: stochastic_sampling says distilled (ping-pong)

Every option is read from the component configs; the name tables (convert/sa3_dit_tables.py,
same_tables.py, t5gemma_tables.py) check every tensor against our parameter tree.

What the configs do not hold, and where it comes from:
  * the longest latent the model takes (our dit.sample_size): Stable Audio 3 Small (1024 wide, 20
    layers) generates up to 120 s and Medium up to ~380 s (Stability AI's README and model
    overview); other shapes (fine-tunes, test models): the duration embedder's max_val seconds;
  * the sampler's defaults: distilled checkpoints are sampled with ping-pong, 8 steps, guidance 1
    (the `rf_denoiser` objective), the -base ones with Euler and CFG (`rectified_flow`); both on the
    log-SNR schedule from -6.2 to 2.0 (the pipelines' logsnr_min / logsnr_max).
"""

from __future__ import annotations

import math
from pathlib import Path

from musickv_jax.config import (
  DiffusionConfig,
  DistributionShift,
  ModelConfig,
  SAMEConfig,
)
from musickv_jax.convert.layout import SourceCheckpoint
from musickv_jax.convert.sa3_dit_tables import duration_config, sa3_dit_config
from musickv_jax.convert.t5gemma_tables import t5gemma_config_from_hf, t5gemma_ignored
from musickv_jax.convert.tensors import ConversionError, read_sharded
from musickv_jax.errors import ConfigError

SA3_PIPELINES = ("StableAudio3Pipeline", "StableAudio3AudioToAudioPipeline", "StableAudio3InpaintPipeline")
SA3_PARTS = ("transformer", "vae", "text_encoder", "duration_embedder", "tokenizer")
SA3_LAYOUT = "sa3-diffusers"
PIPELINE_MAX_TOKENS = 256  # the SA3 pipelines' cap on prompt tokens
SMALL_SHAPE, SMALL_MAX_SECONDS = (1024, 20), 120.0  # Stable Audio 3 Small: (width, depth), longest generation
MEDIUM_SHAPE, MEDIUM_MAX_FRAMES = (1536, 24), 4096  # Stable Audio 3 Medium: its model_config's sample_size / 4096
LOGSNR_MIN, LOGSNR_MAX = -6.2, 2.0  # the pipelines' defaults: sigma = sigmoid(-logsnr)


def is_sa3_index(index: dict) -> bool:
  return index.get("_class_name") in SA3_PIPELINES


def _read_json(path: Path) -> dict:
  import json

  if not path.is_file():
    raise ConversionError(f"{path}: file not found")
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path}: not valid JSON ({e})") from None


def _tokenizer_tokens(tokenizer_dir: Path) -> int:
  """Tokens a prompt is padded to: min(the tokenizer's model_max_length, 256), the pipelines' rule."""
  path = tokenizer_dir / "tokenizer_config.json"
  value = _read_json(path).get("model_max_length") if path.is_file() else None
  if isinstance(value, (int, float)) and 0 < value < PIPELINE_MAX_TOKENS:
    return int(value)
  return PIPELINE_MAX_TOKENS


def longest_latent(dit, duration, vae) -> int:
  """The longest latent (frames) a Stable Audio 3 model takes (see the module)."""
  shape = (dit.embed_dim, dit.depth)
  if shape == SMALL_SHAPE:
    return math.ceil(SMALL_MAX_SECONDS * vae.sample_rate / vae.hop_length)
  if shape == MEDIUM_SHAPE:
    return MEDIUM_MAX_FRAMES
  return math.ceil(duration.max_val * vae.sample_rate / vae.hop_length)


def diffusion_config(scheduler: dict | None) -> DiffusionConfig:
  """Distilled (the scheduler's stochastic_sampling): rf_denoiser, ping-pong; else rectified_flow."""
  distilled = bool((scheduler or {}).get("stochastic_sampling", True))
  shift = DistributionShift(kind="sa3", anchor_logsnr=LOGSNR_MIN, logsnr_end=LOGSNR_MAX)
  return DiffusionConfig(objective="rf_denoiser" if distilled else "rectified_flow", shift=shift)


def read_sa3_diffusers(root: Path) -> SourceCheckpoint:
  """A Stable Audio 3 diffusers folder -> SourceCheckpoint (convert/sources.py)."""
  missing = [p for p in SA3_PARTS if not (root / p).is_dir()]
  if missing:
    raise ConversionError(f"{root}: a Stable Audio 3 diffusers folder is missing {', '.join(p + '/' for p in missing)} "
                          f"(it has {', '.join(p + '/' for p in SA3_PARTS)})")

  def weights(part: str, stems: tuple[str, ...]):
    tensors, found = read_sharded(root / part, stems)
    return tensors, ", ".join(str(f) for f in found)

  dit_sd, dit_origin = weights("transformer", ("diffusion_pytorch_model",))
  vae_sd, vae_origin = weights("vae", ("diffusion_pytorch_model",))
  text_sd, text_origin = weights("text_encoder", ("model", "pytorch_model"))
  duration_sd, duration_origin = weights("duration_embedder", ("diffusion_pytorch_model",))
  scheduler_path = root / "scheduler" / "scheduler_config.json"
  scheduler = _read_json(scheduler_path) if scheduler_path.is_file() else None
  try:
    vae = SAMEConfig.from_diffusers(_read_json(root / "vae" / "config.json"))
    duration = duration_config(_read_json(root / "duration_embedder" / "config.json"))
    text = t5gemma_config_from_hf(_read_json(root / "text_encoder" / "config.json"),
                                  max_length=_tokenizer_tokens(root / "tokenizer"))
    transformer = _read_json(root / "transformer" / "config.json")
    dit = sa3_dit_config(transformer)
    dit = sa3_dit_config(transformer, sample_size=longest_latent(dit, duration, vae))
    config = ModelConfig(dit=dit, vae=vae, t5=text, conditioner=duration, diffusion=diffusion_config(scheduler),
                         name=root.name, family="sa3")
  except ConfigError as e:
    raise ConversionError(f"{root}: {e}") from None
  return SourceCheckpoint(
      layout=SA3_LAYOUT, config=config,
      state_dicts={"dit": dit_sd, "vae": vae_sd, "t5": text_sd, "conditioner": duration_sd},
      origins={"dit": dit_origin, "vae": vae_origin, "t5": text_origin, "conditioner": duration_origin},
      tokenizer_dir=root / "tokenizer", ignore={"t5": t5gemma_ignored}, scheduler=scheduler)
