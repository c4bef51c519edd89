"""`python -m convert` from a clone: the same command as musickv-convert (the converter itself lives
in musickv_jax/convert/)."""

from musickv_jax.cli.launch import convert

convert()
