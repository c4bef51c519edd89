"""Editing presets: named bundles of vital layers, skip layers, guidance and whether the
injection varies over time. `configs/presets/<name>.json` holds the shipped ones; any JSON file
of the same form (e.g. the `preset.json` a layer probe writes) works too.

  {"description": "...", "vital_layers": [20, 3, 4], "skip_layers": [], "guidance_scale": 7.0,
   "time_varying": true, "audio_end_in_s": 15.0, "depth": 24, "family": "sao"}

audio_end_in_s is the length of a generated edit when none is asked for (at most the model's
window; absent: the window). guidance_scale absent: the model's own default. depth and family
(sao, the default, or sa3): the DiT the preset was made for; the default preset of a model is the
shipped one made for its family and depth (`musickv` for Stable Audio Open 1.0, `musickv-small`
for Stable Audio Open Small, `musickv-sa3-small` and `musickv-sa3-medium` for Stable Audio 3),
else a proportional guess from the authors' layers.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from musickv_jax import resources
from musickv_jax.errors import SettingsError

DEFAULT = "musickv"


REFERENCE_LAYERS, REFERENCE_DEPTH = (20, 3, 4), 24  # the authors' vital layers of Stable Audio Open 1.0


@dataclasses.dataclass(frozen=True)
class EditPreset:
  name: str
  vital_layers: tuple[int, ...]
  skip_layers: tuple[int, ...] = ()
  guidance_scale: float | None = None  # None: the model's default
  time_varying: bool = True
  description: str = ""
  audio_end_in_s: float | None = None  # None: the model's window
  depth: int | None = None  # the DiT depth it was made for
  family: str = "sao"  # the model family it was made for (config.FAMILIES)

  def to_json_dict(self) -> dict:
    record = {"description": self.description, "vital_layers": list(self.vital_layers),
              "skip_layers": list(self.skip_layers), "time_varying": self.time_varying}
    for key in ("guidance_scale", "audio_end_in_s", "depth"):
      if getattr(self, key) is not None:
        record[key] = getattr(self, key)
    if self.family != "sao":
      record["family"] = self.family
    return record


def proportional_layers(depth: int) -> tuple[int, ...]:
  """The authors' vital layers [20, 3, 4] of 24 moved to the same places of a `depth`-layer DiT."""
  layers = []
  for layer in REFERENCE_LAYERS:
    scaled = min(depth - 1, int(round(layer * depth / REFERENCE_DEPTH)))
    if scaled not in layers:
      layers.append(scaled)
  return tuple(layers)


def default_for(config) -> EditPreset:
  """The preset a model uses when none is named: the shipped preset made for its DiT's depth, else
  the authors' layers moved proportionally (a guess until musickv-probe-layers finds them)."""
  for name in available():
    preset = load(name)
    if preset.depth == config.dit.depth and preset.family == config.family:
      return preset
  depth = config.dit.depth
  return EditPreset(name=f"proportional-{depth}", vital_layers=proportional_layers(depth),
                    description=f"the authors' vital layers [20, 3, 4] of 24 moved to the same places of this "
                                f"{depth}-layer DiT: a guess; find this model's own with musickv-probe-layers",
                    depth=depth, family=config.family)


def available() -> list[str]:
  return sorted(p.stem for p in resources.presets_dir().glob("*.json"))


def _int_tuple(data: dict, key: str, where: str, default=()) -> tuple[int, ...]:
  value = data.get(key, default)
  if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
    raise SettingsError(f"{{field}} {where}: '{key}' must be a list of integers, found {value!r}", field="preset")
  return tuple(value)


def load(name_or_path: str | Path) -> EditPreset:
  """A shipped preset by name (`musickv`), or a preset JSON file by path."""
  text = str(name_or_path)
  looks_like_path = text.endswith(".json") or "/" in text or Path(text).is_file()
  path = Path(text).expanduser() if looks_like_path else resources.presets_dir() / f"{text}.json"
  if not path.is_file():
    if looks_like_path:
      raise SettingsError(f"{{field}} {text}: file not found", field="preset")
    raise SettingsError(f"{{field}} {text!r} not found; available: {', '.join(available())}, or a path to a "
                        "preset .json file", field="preset")
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
    raise SettingsError(f"{{field}} {path}: not a readable JSON file ({e})", field="preset") from None
  if not isinstance(data, dict):
    raise SettingsError(f"{{field}} {path}: expected a JSON object", field="preset")
  known = {"description", "vital_layers", "skip_layers", "guidance_scale", "time_varying", "name", "audio_end_in_s",
           "depth", "family"}
  unknown = sorted(set(data) - known)
  if unknown:
    raise SettingsError(f"{{field}} {path}: unknown key(s) {unknown}; a preset has {sorted(known)}", field="preset")
  if "vital_layers" not in data:
    raise SettingsError(f"{{field}} {path}: 'vital_layers' is missing", field="preset")
  guidance = data.get("guidance_scale")
  if guidance is not None and (not isinstance(guidance, (int, float)) or isinstance(guidance, bool)
                               or not math.isfinite(guidance)):
    raise SettingsError(f"{{field}} {path}: 'guidance_scale' must be a number, found {guidance!r}", field="preset")
  depth = data.get("depth")
  if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
    raise SettingsError(f"{{field}} {path}: 'depth' must be a positive whole number, found {depth!r}", field="preset")
  time_varying = data.get("time_varying", True)
  if not isinstance(time_varying, bool):
    raise SettingsError(f"{{field}} {path}: 'time_varying' must be true or false", field="preset")
  length = data.get("audio_end_in_s")
  if length is not None and (not isinstance(length, (int, float)) or isinstance(length, bool)
                             or not math.isfinite(length) or length <= 0):
    raise SettingsError(f"{{field}} {path}: 'audio_end_in_s' must be a positive number of seconds, found {length!r}",
                        field="preset")
  family = data.get("family", "sao")
  if family not in ("sao", "sa3"):
    raise SettingsError(f"{{field}} {path}: 'family' must be sao or sa3, found {family!r}", field="preset")
  return EditPreset(name=path.stem if not looks_like_path else str(path), family=family,
                    vital_layers=_int_tuple(data, "vital_layers", str(path)),
                    skip_layers=_int_tuple(data, "skip_layers", str(path)),
                    guidance_scale=None if guidance is None else float(guidance), time_varying=time_varying,
                    description=str(data.get("description", "")),
                    audio_end_in_s=None if length is None else float(length), depth=depth)
