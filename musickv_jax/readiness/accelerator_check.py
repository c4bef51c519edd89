"""The prepared accelerator check (scripts/accelerator_check.sh runs one part per process, each under
a hard timeout): every part merges its result into one JSON file as soon as it ends, so a part that
hangs or dies loses only itself.

  environment   JAX's version, backend and devices; which attention implementations apply here
  parity        the tests that matter on an accelerator (tiny models: generation, edit, inversion,
                attention implementations against XLA), by pytest, in a process of its own
  attention     cuDNN (GPU) / splash (TPU) against XLA on the same DiT call, bfloat16, real head sizes
  bench         real-size random weights: the DiT call and the edit step (a source and one edit with
                CFG) of SAO 1.0's full window, float32 and bfloat16, each attention implementation;
                a 100-step 47 s edit extrapolated from the measured edit step
  small_edit    SAO Small's 11 s edit with its defaults (8 ping-pong steps, guidance 1), measured whole
  sa3_edit      Stable Audio 3 Small-Music's 30 s edit with its defaults (8 ping-pong steps, guidance 1)

On a machine without an accelerator every part still runs (on the CPU) and the accelerator's own
parts are reported "absent". MUSICKV_CHECK_CHEAP=1 shrinks the models (2 layers, short windows): the
JSON's shape, not its figures (the CPU test of the script).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from musickv_jax import files
from musickv_jax.config import ModelConfig, named_config, to_jnp_dtype
from musickv_jax.models import family
from musickv_jax.models.sao import abstract_params
from musickv_jax.pipeline.plan import block_of
from musickv_jax.readiness import programs
from musickv_jax.sampling import guided

SCHEMA = "musickv-accelerator-check/1"
PARTS = ("environment", "parity", "attention", "bench", "small_edit", "sa3_edit")
# H100/H200-class GPU; SA3: Stability's own PyTorch takes 0.46 s for a whole 30 s Small clip on an H200
TARGETS = {"sao1.0_100_step_edit_bf16_cudnn_s": 2.5, "sao_small_11s_edit_s": 0.3, "sa3_small_30s_edit_s": 0.5}
PARITY_TESTS = ("tests/test_editing.py", "tests/test_sampler.py", "tests/test_inversion.py", "tests/test_speed.py",
                "tests/test_kv_hook.py", "tests/test_sa3_tasks.py")
REPEATS = 3


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What a run measures: the real sizes, or a cheap shrink of them (MUSICKV_CHECK_CHEAP=1)."""

  cheap: bool
  model: str | None  # a named config standing in for every model (cheap: "tiny"), or None: the real ones
  sao_frames: int  # a 47 s SAO 1.0 edit: 1013 latent frames (the whole window is 1024)
  small_frames: int  # an 11 s SAO Small edit: 237 frames
  edit_steps: int  # steps the 47 s edit is extrapolated to
  small_steps: int | None  # steps of the SAO Small and SA3 edits (None: the model's default, 8)
  sa3_frames: int = 323  # a 30 s Stable Audio 3 edit: ceil(30 x 44100 / 4096) frames

  @classmethod
  def from_env(cls) -> Sizes:
    if os.environ.get("MUSICKV_CHECK_CHEAP") == "1":
      return cls(True, "tiny", 8, 8, 100, 2, 8)
    return cls(False, None, 1013, 237, 100, None)

  def config(self, name: str, dtype: str, attention: str) -> ModelConfig:
    stand_in = (self.model if not name.startswith("sa3") else "tiny-sa3") if self.model else name
    return named_config(stand_in).with_dtype(dtype).with_attention(attention)


def backend() -> str:
  return jax.default_backend()


def accelerator_attention() -> str | None:
  """The fused attention of this machine's accelerator (None on the CPU)."""
  return {"gpu": "cudnn", "tpu": "splash"}.get(backend())


def random_dit_params(config: ModelConfig, seed: int = 0):
  """Random DiT parameters drawn on the device (the weights do not change the work), in the model's dtype."""
  shapes = abstract_params(config.with_attention("xla"))["dit"]
  leaves, tree = jax.tree.flatten(shapes)
  dtype = to_jnp_dtype(config.dit.dtype)

  @jax.jit
  def draw(key):
    keys = jax.random.split(key, len(leaves))
    return [(0.02 * jax.random.normal(k, leaf.shape, jnp.float32)).astype(dtype) for k, leaf in zip(keys, leaves)]

  return jax.tree.unflatten(tree, draw(jax.random.key(seed)))


