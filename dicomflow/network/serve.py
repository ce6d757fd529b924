"""A read-only DICOMweb server over a catalog: ``dicomflow serve SOURCE``.

::

    from dicomflow.network.serve import DicomWebServer, load_index
    with DicomWebServer(load_index("catalog.parquet")) as server:   # 127.0.0.1, a free port
        print(server.url)            # give it to dicomweb-client, OHIF, curl

QIDO-RS (``/studies``, ``/studies/{study}/series``, ``/studies/{study}/series/{series}/instances``
and the other instance and series lists) is answered from the catalog in memory
(:class:`~dicomflow.network._webindex.CatalogIndex`): no file is opened. WADO-RS reads the
cataloged files: whole instances (``multipart/related; type="application/dicom"``), metadata
(DICOM JSON of the header), bulk data, and frames, cut from the file by byte range (native
frames) or from their fragments (encapsulated frames, located through the Basic Offset Table,
the Extended Offset Table or the item headers by :func:`dicomflow.pixels.row_refs`): the bytes
sent are the stored bytes, never decoded or re-encoded. ``rendered`` and ``thumbnail`` are PNG
(or JPEG when asked and Pillow is there), windowed by :func:`dicomflow.pixels.display_frame`.

The browse page (``/``, its script and style under ``/browse/``, package data) is built on
these endpoints and two more: ``/facets`` (counts per modality, body part, manufacturer and
year, the date range and the rows with errors, from the catalog in memory) and ``/progress``
(the progress files of a running pull or pipeline, :class:`~dicomflow.runtime.ProgressFile`).

A URL only ever names UIDs: each is checked to be a UID and looked up in the catalog, and only
a ``uri`` the catalog holds is opened, so no part of a URL reaches the filesystem. The server
binds 127.0.0.1 unless told otherwise; with a token every request needs
``Authorization: Bearer <token>``, except the page's own files, which hold no data.

Every handler is a plain function: starlette runs it in its thread pool, so searches (polars),
frame location and file reads never hold the event loop; streamed parts are produced in the
pool too.
"""

from __future__ import annotations

import hmac
import importlib.resources
import os
import re
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import fsspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..dicom import uid_problem
from ..errors import ConfigError, PixelDataError
from ..pixels import (
    FrameRef,
    display_frame,
    load_frame,
    planes_from_rows,
    row_refs,
)
from ..runtime import read_progress
from ._webindex import INSTANCE, SERIES, STUDY, CatalogIndex, Query, load_index
from ._webstatic import header_json, stored_frame

__all__ = ["DicomWebServer", "create_app", "load_index", "progress_paths", "stored_frame"]

_DICOM_JSON = "application/dicom+json"
_REFS_CACHED = 4096
_MAX_RESULTS = 10_000  # one answer at most; the Warning header says when there were more
_LEVELS = {"studies": STUDY, "series": SERIES, "instances": INSTANCE}
# the browse page: its files (package data) and the types they are sent as
_PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css",
               "icon.svg": "image/svg+xml"}  # fmt: skip
# the page fetches only from this server and shows images from blobs it made
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class _NotFound(Exception):
    """Nothing in the catalog answers to the URL's UIDs (HTTP 404)."""


def _uid(value: str) -> str:
    if uid_problem(value, strict=False):  # the lake's own check: what it adopts, it serves
        raise ConfigError(f"{value[:80]!r} is not a UID")
    return value


