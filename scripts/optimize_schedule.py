"""`python scripts/optimize_schedule.py` from a clone: the same command as musickv-optimize-schedule (musickv_jax/cli/optimize_schedule.py)."""

from musickv_jax.cli.launch import optimize_schedule

if __name__ == "__main__":
  optimize_schedule()
