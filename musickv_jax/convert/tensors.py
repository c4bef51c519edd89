"""Reading PyTorch weight files into NumPy without torch (safetensors) or safely with it (pickles).

The safetensors reader is our own (the format is an 8-byte header length, a JSON header,
then raw little-endian bytes): it memory-maps the file, so tensors cost no copy until
used, reads bfloat16 through ml_dtypes, and turns a truncated or corrupt file into one
line that names it.
"""

from __future__ import annotations

import json
import mmap
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from musickv_jax.errors import ConversionError

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}

_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
  """All tensors of a .safetensors file as read-only NumPy arrays backed by a memory map."""
  path = Path(path)
  if not path.is_file():
    raise ConversionError(f"{path}: file not found")
  size = path.stat().st_size

  def corrupt(why: str) -> ConversionError:
    return ConversionError(f"{path}: not a valid safetensors file ({why}); the file may be truncated or "
                           "corrupt, download or save it again")

  if size < 8:
    raise corrupt(f"only {size} bytes")
  with open(path, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > min(_MAX_HEADER_BYTES, size - 8):
      raise corrupt(f"header length {header_len} does not fit in a file of {size} bytes")
    try:
      header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise corrupt(f"unreadable header: {e.msg if hasattr(e, 'msg') else e}") from None
    if not isinstance(header, dict):
      raise corrupt("header is not a JSON object")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    data_len = size - data_start
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None

  tensors = {}
  for name, info in header.items():
    try:
      dtype = _SAFETENSORS_DTYPES[info["dtype"]]
      shape = tuple(int(d) for d in info["shape"])
      begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
      raise corrupt(f"bad header entry for tensor {name!r}") from None
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if not (0 <= begin <= end <= data_len) or end - begin != expected:
      raise corrupt(f"tensor {name!r} needs bytes {begin}..{end} of a {data_len}-byte data section")
    array = np.frombuffer(mapped, dtype=dtype, count=expected // np.dtype(dtype).itemsize,
                          offset=data_start + begin)
    tensors[name] = array.reshape(shape)
  return tensors


def _torch_to_numpy(value) -> np.ndarray:
  import torch  # only reached when torch is installed (checked by the caller)

  value = value.detach().cpu()
  if value.dtype == torch.bfloat16:
    return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return value.numpy()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNPICKLER = "WeightsUnpickler error:"
_UNSAFE_ADVICE = ("weights_only", "can still be loaded", "add_safe_globals", "safe_globals", "trust")


def pickle_problem(error: BaseException) -> str:
  """What torch.load(weights_only=True) found wrong with a pickle, without torch's advice: it
  suggests re-running with weights_only=False or allow-listing the pickle's globals, both of which
  would run what the file asks, which the converter never does. Its weights-only unpickler's own
  finding ("Unsupported global: GLOBAL builtins.print was not an allowed global by default") is
  kept; any other first line that gives such advice is replaced by the error's type."""
  text = _ANSI.sub("", str(error))
  if _UNPICKLER in text:  # its finding is the first line after the marker, up to torch's "Please ..."
    finding = text.split(_UNPICKLER, 1)[1].strip()
    finding = finding.splitlines()[0].split(". Please", 1)[0].strip().rstrip(".") if finding else ""
    if finding and not any(advice in finding for advice in _UNSAFE_ADVICE):
      return finding
  first = text.strip().splitlines()[0].strip() if text.strip() else ""
  if not first or any(advice in first for advice in _UNSAFE_ADVICE):
    return type(error).__name__
  return first


def read_torch_pickle(path: str | Path) -> dict[str, np.ndarray]:
  """A .ckpt / .bin / .pt file, loaded with torch.load(weights_only=True): never arbitrary code.

  Accepts a plain state dict or a dict holding one under 'state_dict'."""
  path = Path(path)
  if not path.is_file():
    raise ConversionError(f"{path}: file not found")
  try:
    import torch
  except ImportError:
    raise ConversionError(f"{path} is a PyTorch pickle, which needs torch to read; install torch, or use the "
                          "checkpoint's .safetensors file instead") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for bad pickles; all mean the same to the user
    raise ConversionError(f"{path}: cannot be read as a weights-only PyTorch checkpoint ({pickle_problem(e)}); "
                          "nothing in it was run. Use the checkpoint's .safetensors file, or one saved as a plain "
                          "state dict of tensors") from None
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise ConversionError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
  out = {}
  for name, value in obj.items():
    if isinstance(value, torch.Tensor):
      out[name] = _torch_to_numpy(value)
  return out


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
  """A weight file of any supported kind, chosen by its suffix."""
  path = Path(path)
  if path.suffix == ".safetensors":
    return read_safetensors(path)
  if path.suffix in (".ckpt", ".bin", ".pt", ".pth"):
    return read_torch_pickle(path)
  raise ConversionError(f"{path}: unsupported weight file type {path.suffix!r} (expected .safetensors or .ckpt)")


def read_sharded(directory: Path, stems: Iterable[str]) -> tuple[dict[str, np.ndarray], list[Path]]:
  """Reads the weights of a Hugging Face model folder: `<stem>.safetensors`, a sharded
  `<stem>.safetensors.index.json`, or a `<stem>.bin` pickle, for the first stem found."""
  stems = list(stems)
  looked = []
  for stem in stems:
    for suffix in (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json"):
      candidate = directory / f"{stem}{suffix}"
      looked.append(candidate.name)
      if not candidate.is_file():
        continue
      if suffix.endswith(".index.json"):
        with open(candidate) as f:
          try:
            shards = sorted(set(json.load(f)["weight_map"].values()))
          except (json.JSONDecodeError, KeyError):
            raise ConversionError(f"{candidate}: not a valid weight index (needs a 'weight_map')") from None
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
          tensors.update(read_weights(directory / shard))
        return tensors, [directory / s for s in shards]
      return read_weights(candidate), [candidate]
  raise ConversionError(f"{directory}: no weights found (looked for {', '.join(looked)})")
