"""musickv-studio's page and command line; the studio itself (requests, worker, service) is the
library package musickv_jax.studio.

  app.py        the gradio page and the API endpoint /edit (the only module that imports gradio)
  command.py    the command line: musickv-studio --model DIR [--host] [--port] [--auth] [--output_path]
"""
