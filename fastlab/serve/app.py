"""The Starlette app: ``GET /`` (upload page), ``POST /predict``, ``GET /health``.

``POST /predict`` takes the input as multipart field ``file`` (an image, a text file or a CSV, as
the model's task reads), or as a JSON body (``{"image": "<base64 or data: URL>"}``,
``{"text": "..."}``, ``{"row": {...}}`` or ``{"rows": [...]}``), and answers its task's JSON
(``{"label": ..., "top": [...]}`` for classes, ``?top_k=K``, default 3); several rows (a CSV, or
``rows``) are answered ``{"predictions": [...]}``. A bad request gets a 4xx with
``{"error": "<one line naming the problem and the fix>"}``: 400 (no ``file`` field, bad JSON or
base64, corrupt image, empty text, a missing column, a non-finite number such as ``inf`` or
``NaN`` in a row, bad ``top_k``), 413 (more bytes or pixels than the limits), 415 (not an accepted
image format or content type). The server's own faults (a model that answers NaN, say) are a 500
with ``{"error": ...}`` and a log line, never an answer holding NaN. The server goes on serving.
Concurrent requests share forward passes through a :class:`Batcher`.

The app takes any :class:`~fastlab.portable.predictor.Predicting`: the PyTorch ``Predictor`` or
an ONNX bundle's ``OnnxPredictor``; it imports neither PyTorch nor ``fastlab.inference`` itself,
so a server of an ONNX bundle runs without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from fastlab.portable.decode import check_top_k
from fastlab.portable.errors import InferenceError, InputError, clean_name, http_status
from fastlab.portable.images import ACCEPTED_FORMATS, MAX_PIXELS
from fastlab.portable.predictor import Predicting
from fastlab.serve.batcher import Batcher
from fastlab.serve.page import render_page

MAX_BYTES = 10 * 2**20
log = logging.getLogger("fastlab.serve")


class HTTPError(Exception):
    """A client error: ``status`` and a one-line ``message`` for ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(predictor: Predicting, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               max_batch: int = 32, top_k: int = 3) -> Starlette:
    """A Starlette app serving ``predictor``.

    ``max_bytes`` bounds an uploaded file, ``max_pixels`` its decoded size; ``max_batch`` bounds
    how many concurrent requests share one forward pass (1: no batching); ``top_k`` is the
    default number of classes returned.
    """
    task = predictor.task  # what the model reads and answers: its task's inference behaviour
    # The lambda looks the forward pass up per batch, so a wrapped predictor.forward is used.
    batcher = Batcher(lambda batch: predictor.forward(batch), max_batch, collate=task.collate)
    # The whole request body: the file plus multipart headers, or base64 (4/3 of the file) in JSON.
    max_body = max_bytes * 4 // 3 + 64 * 1024
    limit_text = f"{max_bytes / 2**20:g} MiB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"
    page = render_page(predictor.info(), top_k)

    def too_large() -> HTTPError:
        return HTTPError(413, f"the upload is larger than the {limit_text} limit: send a smaller file "
                              "(fastlab-serve --max-mb raises the limit)")

    async def read_body(request: Request) -> bytes:
        """The body, refused as soon as it passes ``max_body`` (also when sent without a length)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body:
            raise too_large()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_payload(request: Request) -> tuple[list, bool]:
        """The request's inputs, read by the task (off the event loop), from multipart field
        ``file`` or a JSON body; and whether to answer with a list."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("multipart/form-data", "application/json"):
            raise HTTPError(415, f"content type {ctype or 'none'!r} is not accepted: POST multipart/form-data "
                                 f"with field 'file', or JSON {task.json_hint}")
        body = await read_body(request)
        if ctype == "application/json":
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                doc = None  # the task names the body it wants
            return await run_in_threadpool(task.items_from_json, doc, max_pixels=max_pixels)

        async def replay() -> dict:  # the form parser reads the body we already hold
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
        except (MultiPartException, HTTPException) as e:  # Starlette wraps the first in the second
            detail = getattr(e, "message", None) or getattr(e, "detail", "")
            raise HTTPError(400, f"cannot parse the multipart form ({detail}): send one file "
                                 "in field 'file'") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                fields = sorted(form.keys()) or "none"
                raise HTTPError(400, f"no file in form field 'file' (fields: {fields}): send the "
                                     f"{task.input_kind} as multipart field 'file'")
            data, name = await upload.read(), clean_name(upload.filename)
        finally:
            await form.close()
        if len(data) > max_bytes:
            raise too_large()
        return await run_in_threadpool(task.items_from_upload, data, name, max_pixels=max_pixels)

    async def predict(request: Request) -> JSONResponse:
        try:
            k = request.query_params.get("top_k", str(top_k))
            try:
                k = check_top_k(int(k))
            except (ValueError, InferenceError):
                raise HTTPError(400, f"top_k must be a positive integer, got {k!r}: e.g. ?top_k=3") from None
            xs, many = await read_payload(request)
        except HTTPError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except InputError as e:
            return JSONResponse({"error": str(e)}, status_code=http_status(e))
        except Exception as e:  # the server's own fault in reading a request: 500 with a log line
            log.exception("reading the request failed")
            return JSONResponse({"error": f"reading the request failed ({type(e).__name__}): see the server log"},
                                status_code=500)
        try:
            rows = await asyncio.gather(*(batcher(x) for x in xs))  # each input is one row of a batch
            answers = [predictor.decode(row, k) for row in rows]
            # Rendered here, so an answer JSON cannot hold (NaN from a damaged model) is a 500 with
            # a log line, never Starlette's plain-text one.
            return JSONResponse({"predictions": answers} if many else answers[0])
        except Exception as e:  # a fault of the model, not the upload (already read): 500, and keep serving
            log.exception("prediction failed")
            return JSONResponse({"error": f"prediction failed ({type(e).__name__}): see the server log"},
                                status_code=500)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **predictor.info(), "max_bytes": max_bytes,
                             "max_pixels": max_pixels, "formats": list(ACCEPTED_FORMATS),
                             "batching": batcher.stats()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await batcher.aclose()

    app = Starlette(routes=[Route("/", index), Route("/predict", predict, methods=["POST"]),
                            Route("/health", health)], lifespan=lifespan)
    app.state.predictor, app.state.batcher = predictor, batcher
    return app
