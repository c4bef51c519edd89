"""The MusicKV hook both DiTs share (Stable Audio Open's and Stable Audio 3's): from the call's
`KVControls` to what each scanned layer gets (`layer_inputs`), the blend of a layer's keys and
values toward its reference (`blend_toward_reference`), and the recording of a layer's own K/V
(`record`). The DiTs differ only in where they take K/V (before or after their norms and rotary)
and in their widths: a head's keys are `key_dim` wide (Stable Audio 3's differential attention has
two key branches side by side), its values `value_dim`."""

from __future__ import annotations

import chex
import flax.struct
import jax
import jax.numpy as jnp

from musickv_jax.models.attention import blend_kv

Array = jax.Array


@flax.struct.dataclass
class KVCache:
  """Self-attention keys and values of some layers: k (n_layers, B, S, H, Dk), v (n_layers, B, S, H, Dv).

  Dk = Dv = head_dim, except with Stable Audio 3's differential attention, whose keys hold both
  branches side by side (Dk = 2 * head_dim).

  `layers` (static) names the DiT block each leading index belongs to."""

  k: Array
  v: Array
  layers: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())


@flax.struct.dataclass
class KVControls:
  """Per-call steering of the self-attention layers (see module docstring).

  inject_weight: (L, B) blend weight of every layer for every sample; 0 leaves it untouched.
  source_index: (B,) int32 or None: for each sample, the row of the reference that it blends in;
    joint mode (no `injected`): a row of this batch; cached mode: a row of `injected`.
  injected: KVCache or None; cached mode: reference K/V (n, R, S, H, D) for the layers it holds
    (other layers are never blended); without source_index its rows align with the batch.
  bypass: (L,) or (L, B) bool or None; True skips that layer's self-attention (for every sample,
    or per sample: the layer probe runs each bypassed layer as a row of one batch).
  blend_layers: (L,) bool or None: the layers where blending runs at all (the vital layers; None:
    every layer). Elsewhere the K/V pass through untouched without the blend's work; a weight
    there must be 0, and no gradient reaches it.
  record_layers: static; the call returns these layers' own K/V.
  """

  inject_weight: Array | None = None
  source_index: Array | None = None
  injected: KVCache | None = None
  bypass: Array | None = None
  blend_layers: Array | None = None
  record_layers: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())


def validate_controls(controls: KVControls, depth: int, batch: int) -> None:
  has_reference = controls.source_index is not None or controls.injected is not None
  if has_reference and controls.inject_weight is None:
    raise ValueError("KVControls: a K/V reference needs inject_weight of shape (depth, batch)")
  if controls.inject_weight is not None:
    if not has_reference:
      raise ValueError("KVControls: inject_weight needs source_index or injected K/V to blend with")
    chex.assert_shape(controls.inject_weight, (depth, batch))
  if controls.source_index is not None:
    chex.assert_shape(controls.source_index, (batch,))
  if controls.blend_layers is not None:
    chex.assert_shape(controls.blend_layers, (depth,))
  if controls.bypass is not None and tuple(controls.bypass.shape) not in ((depth,), (depth, batch)):
    raise ValueError(f"KVControls: bypass has shape {tuple(controls.bypass.shape)}; expected ({depth},) or "
                     f"({depth}, {batch})")
  for name, layers in (("record_layers", tuple(controls.record_layers)),
                       ("injected.layers", controls.injected.layers if controls.injected else ())):
    for layer in layers:
      if not 0 <= layer < depth:
        raise ValueError(f"KVControls: layer index {layer} is out of range; valid layers are 0..{depth - 1}")
    if len(set(layers)) != len(layers):
      raise ValueError(f"KVControls: {name} {layers} lists a layer more than once")
  if controls.injected is not None and controls.source_index is None:
    chex.assert_axis_dimension(controls.injected.k, 1, batch)


@flax.struct.dataclass
class LayerInputs:
  """What each block gets of its own (leading axis: depth), scanned with the blocks.

  bypass: () or (B,) bool, skip this layer's self-attention (for every row, or per row).
  weight: (B,) blend weight toward the reference K/V (0 where the layer has no reference), or None.
  blends: () bool, whether this layer blends at all (see KVControls.blend_layers), or None.
  read_slot: () int32, the slot of an external cache holding this layer (cached mode), or None.
  record_slot: () int32 and recorded: () bool, where this layer's own K/V go when recording, or None.
  """

  bypass: Array
  weight: Array | None = None
  blends: Array | None = None
  read_slot: Array | None = None
  record_slot: Array | None = None
  recorded: Array | None = None



