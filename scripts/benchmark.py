"""`python scripts/benchmark.py` from a clone: the same command as musickv-benchmark (musickv_jax/cli/benchmark.py)."""

from musickv_jax.cli.launch import benchmark

if __name__ == "__main__":
  benchmark()
