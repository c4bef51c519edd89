"""Parity assertion with the module tolerance of docs/architecture.md (Testing): max |ours - ref| <= tol x max |ref|."""

from __future__ import annotations

import numpy as np


def max_error_ratio(ours, reference) -> float:
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  assert ours.shape == reference.shape, f"shape {ours.shape} != reference {reference.shape}"
  scale = np.max(np.abs(reference))
  assert scale > 0, "reference is all zeros: the comparison would prove nothing"
  return float(np.max(np.abs(ours - reference)) / scale)


def assert_parity(ours, reference, tol: float = 1e-5, what: str = "output") -> float:
  """max |ours - ref| <= tol * max |ref|; returns the measured ratio."""
  ratio = max_error_ratio(ours, reference)
  assert ratio <= tol, f"{what}: max abs error is {ratio:.3e} x max|ref| (tolerance {tol:.0e})"
  print(f"{what}: max abs error {ratio:.2e} x max|ref|")
  return ratio