def timed(call, repeats: int = REPEATS) -> dict:
  """Median seconds of `repeats` calls after a warm-up (compile) call, and that first call's time."""
  start = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - start
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    runs.append(time.perf_counter() - start)
  return {"seconds": round(statistics.median(runs), 5), "runs_s": [round(r, 5) for r in runs],
          "first_call_s": round(first, 3)}


def edit_inputs(config: ModelConfig, frames: int, steps: int):
  """A source and one edit with the model's default sampler and guidance (programs.edit_plan: the
  rows build_plan makes, zero conditioning) as the block the sampler runs."""
  plan = programs.edit_plan(config, frames, steps)
  return plan, block_of([plan])


def dit_call_and_edit_step(config: ModelConfig, frames: int) -> dict:
  params = random_dit_params(config)
  plan, block = edit_inputs(config, frames, 1)
  rows = block.cond.cross_tokens.shape[0]
  x = jnp.zeros((rows, config.dit.io_channels, frames)) + 0.1
  t = jnp.full((rows,), 0.5)
  forward = jax.jit(lambda p, x, t, c: family.apply_dit(p, config.dit, x, t, c.cross_tokens, c.global_cond,
                                                        cross_mask=c.cross_mask)[0])
  out = {"dit_call": timed(lambda: forward(params, x, t, block.cond))}
  block = block.replace(x_init=block.x_init + 0.1)

  def step():
    return guided.sample_block(params, block, plan.steps, dit_config=config.dit, solver=plan.solver,
                               use_cfg=plan.use_cfg)[0]

  out["edit_step"] = timed(step)
  out["dit_rows"] = int(rows)
  return out


def whole_edit(config: ModelConfig, frames: int, steps: int) -> dict:
  params = random_dit_params(config)
  plan, block = edit_inputs(config, frames, steps)
  block = block.replace(x_init=block.x_init + 0.1)

  def edit():
    return guided.sample_block(params, block, plan.steps, dit_config=config.dit, solver=plan.solver,
                               use_cfg=plan.use_cfg)[0]

  return {"edit": timed(edit), "steps": steps, "frames": frames, "solver": plan.solver, "use_cfg": plan.use_cfg,
          "dit_rows": int(block.cond.cross_tokens.shape[0])}


# ----------------------------------------------------------------------------- the parts


def part_environment(sizes: Sizes) -> dict:
  devices = jax.devices()
  return {"jax": jax.__version__, "backend": backend(), "devices": [str(d) for d in devices],
          "device_kind": devices[0].device_kind, "accelerator": backend() in ("gpu", "tpu"),
          "attention": ["xla", *([accelerator_attention()] if accelerator_attention() else [])],
          "cheap": sizes.cheap, "sizes": dataclasses.asdict(sizes), "python": sys.version.split()[0]}


def part_parity(sizes: Sizes) -> dict:
  if sizes.cheap:
    return {"status": "skipped", "reason": "cheap mode (MUSICKV_CHECK_CHEAP=1)"}
  present = [t for t in PARITY_TESTS if Path(t).exists()]
  report = Path(os.environ.get("TMPDIR", "/tmp")) / f"musickv-parity-{os.getpid()}.txt"
  command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-rs",
             "--continue-on-collection-errors", *present]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  report.write_text(done.stdout + done.stderr)
  tail = [line for line in done.stdout.splitlines() if line.strip()][-1:] or [""]
  skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")][:20]
  errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR")][:20]
  return {"status": "ok" if done.returncode == 0 else "failed", "summary": tail[0], "returncode": done.returncode,
          "skipped": skipped, "collection_errors": errors, "tests": present, "log": str(report)}


