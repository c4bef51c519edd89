"""The charts the research commands write: a learned schedule against the reference ramp, and the
layer probe's scores per layer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402


def schedule_chart(path: Path, schedule: np.ndarray, layers, steps: int) -> None:
  fig, ax = plt.subplots(figsize=(7, 3.2))
  ax.plot(np.arange(steps), np.arange(steps) / steps, "k--", label="reference ramp (i / steps)")
  for j, layer in enumerate(layers):
    ax.plot(np.arange(steps), schedule[:, j], label=f"layer {layer}")
  ax.set_xlabel("step (0 = noisiest)")
  ax.set_ylabel("injection weight")
  ax.set_ylim(-0.02, 1.02)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)


def probe_chart(path: Path, summary, model_name: str) -> None:
  layers = sorted(summary.layers)
  scores = [summary.layers[layer]["score"] for layer in layers]
  chosen = set(summary.vital_layers())
  fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 3.2))
  ax.bar(layers, scores, color=["#c0392b" if layer in chosen else "#95a5a6" for layer in layers])
  ax.set_xticks(layers)
  ax.set_xlabel("DiT layer (self-attention bypassed)")
  ax.set_ylabel("structure change (score)")
  ax.set_title(f"{model_name}: vital layers {list(summary.vital_layers())} (red)", fontsize=9, loc="left")
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)


def fidelity_editability_chart(path: Path, points, *, x_label: str, y_label: str, title: str) -> None:
  """One point per (label, x, y): the trade-off between what an edit keeps (y) and how far it
  moves (x). A method's variant without injection (label ending -no-kv) is a hollow square joined
  to its filled circle with injection; each method is named once."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  by_method: dict[str, list] = {}
  for label, x, y in points:
    by_method.setdefault(label.removesuffix("-no-kv"), []).append((label, x, y))
  for method, members in by_method.items():
    line = ax.plot([m[1] for m in members], [m[2] for m in members], "-", alpha=0.4)[0]
    for label, x, y in members:
      plain = label != method
      ax.plot([x], [y], "s" if plain else "o", color=line.get_color(), markerfacecolor="none" if plain else None)
    x, y = members[0][1], members[0][2]
    ax.annotate(method, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
  ax.plot([], [], "o", color="#555", label="with KV injection")
  ax.plot([], [], "s", color="#555", markerfacecolor="none", label="without")
  ax.legend(fontsize=7, loc="best")
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  ax.set_title(title, fontsize=9, loc="left")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)
