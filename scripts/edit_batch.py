"""`python scripts/edit_batch.py` from a clone: the same command as musickv-edit-batch (musickv_jax/cli/edit_batch.py)."""

from musickv_jax.cli.edit_batch import main

if __name__ == "__main__":
  main()