def part_attention(sizes: Sizes) -> dict:
  fused = accelerator_attention()
  if fused is None:
    return {"status": "absent", "reason": f"no GPU or TPU (backend {backend()}): cuDNN and splash need their hardware"}
  out = {}
  for name in ("sao-1.0", "sao-small", "sa3-small"):
    reference = sizes.config(name, "bfloat16", "xla")
    params = random_dit_params(reference)
    _, block = edit_inputs(reference, 256, 1)
    rows = block.cond.cross_tokens.shape[0]
    x = jax.random.normal(jax.random.key(1), (rows, reference.dit.io_channels, 256))
    t = jnp.full((rows,), 0.5)
    outs = {impl: np.asarray(family.apply_dit(params, sizes.config(name, "bfloat16", impl).dit, x, t,
                                              block.cond.cross_tokens, block.cond.global_cond,
                                              cross_mask=block.cond.cross_mask)[0], np.float32)
            for impl in ("xla", fused)}
    error = float(np.abs(outs[fused] - outs["xla"]).max() / np.abs(outs["xla"]).max())
    out[name] = {"implementation": fused, "max_error_ratio_vs_xla": error, "ok": error < 5e-2}
  return {"status": "ok" if all(v["ok"] for v in out.values()) else "failed", **out}


def part_bench(sizes: Sizes, on_partial=lambda result: None) -> dict:
  """The fused bfloat16 case first (the target's), then XLA bfloat16, then float32: a part cut short
  by its timeout keeps the cases it finished (each is recorded as it ends)."""
  fused = accelerator_attention()
  cases = {}
  for dtype, attention in (("bfloat16", "cudnn"), ("bfloat16", "splash"), ("bfloat16", "xla"), ("float32", "xla"),
                           ("float32", "cudnn"), ("float32", "splash")):
    key = f"{dtype}/{attention}"
    if attention != "xla" and attention != fused:
      cases[key] = {"status": "absent", "reason": f"{attention} attention needs its hardware (backend {backend()})"}
      continue
    if sizes.cheap and dtype == "bfloat16":
      cases[key] = {"status": "skipped", "reason": "cheap mode (MUSICKV_CHECK_CHEAP=1)"}
      continue
    if attention == "cudnn" and dtype == "float32":
      cases[key] = {"status": "not applicable", "reason": "cuDNN flash attention runs bfloat16/float16 only"}
      continue
    config = sizes.config("sao-1.0", dtype, attention)
    result = dit_call_and_edit_step(config, sizes.sao_frames)
    result["edit_100_steps_s"] = round(result["edit_step"]["seconds"] * sizes.edit_steps, 3)
    cases[key] = {"status": "ok", **result}
    on_partial(_bench_result(sizes, cases))
  return _bench_result(sizes, cases)


def _bench_result(sizes: Sizes, cases: dict) -> dict:
  target = cases.get("bfloat16/cudnn", {})
  return {"status": "ok", "frames": sizes.sao_frames, "cases": dict(cases),
          "target": {"what": "100-step 47 s SAO 1.0 edit (source + 1 edit, CFG), bf16, cuDNN, sampling seconds",
                     "limit_s": TARGETS["sao1.0_100_step_edit_bf16_cudnn_s"],
                     "measured_s": target.get("edit_100_steps_s"),
                     "met": (target.get("edit_100_steps_s") is not None
                             and target["edit_100_steps_s"] <= TARGETS["sao1.0_100_step_edit_bf16_cudnn_s"])}}


def _timed_edit(sizes: Sizes, config_name: str, frames: int, what: str, target: str) -> dict:
  """A whole edit with the model's defaults (bfloat16 and the accelerator's attention where there
  is one) against its sampling-time target."""
  dtype = "bfloat16" if accelerator_attention() else "float32"
  attention = accelerator_attention() or "xla"
  config = sizes.config(config_name, dtype, attention)
  result = whole_edit(config, frames, sizes.small_steps or config.diffusion.defaults.steps)
  measured = result["edit"]["seconds"]
  return {"status": "ok", "dtype": dtype, "attention": attention, **result,
          "target": {"what": what, "limit_s": TARGETS[target], "measured_s": measured,
                     "met": measured <= TARGETS[target]}}


def part_small_edit(sizes: Sizes) -> dict:
  return _timed_edit(sizes, "sao-small", sizes.small_frames,
                     "SAO Small 11 s edit (8 ping-pong steps, guidance 1), sampling seconds", "sao_small_11s_edit_s")


