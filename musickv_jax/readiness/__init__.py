"""Proof that the project is ready for accelerators it may not have: every program lowered for TPU and
CUDA (lowering.py), the memory each needs (memory_plan.py), and the prepared accelerator check
(accelerator_check.py)."""