def layer_inputs(controls: KVControls, *, depth: int, batch: int, seq: int, heads: int, key_dim: int,
                 value_dim: int, dtype) -> tuple[LayerInputs, tuple[Array | None, Array | None]]:
  """Per-layer scan inputs and the (zeroed) record buffers (n, B, S, H, key_dim / value_dim). An
  injected cache of other shapes is refused, both shapes named."""
  bypass = controls.bypass if controls.bypass is not None else jnp.zeros((depth,), bool)
  weight = blends = read_slot = record_slot = recorded = None
  if controls.injected is not None:
    held = controls.injected.layers
    k_shape, v_shape = tuple(controls.injected.k.shape), tuple(controls.injected.v.shape)
    rows = k_shape[1] if len(k_shape) > 1 else None
    want_k, want_v = (len(held), rows, seq, heads, key_dim), (len(held), rows, seq, heads, value_dim)
    if k_shape != want_k or v_shape != want_v:
      raise ValueError(f"KVControls: injected K/V have shapes {k_shape} and {v_shape}; this DiT and latent need k "
                       f"{want_k} and v {want_v} (layers, rows, tokens, heads, width)")
  if controls.inject_weight is not None:
    weight = controls.inject_weight  # (depth, B)
    blends = jnp.asarray(controls.blend_layers, bool) if controls.blend_layers is not None else jnp.ones((depth,), bool)
    if controls.injected is not None:  # only the layers the cache holds can blend
      held = controls.injected.layers
      read_slot = jnp.asarray([held.index(i) if i in held else 0 for i in range(depth)], jnp.int32)
      weight = weight * jnp.asarray([i in held for i in range(depth)], weight.dtype)[:, None]
      blends = blends & jnp.asarray([i in held for i in range(depth)])
  records = (None, None)
  if controls.record_layers:
    rec = tuple(controls.record_layers)
    record_slot = jnp.asarray([rec.index(i) if i in rec else 0 for i in range(depth)], jnp.int32)
    recorded = jnp.asarray([i in rec for i in range(depth)])
    records = (jnp.zeros((len(rec), batch, seq, heads, key_dim), dtype),
               jnp.zeros((len(rec), batch, seq, heads, value_dim), dtype))
  layer = LayerInputs(bypass=jnp.asarray(bypass, bool), weight=weight, blends=blends, read_slot=read_slot,
                      record_slot=record_slot, recorded=recorded)
  return layer, records


def blend_toward_reference(k: Array, v: Array, layer: LayerInputs, *, source_index: Array | None,
                           injected_k: Array | None, injected_v: Array | None) -> tuple[Array, Array]:
  """k, v (B, S, H, Dk / Dv) blended toward their reference: rows of this batch (joint: source_index
  says which) or an external cache (cached: the layer's slot of injected_k / injected_v, rows by
  source_index or aligned). Only the layers that blend pay for it (lax.cond: a select would read
  and write both whole tensors in every layer); weight 0 returns k, v exactly."""
  def blended(k, v):
    if injected_k is None:
      ref_k, ref_v = k, v
    else:
      ref_k = jax.lax.dynamic_index_in_dim(injected_k, layer.read_slot, keepdims=False)
      ref_v = jax.lax.dynamic_index_in_dim(injected_v, layer.read_slot, keepdims=False)
    if source_index is not None:
      ref_k, ref_v = jnp.take(ref_k, source_index, axis=0), jnp.take(ref_v, source_index, axis=0)
    return blend_kv(k, ref_k.astype(k.dtype), layer.weight), blend_kv(v, ref_v.astype(v.dtype), layer.weight)

  return jax.lax.cond(layer.blends, blended, lambda k, v: (k, v), k, v)


def record(record_k: Array, record_v: Array, own_k: Array, own_v: Array, layer: LayerInputs) -> tuple[Array, Array]:
  """This layer's own K/V written into its slot of the record buffers if it is recorded."""
  slot = layer.record_slot
  old_k = jax.lax.dynamic_index_in_dim(record_k, slot, keepdims=False)
  old_v = jax.lax.dynamic_index_in_dim(record_v, slot, keepdims=False)
  record_k = jax.lax.dynamic_update_index_in_dim(record_k, jnp.where(layer.recorded, own_k, old_k), slot, 0)
  record_v = jax.lax.dynamic_update_index_in_dim(record_v, jnp.where(layer.recorded, own_v, old_v), slot, 0)
  return record_k, record_v
