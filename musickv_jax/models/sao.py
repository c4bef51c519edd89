"""A model as a whole: the four modules and their parameters (Stable Audio Open here, Stable Audio 3's
in models/sa3.py, chosen by the config's family).

`ModelParams` holds the Flax 'params' collection of each module (a pytree, so jax.tree functions,
jit and device_put take it whole). On disk (Orbax) it is the plain dict {'dit', 'vae', 't5',
'conditioner'}. `abstract_params` gives its structure without allocating.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import ModelConfig
from musickv_jax.models import sa3
from musickv_jax.models.conditioning import Conditioner
from musickv_jax.models.dit import StableAudioDiT
from musickv_jax.models.oobleck import OobleckVAE
from musickv_jax.models.t5 import T5Encoder

COMPONENTS = ("dit", "vae", "t5", "conditioner")


@flax.struct.dataclass
class ModelParams:
  """The parameters of the four modules, each the Flax 'params' collection of that module."""

  dit: Any
  vae: Any
  t5: Any
  conditioner: Any

  @classmethod
  def from_tree(cls, tree: Mapping[str, Any]) -> "ModelParams":
    return cls(**{name: tree[name] for name in COMPONENTS})

  def to_tree(self) -> dict[str, Any]:
    """The plain dict of the on-disk layout."""
    return {name: getattr(self, name) for name in COMPONENTS}


@dataclasses.dataclass(frozen=True)
class StableAudioModules:
  dit: StableAudioDiT
  vae: OobleckVAE
  t5: T5Encoder
  conditioner: Conditioner

  @classmethod
  def from_config(cls, config: ModelConfig) -> "StableAudioModules":
    return cls(dit=StableAudioDiT(config.dit), vae=OobleckVAE(config.vae), t5=T5Encoder(config.t5),
               conditioner=Conditioner(config.conditioner))


def _init_fns(config: ModelConfig):
  if config.is_sa3:
    return sa3.init_fns(config)
  mods = StableAudioModules.from_config(config)
  d, v, c = config.dit, config.vae, config.conditioner
  f32 = jnp.float32
  return {
      "dit": lambda key: mods.dit.init(key, jnp.zeros((1, d.io_channels, 2), f32), jnp.zeros((1,), f32),
                                       jnp.zeros((1, 3, d.cond_input_dim), f32),
                                       jnp.zeros((1, d.global_cond_dim), f32)),
      "vae": lambda key: mods.vae.init(key, jnp.zeros((1, v.audio_channels, v.hop_length), f32)),
      "t5": lambda key: mods.t5.init(key, jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)),
      "conditioner": lambda key: mods.conditioner.init(
          key, jnp.zeros((1, 2, c.text_dim), f32), jnp.ones((1, 2), f32), jnp.zeros((1,), f32), jnp.zeros((1,), f32)),
  }


def abstract_params(config: ModelConfig, dtype=None) -> dict:
  """ShapeDtypeStruct tree of all parameters (float32 unless `dtype` is given)."""
  tree = {name: jax.eval_shape(fn, jax.random.key(0))["params"] for name, fn in _init_fns(config).items()}
  if dtype is not None:
    tree = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), tree)
  return tree


def random_params(config: ModelConfig, seed: int = 0) -> ModelParams:
  """Random parameters drawn straight from the abstract tree (demo checkpoint, tests): no model
  code runs, so nothing compiles. Kernels ~ N(0, 1/fan_in), norms 1, biases and Snake 0."""
  rng = np.random.default_rng(seed)
  abstract = abstract_params(config)

  def draw(component: str, path, leaf) -> np.ndarray:
    name = path[-1].key
    shape = leaf.shape
    if config.is_sa3:
      return sa3.draw(rng, component, name, shape, config)
    stacked = component in ("dit", "t5") and path[0].key in ("blocks", "layers")
    if name == "kernel":
      fan_in = shape[-2] if (stacked or len(shape) == 2) else shape[0] * shape[1]
      return rng.normal(0.0, fan_in ** -0.5, shape)
    if name == "scale":
      return np.ones(shape)
    if name in ("bias", "alpha", "beta"):
      return np.zeros(shape)
    if name == "relative_attention_bias":
      return rng.normal(0.0, 0.1, shape)
    return rng.normal(0.0, 1.0, shape)  # embeddings, Fourier frequencies

  return ModelParams.from_tree({component: jax.tree_util.tree_map_with_path(
      lambda path, leaf, c=component: jnp.asarray(draw(c, path, leaf), jnp.float32), tree)
      for component, tree in abstract.items()})


def count_params(tree) -> int:
  return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))
