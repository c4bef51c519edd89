"""Timing, memory and FLOP counting, the same way for both frameworks."""

from __future__ import annotations

import dataclasses
import os
import statistics
import threading
import time
from collections.abc import Callable

from musickv_jax.config import DiTConfig


@dataclasses.dataclass
class Timing:
  median_s: float
  runs_s: list[float]
  peak_rss_mib: float  # the process's resident memory above what it held before the first run


def _rss_mib() -> float:
  with open(f"/proc/{os.getpid()}/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_calls(call: Callable[[], object], repeats: int) -> Timing:
  """Median wall time of `repeats` calls (after one untimed warm-up call), and the peak resident
  memory above the level before the warm-up, sampled every 10 ms while the calls run."""
  base = _rss_mib()
  peak = [base]
  done = threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _rss_mib())
      time.sleep(0.01)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  try:
    call()
    runs = []
    for _ in range(repeats):
      start = time.perf_counter()
      call()
      runs.append(time.perf_counter() - start)
  finally:
    done.set()
    sampler.join()
  return Timing(statistics.median(runs), runs, max(0.0, peak[0] - base))


def dit_flops(cfg: DiTConfig, rows: int, frames: int, cond_tokens: int = 130) -> float:
  """Multiply-adds x 2 of one DiT call on `rows` rows of `frames` latent frames: every dense layer
  and both attention products (the elementwise work is not counted)."""
  s, d, n = frames + 1, cfg.embed_dim, cond_tokens
  kv = cfg.cross_kv_heads * cfg.head_dim
  per_layer = (2 * s * d * 3 * d + 2 * 2 * s * s * d + 2 * s * d * d  # self-attention: qkv, QK^T and PV, out
               + 2 * s * d * d + 2 * n * cfg.cond_token_dim * 2 * kv + 2 * 2 * s * n * d + 2 * s * d * d  # cross
               + 2 * s * d * 2 * cfg.ff_inner_dim + 2 * s * cfg.ff_inner_dim * d)  # GLU feed-forward
  io = 2 * frames * cfg.io_channels * (cfg.io_channels + d) + 2 * frames * d * cfg.io_channels * 2
  conditioning = 2 * n * cfg.cond_input_dim * cfg.cond_token_dim * 2 + 2 * 3 * d * d * 2
  return float(rows * (cfg.depth * per_layer + io + conditioning))


MATMUL_SHAPE = (1296, 1536, 6144)  # (m, k, n): one feed-forward product of a 4-row, 324-frame call


def jax_matmul_peak(repeats: int = 5) -> float:
  """FLOP/s of a float32 matmul of MATMUL_SHAPE in XLA (at the precision our float32 models use)."""
  import jax
  import jax.numpy as jnp

  m, k, n = MATMUL_SHAPE
  a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
  f = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
  timing = time_calls(lambda: f(a, b).block_until_ready(), repeats)
  return 2 * m * k * n / timing.median_s


def torch_matmul_peak(repeats: int = 5) -> float:
  import torch

  m, k, n = MATMUL_SHAPE
  a, b = torch.randn(m, k), torch.randn(k, n)
  with torch.no_grad():
    timing = time_calls(lambda: a @ b, repeats)
  return 2 * m * k * n / timing.median_s


def cpu_name() -> str:
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "unknown"


def call_figures(timing: Timing, flops: float, peak: float, compile_s: float | None = None,
                 memory: dict | None = None) -> dict:
  """One timed call's figures: median and runs, FLOP rate and its fraction of the matmul peak, memory."""
  out = {"seconds": round(timing.median_s, 4), "runs_s": [round(r, 4) for r in timing.runs_s],
         "tflop": round(flops / 1e12, 4), "gflop_per_s": round(flops / timing.median_s / 1e9, 1),
         "fraction_of_matmul_peak": round(flops / timing.median_s / peak, 3),
         "peak_rss_increase_mib": round(timing.peak_rss_mib, 1)}
  if compile_s is not None:
    out["compile_s"] = round(compile_s, 2)
  if memory is not None:
    out["xla_memory_mib"] = memory
  return out


def xla_memory(compiled) -> dict:
  """XLA's own accounting of a compiled program's buffers, in MiB."""
  stats = compiled.memory_analysis()
  return {"temp": round(stats.temp_size_in_bytes / 2**20, 1), "arguments": round(stats.argument_size_in_bytes / 2**20, 1),
          "outputs": round(stats.output_size_in_bytes / 2**20, 1)}


def matmul_peaks(report: dict, compare_torch: bool, log) -> dict:
  """Each framework's float32 matmul peak in GFLOP/s, measured now (and torch's thread count),
  recorded in `report` and logged; returns the peaks."""
  peaks = {"jax": round(jax_matmul_peak() / 1e9, 1)}
  if compare_torch:
    import torch

    report["torch_threads"] = torch.get_num_threads()
    peaks["torch"] = round(torch_matmul_peak() / 1e9, 1)
  report["matmul_peak_gflop_per_s"] = peaks
  log(f"matmul peak (GFLOP/s): {peaks}")
  return peaks
