"""musickv-studio: MusicKV editing in the browser (gradio), on models loaded once and kept warm.

  request.py    what one edit asks (EditRequest) -> the library's settings, exactly as musickv-edit
                resolves its flags (cli.options), with one-line errors
  inversions.py the inversions of recordings, cached by content, prompt, model and steps
  worker.py     the one thread that runs the models: gathers concurrent requests, batches those of
                one shape as rows of one sampler call (jobs.batching), progress and cancel
  service.py    Studio: models, worker, outputs (the edit.json record and files of musickv-edit),
                metrics (musickv-evaluate's); no gradio
  app.py        the gradio page and the API endpoint /edit (the only module that imports gradio,
                with command.py)
  command.py    the command line: musickv-studio --model DIR [--host] [--port] [--auth] [--output_path]
"""
