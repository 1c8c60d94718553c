"""``fastlab-serve BUNDLE_OR_RUN_DIR --host 127.0.0.1 --port 8000``: a trained model, of any task, as a web app.

The app (:func:`fastlab.serve.app.create_app`) runs under uvicorn: ``GET /`` an upload page,
``POST /predict`` JSON predictions, ``GET /health``. Needs the ``serve`` extras
(``pip install 'fastlab[serve]'``); ``fastlab.inference`` alone does not. An ONNX bundle
(``fastlab-export RUN OUT --format onnx``) is served by onnxruntime, and the server never imports
PyTorch (``fastlab[onnx]``).

    python -m fastlab.cli.serve RUN_DIR
"""

from __future__ import annotations

import argparse
import functools
import socket

from fastlab.cli import fail as cli_fail
from fastlab.cli import run_cli
from fastlab.cli.predict import load_predictor


def _port_free(host: str, port: int) -> bool:
    # Bound the way uvicorn binds (SO_REUSEADDR), so a port in TIME_WAIT still counts as free.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-serve",
        description="Serve a trained model (any task: images, text, tables): an upload page at /, "
                    "POST /predict, GET /health.")
    parser.add_argument("model", metavar="BUNDLE_OR_RUN_DIR", help="a fastlab-export bundle or a fastlab-train run dir")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--top-k", type=int, default=3, help="classes returned by default (default 3)")
    parser.add_argument("--max-mb", type=float, default=10.0, help="largest accepted upload in MiB (default 10)")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="most concurrent requests in one forward pass; 1 turns batching off (default 32)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per forward pass, PyTorch's or onnxruntime's (default: theirs, one "
                             "per core); 1 is often faster on a small or shared CPU")
    parser.add_argument("--log-level", default="info", help="uvicorn's log level (default info)")
    args = parser.parse_args(argv)

    fail = functools.partial(cli_fail, "fastlab-serve")
    try:
        import uvicorn

        from fastlab.serve.app import create_app
    except ImportError as e:
        fail(f"serving needs starlette, uvicorn and python-multipart ({e}): pip install 'fastlab[serve]'")
    if args.top_k < 1 or args.max_batch < 1 or args.max_mb <= 0:
        fail("--top-k and --max-batch must be >= 1 and --max-mb > 0: e.g. --top-k 3 --max-batch 32 --max-mb 10")
    if args.threads is not None and args.threads < 1:
        fail(f"--threads must be >= 1, got {args.threads}: e.g. --threads 1")
    if not 0 <= args.port < 65536:
        fail(f"--port {args.port} is not a port number: use 1-65535, e.g. --port 8000")
    predictor = run_cli("fastlab-serve", lambda: load_predictor(args.model, args.device, args.threads))
    if not _port_free(args.host, args.port):
        fail(f"cannot listen on {args.host}:{args.port} (in use, or not an address of this machine): "
             "choose another with --port or --host")
    app = create_app(predictor, max_bytes=int(args.max_mb * 2**20), max_batch=args.max_batch, top_k=args.top_k)
    print(f"fastlab-serve: {args.model} ({predictor.meta.arch}, {predictor.meta.task}) on "
          f"http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
