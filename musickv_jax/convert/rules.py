"""A declarative name table from PyTorch state dicts to our parameter tree, and back.

A `Rule` says: these PyTorch tensors become these leaves of our tree, through this
transform. Every transform is invertible and knows, from our expected shapes, which
PyTorch shapes it needs, so the table is checked leaf by leaf against `jax.eval_shape`
of the model before any data moves: missing, unexpected and mis-shaped tensors are
all reported by name, together.

Targets inside stacked layers carry their layer index; `apply_rules` stacks them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from musickv_jax.convert.tensors import ConversionError

Shape = tuple[int, ...]
Path = tuple[str, ...]


# ----------------------------------------------------------------------------- transforms


class Transform:
  """Maps PyTorch arrays to our arrays (`forward`) and back (`inverse`)."""

  def torch_shapes(self, ours: Sequence[Shape]) -> list[Shape]:
    raise NotImplementedError

  def forward(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    raise NotImplementedError

  def inverse(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    raise NotImplementedError


class Same(Transform):
  def torch_shapes(self, ours):
    return [tuple(ours[0])]

  def forward(self, arrays):
    return [arrays[0]]

  def inverse(self, arrays):
    return [arrays[0]]


class Linear(Transform):
  """torch Linear weight (out, in) <-> our kernel (in, out)."""

  def torch_shapes(self, ours):
    return [tuple(reversed(ours[0]))]

  def forward(self, arrays):
    return [arrays[0].T]

  def inverse(self, arrays):
    return [arrays[0].T]


class Conv1x1(Transform):
  """torch Conv1d weight (out, in, 1) <-> our kernel (in, out)."""

  def torch_shapes(self, ours):
    return [(ours[0][1], ours[0][0], 1)]

  def forward(self, arrays):
    return [arrays[0][:, :, 0].T]

  def inverse(self, arrays):
    return [arrays[0].T[:, :, None]]


class Conv(Transform):
  """torch Conv1d weight (out, in, K) <-> our kernel (K, in, out)."""

  def torch_shapes(self, ours):
    k, cin, cout = ours[0]
    return [(cout, cin, k)]

  def forward(self, arrays):
    return [arrays[0].transpose(2, 1, 0)]

  def inverse(self, arrays):
    return [arrays[0].transpose(2, 1, 0)]


class ConvTranspose(Transform):
  """torch ConvTranspose1d weight (in, out, K) <-> our kernel (K, in, out)."""

  def torch_shapes(self, ours):
    k, cin, cout = ours[0]
    return [(cin, cout, k)]

  def forward(self, arrays):
    return [arrays[0].transpose(2, 0, 1)]

  def inverse(self, arrays):
    return [arrays[0].transpose(1, 2, 0)]


@dataclasses.dataclass(frozen=True)
class Reshape(Transform):
  """A vector stored with extra unit axes in PyTorch, e.g. Snake (1, C, 1) or Fourier W (C, 1)."""

  torch_shape: Callable[[Shape], Shape]

  def torch_shapes(self, ours):
    return [self.torch_shape(tuple(ours[0]))]

  def forward(self, arrays):
    return [arrays[0].reshape(-1)]

  def inverse(self, arrays):
    return [arrays[0].reshape(self.torch_shape(arrays[0].shape))]


@dataclasses.dataclass(frozen=True)
class WeightNorm(Transform):
  """torch weight_norm(dim=0) pair (weight_g, weight_v) -> folded weight w = g * v / ||v||,
  then `inner`. The norm runs over all axes but the first (in float64, rounded once)."""

  inner: Transform

  def torch_shapes(self, ours):
    (v_shape,) = self.inner.torch_shapes(ours)
    return [(v_shape[0],) + (1,) * (len(v_shape) - 1), v_shape]

  def forward(self, arrays):
    g, v = (a.astype(np.float64) for a in arrays)
    norm = np.sqrt(np.sum(np.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))
    return self.inner.forward([(g * v / norm).astype(np.float32)])

  def inverse(self, arrays):
    (w,) = self.inner.inverse(arrays)
    w64 = w.astype(np.float64)
    g = np.sqrt(np.sum(np.square(w64), axis=tuple(range(1, w.ndim)), keepdims=True))
    return [g.astype(w.dtype), w]


@dataclasses.dataclass(frozen=True)
class Fused(Transform):
  """One fused torch Linear (e.g. to_qkv, to_kv) <-> `parts` of our kernels, split on torch's out axis."""

  parts: int

  def torch_shapes(self, ours):
    fan_in, fan_out = ours[0]
    return [(fan_out * self.parts, fan_in)]

  def forward(self, arrays):
    return [chunk.T for chunk in np.split(arrays[0], self.parts, axis=0)]

  def inverse(self, arrays):
    return [np.concatenate([a.T for a in arrays], axis=0)]


