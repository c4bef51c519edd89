"""Where arrays live when a run spreads over several devices: a 1-D `data` mesh whose devices each
run whole rows (jobs of a batch, groups of windows), with the parameters replicated on all of them.
A second, `model` axis for sharding parameters would join here."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
Mesh = jax.sharding.Mesh


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named `data` over the given devices (default: every local device)."""
  devices = list(devices if devices is not None else jax.local_devices())
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def default_mesh(mesh: Mesh | None = None) -> Mesh | None:
  """The mesh to spread over: the given one, else every local device (None when there is one)."""
  if mesh is not None or jax.local_device_count() == 1:
    return mesh
  return data_mesh()


def replicate(tree, mesh: Mesh | None):
  """Arrays replicated on every device of the mesh when it has several (one program then sees every
  input on the same devices), else as they are."""
  if mesh is None or mesh.size == 1:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, P()))


def devices_of(mesh: Mesh | None) -> int:
  return 1 if mesh is None else mesh.size