def part_sa3_edit(sizes: Sizes) -> dict:
  return _timed_edit(sizes, "sa3-small", sizes.sa3_frames, "SA3 Small-Music 30 s edit (source + 1 edit, 8 ping-pong "
                     "steps, guidance 1), sampling seconds", "sa3_small_30s_edit_s")


RUNNERS = {"environment": part_environment, "parity": part_parity, "attention": part_attention, "bench": part_bench,
           "small_edit": part_small_edit, "sa3_edit": part_sa3_edit}


# ----------------------------------------------------------------------------- the JSON, part by part


def read(path: Path) -> dict:
  if path.exists():
    return json.loads(path.read_text())
  return {"schema": SCHEMA, "parts": {}}


def record(path: Path, part: str, result: dict, seconds: float) -> None:
  """Merges one part's result into the JSON (written atomically: a kill never leaves half a file)."""
  data = read(path)
  data["schema"] = SCHEMA
  data["parts"][part] = {"seconds": round(seconds, 2), **result}
  data["parts"][part].setdefault("status", "ok")
  files.write_atomic(path, lambda temporary: temporary.write_text(json.dumps(data, indent=2) + "\n"))


def table(data: dict) -> str:
  """The printed summary of the JSON."""
  lines = [f"accelerator check ({data.get('schema')})"]
  for part in PARTS:
    entry = data["parts"].get(part)
    if entry is None:
      lines.append(f"  {part:12s} missing (did not run or did not finish)")
      continue
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    lines.append(f"  {part:12s} {entry['status']}{reason} ({entry.get('seconds', 0):.1f} s)")
  bench = data["parts"].get("bench", {})
  if bench.get("cases"):
    lines.append(f"  SAO 1.0, {bench['frames']} frames, 4 DiT rows: case | DiT call s | edit step s | 100-step edit s")
    for case, entry in bench["cases"].items():
      if entry.get("status") == "ok":
        lines.append(f"    {case:16s} | {entry['dit_call']['seconds']:.4f} | {entry['edit_step']['seconds']:.4f} | "
                     f"{entry['edit_100_steps_s']:.2f}")
      else:
        lines.append(f"    {case:16s} | {entry['status']}: {entry['reason']}")
  for part in ("bench", "small_edit", "sa3_edit"):
    target = data["parts"].get(part, {}).get("target")
    if target:
      measured = "absent" if target["measured_s"] is None else f"{target['measured_s']:.3f} s"
      verdict = "not measured here" if target["measured_s"] is None else ("met" if target["met"] else "NOT met")
      lines.append(f"  target: {target['what']}: {measured} against <= {target['limit_s']} s: {verdict}")
  return "\n".join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_string("part", None, f"One of {', '.join(PARTS)}, or 'table' to print the summary.")
flags.DEFINE_string("json_out", "accelerator_check.json", "The JSON every part merges its result into.")
flags.DEFINE_string("failed", None, "Record the part named here as failed with this one-line reason (the script's "
                    "timeout or crash), instead of running it: 'part:reason'.")


def main(argv) -> int:
  del argv
  path = Path(FLAGS.json_out)
  if FLAGS.failed:
    part, _, reason = FLAGS.failed.partition(":")
    kept = read(path)["parts"].get(part, {})  # what the part recorded before it was cut short stays
    record(path, part, {**kept, "status": "failed", "reason": reason.strip()}, kept.get("seconds", 0.0))
    return 0
  if FLAGS.part == "table":
    print(table(read(path)))
    return 0
  if FLAGS.part not in RUNNERS:
    print(f"error: --part must be one of {', '.join(PARTS)} or table", file=sys.stderr)
    return 2
  sizes = Sizes.from_env()
  start = time.perf_counter()
  if FLAGS.part == "bench":
    result = part_bench(sizes, lambda partial: record(path, "bench", partial, time.perf_counter() - start))
  else:
    result = RUNNERS[FLAGS.part](sizes)
  record(path, FLAGS.part, result, time.perf_counter() - start)
  return 0


if __name__ == "__main__":
  app.run(main)
