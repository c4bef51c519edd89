"""Lowering every program for TPU and CUDA with `jax.export`, shapes only, on any machine.

Each (program, platform) gets "ok" or a one-line reason. What must lower here: every program on
every platform its attention applies to, except cuDNN attention for `cuda`, which lowers only
where cuDNN is present (JAX asks the installed cuDNN while lowering: "cuDNN is not detected" on a
machine without it): there, that entry carries the reason and is not required.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
from jax import export

from musickv_jax.readiness import programs as programs_lib
from musickv_jax.readiness.programs import ProgramName


@dataclasses.dataclass(frozen=True)
class Outcome:
  name: ProgramName
  platform: str
  status: str  # "ok" or a one-line reason
  required: bool  # whether a failure here is an error on this machine
  seconds: float

  @property
  def ok(self) -> bool:
    return self.status == "ok"

  @property
  def failed(self) -> bool:
    return self.required and not self.ok


def cudnn_present() -> bool:
  """Whether this machine has a CUDA backend (JAX's cuDNN comes with it)."""
  try:
    return any(device.platform == "gpu" for device in jax.devices("cuda"))
  except RuntimeError:
    return False


def required(name: ProgramName, platform: str, *, have_cudnn: bool) -> bool:
  return not (name.attention == "cudnn" and platform == "cuda" and not have_cudnn)


def one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def lower(program: programs_lib.Program, platform: str) -> None:
  """Lowers one program for one platform (raises what jax.export raises)."""
  export.export(program.function, platforms=(platform,))(*program.args, **program.kwargs)


def lower_all(names: Sequence[ProgramName], platforms: Sequence[str] = programs_lib.PLATFORMS, *,
              log: Callable[[str], None] | None = None) -> list[Outcome]:
  """Lowers each named program for each of `platforms` that its attention applies to."""
  have_cudnn = cudnn_present()
  outcomes = []
  for name in names:
    wanted = [p for p in name.platforms if p in platforms]
    if not wanted:
      continue
    start = time.perf_counter()
    try:
      program = programs_lib.build(name)
      build_error = None
    except Exception as e:  # noqa: BLE001  a program that cannot even be built is a reason for every platform
      program, build_error = None, one_line(e)
    for platform in wanted:
      if build_error is None:
        try:
          lower(program, platform)
          status = "ok"
        except Exception as e:  # noqa: BLE001  the reason is the result
          status = one_line(e)
      else:
        status = f"building the program failed: {build_error}"
      must = required(name, platform, have_cudnn=have_cudnn)
      if status != "ok" and not must:
        status += " (cuDNN attention lowers only where cuDNN is present: scripts/accelerator_check.sh on a GPU)"
      outcome = Outcome(name, platform, status, must, time.perf_counter() - start)
      start = time.perf_counter()
      outcomes.append(outcome)
      if log is not None:
        log(f"{name} {platform}: {status}")
  return outcomes


def to_json(outcomes: Sequence[Outcome]) -> dict:
  """The contracted form: {"programs": {"<program>": {"<platform>": "ok" | "<reason>"}}}."""
  table: dict[str, dict[str, str]] = {}
  for outcome in outcomes:
    table.setdefault(str(outcome.name), {})[outcome.platform] = outcome.status
  return {"programs": table}


def summary(outcomes: Sequence[Outcome]) -> str:
  ok = sum(o.ok for o in outcomes)
  failed = [o for o in outcomes if o.failed]
  excused = [o for o in outcomes if not o.ok and not o.required]
  lines = [(f"{ok} of {len(outcomes)} (program, platform) pairs lowered; {len(failed)} failed; "
            f"{len(excused)} not lowerable on this machine (listed with their reason)")]
  lines += [f"FAILED {o.name} {o.platform}: {o.status}" for o in failed]
  reasons = sorted({o.status for o in excused})
  lines += [f"not lowerable here ({sum(o.status == r for o in excused)}x): {r}" for r in reasons]
  return "\n".join(lines)
