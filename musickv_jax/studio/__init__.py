"""musickv-studio's library side: edits from a page or an API, on models loaded once and kept warm.

  request.py    what one studio edit asks (StudioRequest) -> the library's request (jobs.EditRequest),
                one-line refusals in the studio's own names
  worker.py     the one thread that runs the models: gathers concurrent requests, prepares and runs
                them with jobs (concurrent edits of one shape as rows of one sampler call), progress
                per request, cancel
  service.py    Studio: models, worker, inversion cache, outputs (musickv-edit's files and edit.json),
                metrics (musickv-evaluate's); compare(): several methods on one recording, musickv-compare's
                folder (run by the worker alone)
The page and the command line are in musickv_jax/cli/studio (the only place that imports gradio)."""
