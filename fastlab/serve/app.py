"""The Starlette app: ``GET /`` (upload page), ``POST /predict``, ``GET /health``.

``POST /predict`` takes the image as multipart field ``file``, or as JSON
``{"image": "<base64 or data: URL>"}``, and answers
``{"label": ..., "top": [{"label": ..., "prob": ...}, ...]}`` (``?top_k=K``, default 3).
A bad request gets a 4xx with ``{"error": "<one line naming the problem and the fix>"}``:
400 (no ``file`` field, bad JSON or base64, corrupt image, bad ``top_k``), 413 (more bytes or
pixels than the limits), 415 (not an accepted image format or content type). The server goes on
serving. Concurrent requests share forward passes through a :class:`Batcher`.
"""

from __future__ import annotations

import base64
import binascii
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

from fastlab.inference import (
    ACCEPTED_FORMATS,
    MAX_PIXELS,
    ImageInputError,
    ImageTooLarge,
    InferenceError,
    Predictor,
    UnsupportedImage,
    check_top_k,
    decode_bytes,
)
from fastlab.serve.batcher import Batcher
from fastlab.serve.page import render_page

MAX_BYTES = 10 * 2**20
log = logging.getLogger("fastlab.serve")


class HTTPError(Exception):
    """A client error: ``status`` and a one-line ``message`` for ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _clean(name) -> str:
    """A client's file name, safe to quote in a one-line message."""
    name = " ".join(name.split())[:100] if isinstance(name, str) else ""
    return name or "upload"


def _status(e: ImageInputError) -> int:
    return 413 if isinstance(e, ImageTooLarge) else 415 if isinstance(e, UnsupportedImage) else 400


def create_app(predictor: Predictor, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               max_batch: int = 32, top_k: int = 3) -> Starlette:
    """A Starlette app serving ``predictor``.

    ``max_bytes`` bounds an uploaded file, ``max_pixels`` its decoded size; ``max_batch`` bounds
    how many concurrent requests share one forward pass (1: no batching); ``top_k`` is the
    default number of classes returned.
    """
    batcher = Batcher(predictor.forward, max_batch)
    # The whole request body: the file plus multipart headers, or base64 (4/3 of the file) in JSON.
    max_body = max_bytes * 4 // 3 + 64 * 1024
    limit_text = f"{max_bytes / 2**20:g} MiB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"
    page = render_page(predictor.info(), top_k)

    def too_large() -> HTTPError:
        return HTTPError(413, f"the upload is larger than the {limit_text} limit: send a smaller image "
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

    async def read_image(request: Request) -> tuple[bytes, str]:
        """The uploaded image's bytes and its name, from multipart field ``file`` or JSON."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("multipart/form-data", "application/json"):
            raise HTTPError(415, f"content type {ctype or 'none'!r} is not accepted: POST multipart/form-data "
                                 'with field \'file\', or JSON {"image": "<base64>"}')
        body = await read_body(request)
        if ctype == "multipart/form-data":
            async def replay() -> dict:  # the form parser reads the body we already hold
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
            except (MultiPartException, HTTPException) as e:  # Starlette wraps the first in the second
                detail = getattr(e, "message", None) or getattr(e, "detail", "")
                raise HTTPError(400, f"cannot parse the multipart form ({detail}): send one image "
                                     "in field 'file'") from None
            try:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    fields = sorted(form.keys()) or "none"
                    raise HTTPError(400, f"no file in form field 'file' (fields: {fields}): send the "
                                         "image as multipart field 'file'")
                return await upload.read(), _clean(upload.filename)
            finally:
                await form.close()
        try:  # application/json
            doc = json.loads(body)
            text = doc["image"]
            if not isinstance(text, str):
                raise TypeError
            # A data: URL ("data:image/png;base64,....") as a browser's FileReader gives it.
            data = base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
            raise HTTPError(400, 'the JSON body must be {"image": "<base64 of the image file>"}: '
                                 "encode the file with base64") from None
        return data, _clean(doc.get("name"))

    async def predict(request: Request) -> JSONResponse:
        try:
            k = request.query_params.get("top_k", str(top_k))
            try:
                k = check_top_k(int(k))
            except (ValueError, InferenceError):
                raise HTTPError(400, f"top_k must be a positive integer, got {k!r}: e.g. ?top_k=3") from None
            data, name = await read_image(request)
            if len(data) > max_bytes:
                raise too_large()
            m = predictor.meta
            x = await run_in_threadpool(decode_bytes, data, m.size, m.n_in, name, max_pixels)  # (C, S, S)
        except HTTPError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except ImageInputError as e:
            return JSONResponse({"error": str(e)}, status_code=_status(e))
        try:
            out = await batcher(x)  # (n_out,)
        except Exception as e:  # a fault of the model, not the upload: 500, and keep serving
            log.exception("prediction failed")
            return JSONResponse({"error": f"prediction failed ({type(e).__name__}): see the server log"},
                                status_code=500)
        return JSONResponse(predictor.decode(out, k))

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
