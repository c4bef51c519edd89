"""`python scripts/optimize_schedule.py` from a clone: the same command as musickv-optimize-schedule (musickv_jax/cli/optimize_schedule.py)."""

from musickv_jax.cli.optimize_schedule import main

if __name__ == "__main__":
  main()
