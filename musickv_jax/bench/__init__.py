"""Benchmarks (musickv-benchmark): our DiT call and edit step against diffusers in the same run,
the machine's matmul peak for each framework, and a user's whole edit job done our way and the
reference's way. torch and diffusers are needed only for the comparisons."""
