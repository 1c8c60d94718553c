"""A trained model, of any task, as a web app: ``app`` (the Starlette routes ``/``, ``/predict``,
``/health``), ``batcher`` (concurrent requests in one forward pass) and ``page`` (the upload page).
The command that starts it under uvicorn is ``fastlab-serve`` (``fastlab.cli.serve``). Needs the
``serve`` extras (``pip install 'fastlab[serve]'``). The app takes any
``fastlab.portable.Predicting``, the PyTorch ``Predictor`` or an ONNX bundle's ``OnnxPredictor``,
and imports no PyTorch itself.
"""
