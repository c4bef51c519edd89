"""`python scripts/evaluate.py` from a clone: the same command as musickv-evaluate (musickv_jax/cli/evaluate.py)."""

from musickv_jax.cli.launch import evaluate

if __name__ == "__main__":
  evaluate()
