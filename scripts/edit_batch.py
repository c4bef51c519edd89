"""`python scripts/edit_batch.py` from a clone: the same command as musickv-edit-batch (musickv_jax/cli/edit_batch.py)."""

from musickv_jax.cli.launch import edit_batch

if __name__ == "__main__":
  edit_batch()
