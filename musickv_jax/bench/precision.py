"""bfloat16 against float32: how far a DiT call and the final latents of a short edit move, and
how fast each runs here. bfloat16 means bfloat16 parameters and matmuls; norms, softmax and the
time features stay float32 (the design), as do the sampler's latents."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.bench.job import random_model, vital_layers
from musickv_jax.bench.measure import time_calls
from musickv_jax.checkpoint import LoadedModel, cast_params
from musickv_jax.config import ModelConfig
from musickv_jax.models.dit import StableAudioDiT
from musickv_jax.pipeline import EditSettings, GenerationSettings, edit


def run(config: ModelConfig, *, frames: int = 64, steps: int = 2, repeats: int = 3) -> dict:
  f32 = random_model(config)
  bf16 = with_dtype(f32, "bfloat16")
  rng = np.random.default_rng(0)
  d = config.dit
  args = (jnp.asarray(rng.normal(size=(4, d.io_channels, frames)), jnp.float32), jnp.full((4,), 0.5),
          jnp.asarray(rng.normal(size=(4, config.cross_tokens, d.cond_input_dim)), jnp.float32),
          jnp.asarray(rng.normal(size=(4, d.global_cond_dim)), jnp.float32))
  out, seconds = {}, {}
  for name, model in (("float32", f32), ("bfloat16", bf16)):
    dit = StableAudioDiT(model.config.dit)
    call = jax.jit(lambda p, *a: dit.apply({"params": p}, *a)[0])
    compiled = call.lower(model.params.dit, *args).compile()
    out[name] = np.asarray(compiled(model.params.dit, *args))
    seconds[name] = time_calls(lambda: compiled(model.params.dit, *args).block_until_ready(), repeats).median_s
  call_error = float(np.linalg.norm(out["bfloat16"] - out["float32"]) / np.linalg.norm(out["float32"]))
  seconds_total = frames * config.vae.hop_length / config.sample_rate
  gen = GenerationSettings(prompts=("Piano solo", "Acoustic guitar, country, soft"), num_inference_steps=steps,
                           audio_end_in_s=seconds_total, latent_length="fit")
  settings = EditSettings(gen, vital_layers=vital_layers(config))
  start = time.perf_counter()
  a = edit(f32, settings)
  b = edit(bf16, settings)
  edit_error = float(np.linalg.norm(b.latents - a.latents) / np.linalg.norm(a.latents))
  return {"config": config.name, "device": str(jax.devices()[0]), "frames": frames, "edit_steps": steps,
          "dit_call_relative_l2": round(call_error, 5), "edit_latents_relative_l2": round(edit_error, 5),
          "dit_call_s": {k: round(v, 3) for k, v in seconds.items()},
          "bfloat16_speedup": round(seconds["float32"] / seconds["bfloat16"], 2),
          "seconds": round(time.perf_counter() - start, 1)}


def with_dtype(model: LoadedModel, dtype: str) -> LoadedModel:
  """The same weights cast to `dtype` (the DiT and VAE; T5 keeps its own), as load_model(dtype=) does."""
  return dataclasses.replace(model, config=model.config.with_dtype(dtype), params=cast_params(model.params, dtype))
