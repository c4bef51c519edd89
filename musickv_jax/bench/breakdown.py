"""Where the time of one DiT layer goes, ours against PyTorch, part by part, at a given length:
the dense layers (self-attention q/k/v/out, cross-attention q/out, the GLU feed-forward), the
attention core (each of our implementations that runs here, and torch's scaled_dot_product_attention)
and the layer norms. Batch 4 (a source and one edit, with CFG), SAO's widths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.bench.measure import time_calls
from musickv_jax.config import DiTConfig
from musickv_jax.models import attention_kernels
from musickv_jax.models.layers import LayerNorm


def _jax(fn, *args, repeats: int) -> float:
  compiled = jax.jit(fn).lower(*args).compile()
  return time_calls(lambda: jax.block_until_ready(compiled(*args)), repeats).median_s


def _glu(h, w_out, matmul):
  value, gate = jnp.split(h, 2, axis=-1)
  return matmul(value * jax.nn.silu(gate), w_out)


def run(cfg: DiTConfig, frames: int, *, batch: int = 4, repeats: int = 5, compare_torch: bool = True) -> dict:
  rng = np.random.default_rng(0)
  seq, width, heads, head_dim = frames + 1, cfg.embed_dim, cfg.num_heads, cfg.head_dim
  hi = jax.lax.Precision.HIGHEST
  x = jnp.asarray(rng.normal(size=(batch, seq, width)), jnp.float32)
  dense = {name: jnp.asarray(rng.normal(size=(width, out)) * width ** -0.5, jnp.float32)
           for name, out in (("qkv", 3 * width), ("out", width), ("ff_in", 2 * cfg.ff_inner_dim))}
  ff_out = jnp.asarray(rng.normal(size=(cfg.ff_inner_dim, width)) * cfg.ff_inner_dim ** -0.5, jnp.float32)
  q, k, v = (jnp.asarray(rng.normal(size=(batch, seq, heads, head_dim)), jnp.float32) for _ in range(3))
  matmul = lambda a, w: jnp.einsum("bsi,io->bso", a, w, precision=hi)  # noqa: E731
  ours = {
      "self_attention q,k,v": _jax(matmul, x, dense["qkv"], repeats=repeats),
      "3 (width, width) dense (self out, cross q, cross out)": 3 * _jax(matmul, x, dense["out"], repeats=repeats),
      "feed-forward (in, GLU, out)": _jax(lambda a: _glu(matmul(a, dense["ff_in"]), ff_out, matmul), x,
                                          repeats=repeats),
      "3 layer norms": 3 * _jax(lambda a: LayerNorm(cfg.norm_eps).apply(
          {"params": {"scale": jnp.ones(width), "bias": jnp.zeros(width)}}, a), x, repeats=repeats),
  }
  for name in ("xla", "blocked"):
    fn = attention_kernels.dot_product_attention if name == "xla" else attention_kernels.blocked_attention
    ours[f"attention core ({name})"] = _jax(fn, q, k, v, repeats=repeats)
  report = {"frames": frames, "batch": batch, "ours_s": {k: round(v, 4) for k, v in ours.items()}}
  if compare_torch:
    import torch

    tx = torch.from_numpy(np.asarray(x))
    tq, tk, tv = (torch.from_numpy(np.asarray(a)).transpose(1, 2).contiguous() for a in (q, k, v))
    with torch.no_grad():
      lin = {n: torch.nn.Linear(width, w.shape[1], bias=False) for n, w in dense.items()}
      lin_out = torch.nn.Linear(cfg.ff_inner_dim, width, bias=False)
      norm = torch.nn.LayerNorm(width)

      def ff():
        a, g = lin["ff_in"](tx).chunk(2, -1)
        return lin_out(a * torch.nn.functional.silu(g))

      theirs = {
          "self_attention q,k,v": time_calls(lambda: lin["qkv"](tx), repeats).median_s,
          "3 (width, width) dense (self out, cross q, cross out)": 3 * time_calls(lambda: lin["out"](tx),
                                                                                        repeats).median_s,
          "feed-forward (in, GLU, out)": time_calls(ff, repeats).median_s,
          "3 layer norms": 3 * time_calls(lambda: norm(tx), repeats).median_s,
          "attention core (scaled_dot_product_attention)": time_calls(
              lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv), repeats).median_s,
      }
    report["torch_s"] = {k: round(v, 4) for k, v in theirs.items()}
  return report


def markdown(reports: list[dict]) -> str:
  lines = ["| part of one layer | " + " | ".join(f"ours T={r['frames']} | torch T={r['frames']}" for r in reports) + " |",
           "|---" * (1 + 2 * len(reports)) + "|"]
  parts = list(reports[0]["ours_s"]) + [p for p in reports[0].get("torch_s", {}) if p not in reports[0]["ours_s"]]
  for part in parts:
    cells = []
    for r in reports:
      cells += [f"{r['ours_s'][part]:.3f}" if part in r["ours_s"] else "",
                f"{r['torch_s'][part]:.3f}" if part in r.get("torch_s", {}) else ""]
    lines.append(f"| {part} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