class _Service:
    """The request handlers, over one :class:`CatalogIndex` (plain functions: starlette runs
    them in its thread pool)."""

    def __init__(self, index: CatalogIndex, progress: Sequence[str] = ()) -> None:
        self.index = index
        self.progress = tuple(progress)
        self._refs: OrderedDict[str, list[FrameRef]] = OrderedDict()
        self._lock = threading.Lock()

    # -- lookups ---------------------------------------------------------------------------
    def _instance(self, request: Request) -> dict[str, Any]:
        p = request.path_params
        row = self.index.instance_row(_uid(p["study"]), _uid(p["series"]), _uid(p["instance"]))
        if row is None:
            raise _NotFound()
        return row

    def _rows(self, request: Request) -> list[dict[str, Any]]:
        p = request.path_params
        study = _uid(p["study"])
        if "series" in p:
            table = self.index.series_rows(study, _uid(p["series"]))
        else:
            table = self.index.study_rows(study)
        if not table.height:
            raise _NotFound()
        return list(table.iter_rows(named=True))

    def refs(self, row: dict[str, Any]) -> list[FrameRef]:
        """The frames of one instance (located once, then kept for the next request)."""
        key = row["SOPInstanceUID"]
        with self._lock:
            found = self._refs.get(key)
            if found is not None:
                self._refs.move_to_end(key)
                return found
        refs = row_refs({**row, "sop_instance_uid": key})
        with self._lock:
            self._refs[key] = refs
            while len(self._refs) > _REFS_CACHED:
                self._refs.popitem(last=False)
        return refs

    # -- QIDO-RS ---------------------------------------------------------------------------
    def search(self, request: Request) -> Response:
        p = request.path_params
        level = _LEVELS[request.url.path.rstrip("/").rsplit("/", 1)[-1]]
        study = _uid(p["study"]) if "study" in p else None
        series = _uid(p["series"]) if "series" in p else None
        query = Query.from_params(request.query_params.multi_items())
        capped = query.limit is None or query.limit > _MAX_RESULTS
        if capped:
            query = replace(query, limit=_MAX_RESULTS)
        found, matched = self.index.search_counted(level, query, study=study, series=series)
        if not found:
            return Response(status_code=204)
        headers = {}
        if capped and matched > query.offset + len(found):  # PS3.18 8.3.4.4: say it was cut
            headers["Warning"] = (
                f'299 dicomflow "{matched - query.offset - len(found)} more results: '
                'ask again with limit and offset"'
            )
        return JSONResponse(found, media_type=_DICOM_JSON, headers=headers)

    # -- WADO-RS ---------------------------------------------------------------------------
    def retrieve(self, request: Request) -> Response:
        rows = (
            [self._instance(request)] if "instance" in request.path_params else self._rows(request)
        )
        uris = [row["uri"] for row in rows]

        def parts() -> Iterator[bytes]:
            for uri in uris:
                with fsspec.open(uri, "rb") as f:
                    yield f.read()

        return _multipart(parts(), "application/dicom")

    def metadata(self, request: Request) -> Response:
        rows = (
            [self._instance(request)] if "instance" in request.path_params else self._rows(request)
        )
        base = str(request.base_url).rstrip("/")
        return JSONResponse([header_json(row, base) for row in rows], media_type=_DICOM_JSON)

    def frames(self, request: Request) -> Response:
        row = self._instance(request)
        refs = self.refs(row)
        numbers = _frame_numbers(request.path_params["frames"], len(refs))
        syntax = str(row.get("transfer_syntax_uid") or "")
        chosen = [refs[n - 1] for n in numbers]
        return _multipart(
            (stored_frame(ref) for ref in chosen),
            "application/octet-stream",
            syntax,
        )

    def bulkdata(self, request: Request) -> Response:
        row = self._instance(request)
        tag = request.path_params["tag"].upper()
        if not re.fullmatch(r"[0-9A-F]{8}", tag):
            raise ConfigError(f"{tag[:20]!r} is not a tag")
        if tag == "7FE00010":
            refs = self.refs(row)
            syntax = str(row.get("transfer_syntax_uid") or "")
            return _multipart((stored_frame(r) for r in refs), "application/octet-stream", syntax)
        value = _element_bytes(row["uri"], int(tag, 16))
        if value is None:
            raise _NotFound()
        return _multipart(iter([value]), "application/octet-stream")

    def rendered(self, request: Request) -> Response:
        p = request.path_params
        if "instance" in p:
            row = self._instance(request)
        else:  # a series' thumbnail: its middle instance among the readable images
            rows = self._rows(request)
            images = [r for r in rows if r.get("pixel_offset") is not None
                      and r.get("error") is None] or rows  # fmt: skip
            row = images[len(images) // 2]
        frame = int(p["frames"].split(",")[0]) - 1 if "frames" in p else None
        accept = request.headers.get("accept", "")
        jpeg = "image/jpeg" in accept and "image/png" not in accept
        data, media = _render(row, frame, jpeg)
        return Response(data, media_type=media)

    # -- the browse page -------------------------------------------------------------------
    def page(self, request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        media = _PAGE_FILES.get(name)
        if media is None:
            raise _NotFound()
        data = importlib.resources.files(__package__).joinpath("browse", name).read_bytes()
        headers = {"Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-cache",
                   "X-Content-Type-Options": "nosniff"}  # fmt: skip
        return Response(data, media_type=f"{media}; charset=utf-8", headers=headers)

    def facets(self, request: Request) -> Response:
        query = Query.from_params(request.query_params.multi_items())
        return JSONResponse(self.index.facets(query))

    def progress_files(self, request: Request) -> Response:
        tasks = []
        for n, path in enumerate(self.progress):
            try:
                doc = read_progress(path)
            except (ConfigError, OSError):
                doc = {"state": "unreadable"}
            if doc is not None:  # where it is written is not told: the folder's name only
                tasks.append({"id": n, "where": _progress_label(path), **doc})
        return JSONResponse({"tasks": tasks})


def _progress_label(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(folder) == "_lake":
        folder = os.path.dirname(folder)
    return os.path.basename(folder)


def progress_paths(source: str | os.PathLike[str], given: Sequence[str] = ()) -> list[str]:
    """The progress files the page shows: each of ``given`` (a progress file, or a folder: a
    lake, a run's manifest folder), and the source's own when it is a lake."""
    from ..runtime import PROGRESS_FILE

    found: list[str] = []
    for path in [*given, os.fspath(source)]:
        if os.path.isdir(os.path.join(path, "_lake")):
            path = os.path.join(path, "_lake", PROGRESS_FILE)
        elif os.path.isdir(path) or (path in given and not path.endswith(".json")):
            path = os.path.join(path, PROGRESS_FILE)
        elif path not in given:
            continue
        if path not in found:
            found.append(path)
    return found


def _frame_numbers(text: str, count: int) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        raise ConfigError(f"{text[:40]!r}: frame numbers are whole numbers") from None
    if not numbers or any(n < 1 or n > count for n in numbers):
        raise _NotFound()
    return numbers


def _multipart(parts: Iterator[bytes], media: str, syntax: str = "") -> Response:
    boundary = secrets.token_hex(16)
    part_type = media + (f"; transfer-syntax={syntax}" if syntax else "")

    def body() -> Iterator[bytes]:
        for data in parts:
            yield (f"--{boundary}\r\nContent-Type: {part_type}\r\n"
                   f"Content-Length: {len(data)}\r\n\r\n").encode()  # fmt: skip
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    # the first part is made before answering, so that a failure is an HTTP error, not a
    # truncated stream
    stream = body()
    head = [next(stream), next(stream)]
    content = f'multipart/related; type="{media}"; boundary={boundary}'

    def rest() -> Iterator[bytes]:
        yield from head
        yield from stream

    return StreamingResponse(rest(), media_type=content)


def _element_bytes(uri: str, tag: int) -> bytes | None:
    from pydicom import dcmread

    ds = dcmread(uri, stop_before_pixels=True, force=True)
    if tag not in ds:
        return None
    value = ds[tag].value
    if isinstance(value, bytes):
        return value
    return None


def _render(row: dict[str, Any], frame: int | None, jpeg: bool) -> tuple[bytes, str]:
    from ..codecs import encode_png

    n = int(row.get("NumberOfFrames") or 1)
    index = n // 2 if frame is None else frame
    if not 0 <= index < n:
        raise _NotFound()
    planes, failed = planes_from_rows([{**row, "sop_instance_uid": row["SOPInstanceUID"]}],
                                      frames=[index])  # fmt: skip
    if not planes:
        raise PixelDataError(failed[0][1] if failed else "no image in this instance")
    plane = planes[0]
    image = display_frame(load_frame(plane.ref), plane)
    if jpeg:
        try:
            import io

            from PIL import Image

            out = io.BytesIO()
            Image.fromarray(image).save(out, format="JPEG", quality=90)
            return out.getvalue(), "image/jpeg"
        except ImportError:
            pass
    return encode_png(image), "image/png"


class _TokenGate:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``, except the
    browse page's own files (``/``, ``/browse/...``): they hold no data, and the page's script
    sends the token with every request it makes."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        page = path == "/" or path.removeprefix("/browse/") in _PAGE_FILES
        if scope["type"] == "http" and not page:
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = Response("a bearer token is needed", status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not in the catalog"}, status_code=404)


async def _file_gone(request: Request, exc: Exception) -> Response:
    # the catalog names a file that cannot be read now; its path is not told to the client
    return JSONResponse({"error": "the cataloged file cannot be read"}, status_code=404)


async def _unprocessable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=422)


def create_app(
    index: CatalogIndex, *, token: str | None = None, progress: Sequence[str] = ()
) -> Any:
    """The ASGI application serving ``index`` (starlette), behind a token gate if given;
    ``progress`` names the progress files ``/progress`` reads (:func:`progress_paths`)."""
    s = _Service(index, progress)
    study = "/studies/{study}"
    series = study + "/series/{series}"
    instance = series + "/instances/{instance}"
    routes = [
        Route("/", s.page),
        Route("/browse/{name}", s.page),
        Route("/facets", s.facets),
        Route("/progress", s.progress_files),
        Route("/studies", s.search),
        Route("/series", s.search),
        Route("/instances", s.search),
        Route(study + "/series", s.search),
        Route(study + "/instances", s.search),
        Route(series + "/instances", s.search),
        Route(study, s.retrieve),
        Route(series, s.retrieve),
        Route(instance, s.retrieve),
        Route(study + "/metadata", s.metadata),
        Route(series + "/metadata", s.metadata),
        Route(instance + "/metadata", s.metadata),
        Route(instance + "/frames/{frames}", s.frames),
        Route(instance + "/bulkdata/{tag}", s.bulkdata),
        Route(series + "/thumbnail", s.rendered),
        Route(series + "/rendered", s.rendered),
        Route(instance + "/thumbnail", s.rendered),
        Route(instance + "/rendered", s.rendered),
        Route(instance + "/frames/{frames}/rendered", s.rendered),
        Route(instance + "/frames/{frames}/thumbnail", s.rendered),
    ]
    app: Any = Starlette(
        routes=routes,
        exception_handlers={
            ConfigError: _bad_request,
            _NotFound: _not_found,
            PixelDataError: _unprocessable,
            OSError: _file_gone,
        },
    )
    return _TokenGate(app, token) if token else app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class DicomWebServer:
    """uvicorn serving :func:`create_app` in a background thread (a context manager).

    Parameters
    ----------
    index : CatalogIndex
        What to serve (:func:`load_index`).
    host : str
        127.0.0.1 unless another interface is wanted on purpose.
    port : int
        0 picks a free port.
    token : str, optional
        The bearer token every request must carry.
    progress : sequence of str
        Progress files the browse page shows (:func:`progress_paths`).
    """

    def __init__(
        self, index: CatalogIndex, *, host: str = "127.0.0.1", port: int = 0,
        token: str | None = None, progress: Sequence[str] = (),
    ) -> None:  # fmt: skip
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        app = create_app(index, token=token, progress=progress)
        config = uvicorn.Config(app, host=host, port=self.port,
                                log_level="warning", access_log=False)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> DicomWebServer:
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise ConfigError(f"the DICOMweb server could not start on {self.url}")
            threading.Event().wait(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
