"""FlowEdit's inputs from the settings: each row's reference (the recording's latent), the row its
direction is compared with (the source row: prompt 0), the noise of every step and draw (from the
seed, its own stream, shared by the rows of a job) and the level coefficient a(s) of each step
(sampling.flowedit).

FlowEdit runs on the schedule that starts at settings.flowedit_start (the model's time axis, as
audio-to-audio's init_noise_level) with the settings' number of steps; the source row's guidance is
settings.flowedit_source_guidance (default: the edit's, so that an edit prompt equal to the source
prompt changes nothing)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import ModelConfig
from musickv_jax.pipeline.settings import EditSettings
from musickv_jax.sampling.flowedit import FlowEditData
from musickv_jax.sampling.rows import Role
from musickv_jax.sampling.sampler import StepPlan

NOISE_STREAM = 3  # fold_in of the seed's key: apart from the initial noise (0), step noise (1), paste noise (2)


def noise(seed: int, steps: int, samples: int, shape: tuple[int, ...]) -> jax.Array:
  """(steps, samples, *shape) standard normal draws from the seed."""
  key = jax.random.fold_in(jax.random.key(seed), NOISE_STREAM)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (samples, *shape), jnp.float32))(
      jnp.arange(steps))


def clean_scale(config: ModelConfig, steps: StepPlan) -> np.ndarray:
  """(steps,) a(s) of each step's level: 1 - t for rectified flow, 1 for the v objective."""
  level = np.asarray(steps.sigma, np.float32)
  if config.diffusion.is_rectified_flow:
    return (np.float32(1.0) - level).astype(np.float32)
  return np.ones_like(level)


def flowedit_data(config: ModelConfig, settings: EditSettings, roles: list[Role], reference,
                  steps: StepPlan) -> FlowEditData:
  """The FlowEdit data of a job's rows (roles, the source first) from its recording's latent
  reference (1, C, T)."""
  reference = np.asarray(reference, np.float32)
  n = len(roles)
  source = [i if role is Role.SOURCE else 0 for i, role in enumerate(roles)]
  draws = noise(settings.generation.seed, steps.steps, settings.flowedit_samples, (1, *reference.shape[1:]))
  return FlowEditData(reference=jnp.asarray(np.repeat(reference, n, axis=0)),
                      source_row=jnp.asarray(source, jnp.int32), noise=jnp.repeat(draws, n, axis=2),
                      clean_scale=jnp.asarray(clean_scale(config, steps)))