@dataclasses.dataclass(frozen=True)
class Expect(Transform):
  """A torch buffer we derive ourselves (e.g. rotary inv_freq): only its shape is checked."""

  shape: Shape

  def torch_shapes(self, ours):
    return [self.shape]

  def forward(self, arrays):
    return []

  def inverse(self, arrays):
    return []


# ----------------------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True)
class Target:
  path: Path
  layer: int | None = None  # index into a stacked leaf

  def __str__(self) -> str:
    name = "/".join(self.path)
    return name if self.layer is None else f"{name}[{self.layer}]"


@dataclasses.dataclass(frozen=True)
class Rule:
  """`sources` (torch names; a tuple of alternatives for tied copies) -> `targets` via `transform`."""

  sources: tuple[str | tuple[str, ...], ...]
  targets: tuple[Target, ...]
  transform: Transform


def rule(sources: str | Sequence[str | tuple[str, ...]], targets: Sequence[Target] | Target,
         transform: Transform | None = None) -> Rule:
  if isinstance(sources, str):
    sources = (sources,)
  if isinstance(targets, Target):
    targets = (targets,)
  return Rule(tuple(sources), tuple(targets), transform or Same())


def _alternatives(source: str | tuple[str, ...]) -> tuple[str, ...]:
  return (source,) if isinstance(source, str) else source


def _leaf(tree: Mapping, path: Path):
  node = tree
  for key in path:
    node = node[key]
  return node


def _expected_shape(abstract: Mapping, target: Target) -> Shape:
  shape = tuple(_leaf(abstract, target.path).shape)
  return shape if target.layer is None else shape[1:]


