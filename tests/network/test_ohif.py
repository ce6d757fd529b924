"""The real OHIF viewer opening dicomflow's DICOMweb, in headless Chromium.

OHIF 3 (its published build, fetched by ``scripts/fetch_ohif.py``) is served beside
``dicomflow serve``'s application on one origin, as a site would deploy it, and opens:

* a study from ``dicomflow serve`` (QIDO-RS study list, series metadata, frames by WADO-RS);
* the same study from the static tree of ``dicomflow export --format dicomweb`` through OHIF's
  DICOM JSON data source (``ohif.json``), with no dicomflow code serving anything.

What counts as opened: every request OHIF sends to dicomflow is answered 2xx, the page raises no
error, the viewport shows the CT (its pixels vary where a blank viewport is flat), and scrolling
shows another slice. Screenshots go to the test's folder and, when ``DICOMFLOW_ARTIFACTS`` is
set, there too.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

import dicomflow as dfl
from dicomflow.network.serve import create_app, free_port, load_index

from .conftest import copy_corpus

playwright = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: PEERS.md: a closed network stalls Chromium's background services unless they are off
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]  # fmt: skip
SERIES = "series/dcm_qa_ct_ge"  # 28 native CT slices


def _fetch_ohif() -> Path:
    spec = importlib.util.spec_from_file_location("fetch_ohif", ROOT / "scripts" / "fetch_ohif.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.fetch()
    except (OSError, SystemExit) as exc:
        pytest.fail(
            f"the OHIF build could not be fetched ({exc}): run python scripts/fetch_ohif.py"
        )


CONFIG = """window.config = {
  routerBasename: '/', extensions: [], modes: [], showStudyList: true,
  maxNumberOfWebWorkers: 1, showLoadingIndicator: false, showCPUFallbackMessage: false,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'dicomflow',
  dataSources: [
    { namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'dicomflow',
      configuration: {
        friendlyName: 'dicomflow serve', name: 'dicomflow',
        wadoUriRoot: '/dicom-web', qidoRoot: '/dicom-web', wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: true, imageRendering: 'wadors', thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true,
        omitQuotationForMultipartRequest: true } },
    { namespace: '@ohif/extension-default.dataSourcesModule.dicomjson', sourceName: 'dicomjson',
      configuration: { friendlyName: 'static export', name: 'json' } },
  ],
};
"""


class _Site:
    """OHIF's build, dicomflow serve's application and a static export on one origin."""

    def __init__(self, dist: Path, catalog: Path, export: Path, port: int) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import FileResponse, Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        async def page(request):  # OHIF's client-side routes all load its one page
            return FileResponse(dist / "index.html")

        async def config(request):
            return Response(CONFIG, media_type="application/javascript")

        app = Starlette(
            routes=[
                Route("/app-config.js", config),
                Mount("/dicom-web", app=create_app(load_index(catalog))),
                Mount("/export", app=StaticFiles(directory=export)),
                Route("/", page),
                Route("/viewer", page),
                Route("/viewer/dicomjson", page),
                Mount("/", app=StaticFiles(directory=dist)),
            ]
        )
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config_ = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config_)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> _Site:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "site did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture(scope="module")
def archive(corpus: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ohif")
    copy_corpus(corpus, [SERIES], root / "files")
    dfl.scan(root / "files").to_parquet(root / "catalog.parquet")
    return root


@pytest.fixture(scope="module")
def site(archive: Path) -> Iterator[_Site]:
    dist = _fetch_ohif()
    export = archive / "export"
    port = free_port()
    # the manifest holds absolute URLs: the export is written for the site's own address
    done = subprocess.run(
        [sys.executable, "-m", "dicomflow", "export", str(archive / "catalog.parquet"),
         str(export), "--format", "dicomweb", "--base-url", f"http://127.0.0.1:{port}/export"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with _Site(dist, archive / "catalog.parquet", export, port) as site:
        yield site


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


class _Watch:
    """What a page asks of the site and what goes wrong on it."""

    def __init__(self, page, prefix: str) -> None:
        self.answers: list[tuple[str, int]] = []
        self.errors: list[str] = []
        page.on(
            "response",
            lambda r: self.answers.append((r.url, r.status)) if prefix in r.url else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )

    def count(self, part: str) -> int:
        return sum(part in url for url, _ in self.answers)

    def failed(self) -> list[tuple[str, int]]:
        return [(url, status) for url, status in self.answers if status >= 400]


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _viewport(page) -> np.ndarray:
    shot = page.locator("canvas.cornerstone-canvas").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)


def _keep(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    artifacts = os.environ.get("DICOMFLOW_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)


def _shows_the_ct(page, watch: _Watch, tmp_path: Path, name: str) -> None:
    page.wait_for_selector("canvas.cornerstone-canvas", timeout=180_000)
    # a CT slice has dark air around bright bone: its pixels spread widely; an empty or
    # still-loading viewport is one flat colour
    _wait(lambda: _viewport(page).std() > 20, 180, "the viewport to show the CT")
    first = _viewport(page)
    _keep(page, tmp_path, f"{name}-first")
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(8):
        page.mouse.wheel(0, 120)
        time.sleep(0.2)
    _wait(
        lambda: np.abs(_viewport(page) - first).mean() > 2, 120, "scrolling to show another slice"
    )
    _keep(page, tmp_path, f"{name}-scrolled")
    assert not watch.failed(), watch.failed()
    assert not watch.errors, watch.errors


def test_ohif_opens_a_study_served_by_dicomflow(site: _Site, browser, archive: Path, tmp_path):
    catalog = pl.read_parquet(archive / "catalog.parquet")
    study = catalog["study_instance_uid"][0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = _Watch(page, "/dicom-web/")
    page.goto(f"{site.url}/viewer?StudyInstanceUIDs={study}")
    _shows_the_ct(page, watch, tmp_path, "serve")
    assert watch.count("/metadata") >= 1
    assert watch.count("/frames/") >= 2  # the slice shown first and the ones scrolled to
    page.close()


def test_ohif_study_list_from_dicomflow_serve(site: _Site, browser, archive: Path, tmp_path):
    catalog = pl.read_parquet(archive / "catalog.parquet").filter(pl.col("error").is_null())
    description = catalog["StudyDescription"][0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = _Watch(page, "/dicom-web/")
    page.goto(f"{site.url}/")
    row = page.get_by_text(description, exact=True).first
    row.wait_for(timeout=60_000)
    _keep(page, tmp_path, "study-list")
    # the list's instance count is the catalog's readable rows (one file of the folder is not
    # DICOM), as QIDO-RS answered it
    assert page.get_by_text(str(catalog.height), exact=True).count() >= 1
    assert watch.count("/dicom-web/studies") >= 1
    assert not watch.failed(), watch.failed()
    assert not watch.errors, watch.errors
    page.close()


def test_ohif_opens_the_static_export(site: _Site, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = _Watch(page, "/export/")
    page.goto(f"{site.url}/viewer/dicomjson?url={site.url}/export/ohif.json")
    _shows_the_ct(page, watch, tmp_path, "static")
    assert watch.count("/export/ohif.json") >= 1
    assert watch.count("/instance.dcm") >= 2
    page.close()
