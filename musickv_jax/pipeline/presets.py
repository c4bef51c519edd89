"""Editing presets: named bundles of vital layers, skip layers, guidance and whether the
injection varies over time. `configs/presets/<name>.json` holds the shipped ones; any JSON file
of the same form (e.g. the `preset.json` a layer probe writes) works too.

  {"description": "...", "vital_layers": [20, 3, 4], "skip_layers": [], "guidance_scale": 7.0,
   "time_varying": true, "audio_end_in_s": 15.0}

audio_end_in_s is the length of a generated edit when none is asked for (at most the model's window).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from musickv_jax import resources
from musickv_jax.errors import SettingsError

DEFAULT = "musickv"


@dataclasses.dataclass(frozen=True)
class EditPreset:
  name: str
  vital_layers: tuple[int, ...]
  skip_layers: tuple[int, ...] = ()
  guidance_scale: float = 7.0
  time_varying: bool = True
  description: str = ""
  audio_end_in_s: float = 15.0  # the reference's length of a generated edit

  def to_json_dict(self) -> dict:
    return {"description": self.description, "vital_layers": list(self.vital_layers),
            "skip_layers": list(self.skip_layers), "guidance_scale": self.guidance_scale,
            "time_varying": self.time_varying, "audio_end_in_s": self.audio_end_in_s}


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
  known = {"description", "vital_layers", "skip_layers", "guidance_scale", "time_varying", "name", "audio_end_in_s"}
  unknown = sorted(set(data) - known)
  if unknown:
    raise SettingsError(f"{{field}} {path}: unknown key(s) {unknown}; a preset has {sorted(known)}", field="preset")
  if "vital_layers" not in data:
    raise SettingsError(f"{{field}} {path}: 'vital_layers' is missing", field="preset")
  guidance = data.get("guidance_scale", 7.0)
  if not isinstance(guidance, (int, float)) or isinstance(guidance, bool):
    raise SettingsError(f"{{field}} {path}: 'guidance_scale' must be a number, found {guidance!r}", field="preset")
  time_varying = data.get("time_varying", True)
  if not isinstance(time_varying, bool):
    raise SettingsError(f"{{field}} {path}: 'time_varying' must be true or false", field="preset")
  length = data.get("audio_end_in_s", 15.0)
  if not isinstance(length, (int, float)) or isinstance(length, bool) or not math.isfinite(length) or length <= 0:
    raise SettingsError(f"{{field}} {path}: 'audio_end_in_s' must be a positive number of seconds, found {length!r}",
                        field="preset")
  return EditPreset(name=path.stem if not looks_like_path else str(path),
                    vital_layers=_int_tuple(data, "vital_layers", str(path)),
                    skip_layers=_int_tuple(data, "skip_layers", str(path)), guidance_scale=float(guidance),
                    time_varying=time_varying, description=str(data.get("description", "")),
                    audio_end_in_s=float(length))