def _set(tree: dict, path: Path, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _flatten_paths(tree: Mapping, prefix: Path = ()) -> list[Path]:
  out = []
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.extend(_flatten_paths(value, prefix + (key,)))
    else:
      out.append(prefix + (key,))
  return out


def tensor_problems(component: str, source: str, missing, unexpected, mismatched, unfilled) -> ConversionError:
  """One line naming the first problem (a tensor whose shape the config does not expect, else a
  missing one, else one the model has no place for) and how many there are in all; every problem
  is listed in the error's `details`."""
  total = len(missing) + len(unexpected) + len(mismatched) + len(unfilled)
  if mismatched:
    name, exp, found = mismatched[0]
    first = f"tensor {name} has shape {found} but the model config needs {exp}"
  elif missing:
    name, exp = missing[0]
    first = f"tensor {name} (shape {exp}) is missing"
  elif unexpected:
    name, shape = unexpected[0]
    first = f"tensor {name} (shape {shape}) is not part of this model (another layout or config?)"
  else:
    first = f"no rule fills our parameter {unfilled[0]} (a converter bug)"
  more = f" ({total} problems in all: {len(mismatched)} of shape, {len(missing)} missing, {len(unexpected)} " \
         "unexpected)" if total > 1 else ""
  error = ConversionError(f"cannot convert {component} from {source}: {first}{more}; the weights and the model "
                          "config do not fit each other")
  error.details = format_problems(component, source, missing, unexpected, mismatched, unfilled)
  return error


def format_problems(component: str, source: str, missing, unexpected, mismatched, unfilled) -> str:
  lines = [f"cannot convert {component} from {source}:"]
  if mismatched:
    lines.append(f"  {len(mismatched)} tensor(s) with the wrong shape (the config and the weights disagree):")
    lines += [f"    {name}: expected {exp}, found {found}" for name, exp, found in mismatched]
  if missing:
    lines.append(f"  {len(missing)} missing tensor(s):")
    lines += [f"    {name}: expected shape {exp}" for name, exp in missing]
  if unexpected:
    lines.append(f"  {len(unexpected)} unexpected tensor(s) (not part of this model; wrong layout or config?):")
    lines += [f"    {name}: shape {shape}" for name, shape in unexpected]
  if unfilled:
    lines.append(f"  {len(unfilled)} parameter(s) of ours that no rule fills (converter bug): "
                 + ", ".join(unfilled))
  return "\n".join(lines)


def apply_rules(rules: Sequence[Rule], state_dict: Mapping[str, np.ndarray], abstract: Mapping, *,
                component: str, source: str, ignore: Callable[[str], bool] = lambda name: False,
                allow_unexpected: bool = False, dtype=np.float32) -> tuple[dict, list[str]]:
  """Builds our parameter tree for one component from a PyTorch state dict.

  abstract: the ShapeDtypeStruct tree of the component (from jax.eval_shape).
  ignore: names that may be present and are skipped (e.g. a full T5's decoder).
  Returns (params, unexpected names that were allowed). Raises ConversionError naming the first
  mis-shaped, missing or unexpected tensor in one line, every one of them in its `details`.
  """
  used: set[str] = set()
  missing, mismatched = [], []
  planned: list[tuple[Rule, list[str]]] = []
  for r in rules:
    expected_torch = r.transform.torch_shapes([_expected_shape(abstract, t) for t in r.targets])
    names, ok = [], True
    for source_spec, expected in zip(r.sources, expected_torch):
      present = [n for n in _alternatives(source_spec) if n in state_dict]
      if not present:
        missing.append((_alternatives(source_spec)[0], expected))
        ok = False
        continue
      used.update(present)  # tied copies (e.g. T5 shared / embed_tokens) count as used
      found = tuple(state_dict[present[0]].shape)
      if found != tuple(expected):
        mismatched.append((present[0], tuple(expected), found))
        ok = False
      names.append(present[0])
    if ok:
      planned.append((r, names))

  unexpected = sorted(n for n in state_dict if n not in used and not ignore(n))
  target_paths = {t.path for r in rules for t in r.targets}
  unfilled = ["/".join(p) for p in _flatten_paths(abstract) if p not in target_paths]
  if missing or mismatched or unfilled or (unexpected and not allow_unexpected):
    raise tensor_problems(component, source, missing,
                          [] if allow_unexpected else [(n, tuple(state_dict[n].shape)) for n in unexpected],
                          mismatched, unfilled)

  # Stacked leaves are allocated once and filled layer by layer (no second copy for stacking).
  params: dict = {}
  filled: dict[Path, set[int]] = {}
  for r, names in planned:
    outputs = r.transform.forward([np.asarray(state_dict[n]) for n in names])
    for target, value in zip(r.targets, outputs):
      if target.layer is None:
        _set(params, target.path, np.ascontiguousarray(value, dtype=dtype))
        continue
      if target.path not in filled:
        _set(params, target.path, np.empty(_leaf(abstract, target.path).shape, dtype=dtype))
        filled[target.path] = set()
      _leaf(params, target.path)[target.layer] = value
      filled[target.path].add(target.layer)
  for path, layers in filled.items():
    depth = _leaf(abstract, path).shape[0]
    if layers != set(range(depth)):
      raise ConversionError(f"{component}: layers {sorted(layers)} found for {'/'.join(path)}, "
                            f"expected 0..{depth - 1}")
  return params, unexpected


def export_rules(rules: Sequence[Rule], params: Mapping) -> dict[str, np.ndarray]:
  """Our tree -> a PyTorch state dict with the table's names (the inverse of apply_rules)."""
  out = {}
  for r in rules:
    arrays = []
    for t in r.targets:
      leaf = np.asarray(_leaf(params, t.path))
      arrays.append(leaf if t.layer is None else leaf[t.layer])
    if not r.targets:
      continue
    for source_spec, value in zip(r.sources, r.transform.inverse(arrays)):
      out[_alternatives(source_spec)[0]] = value
  return out
