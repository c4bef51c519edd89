"""Typed, frozen model configs and their JSON form.

One dataclass per component; `ModelConfig` bundles them and checks the couplings between
components (latent width, conditioning widths). Two families of models:

  sao   Stable Audio Open 1.0 and Stable Audio Open Small (and their fine-tunes): the DiT of
        stable-audio-tools (DiTConfig), the Oobleck VAE, T5, number conditioners (sao.py)
  sa3   Stable Audio 3: its DiT with memory tokens and differential attention (SA3DiTConfig), the
        SAME autoencoder, the T5Gemma encoder and the duration embedder (sa3.py)

Within a family the members differ in options, not in code. The converter reads a checkpoint's
own config into these (musickv_jax/convert/); named variants live as JSON in `configs/` (`sao-1.0`,
`sao-small`, `tiny`, ...) and are loaded with `named_config`. The pipeline reads every family
through the same names (dit.depth, dit.sample_size, vae.hop_length, conditioner.seconds_max, ...).
"""

from musickv_jax.config.common import (
  ATTENTION_IMPLEMENTATIONS,
  OBJECTIVES,
  QK_NORMS,
  SHIFTS,
  DiffusionConfig,
  DistributionShift,
  SamplingDefaults,
  to_jnp_dtype,
)
from musickv_jax.config.model import FAMILIES, ModelConfig, available_configs, named_config
from musickv_jax.config.sa3 import SA3DiTConfig, SA3DurationConfig, SAMEConfig, T5GemmaConfig
from musickv_jax.config.sao import NUMBERS, ConditionerConfig, DiTConfig, OobleckConfig, T5Config

__all__ = [
    "ATTENTION_IMPLEMENTATIONS", "FAMILIES", "NUMBERS", "OBJECTIVES", "QK_NORMS", "SHIFTS", "ConditionerConfig",
    "DiTConfig", "DiffusionConfig", "DistributionShift", "ModelConfig", "OobleckConfig", "SA3DiTConfig",
    "SA3DurationConfig", "SAMEConfig", "SamplingDefaults", "T5Config", "T5GemmaConfig", "available_configs",
    "named_config", "to_jnp_dtype",
]
