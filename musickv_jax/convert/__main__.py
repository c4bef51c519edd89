"""`python -m musickv_jax.convert`: the same command as musickv-convert."""

from musickv_jax.cli.launch import convert

convert()
