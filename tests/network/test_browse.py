"""The browse page of ``dicomflow serve``, in headless Chromium (the Debian package, driven by
Playwright; no browser is downloaded): the command serves a catalog of corpus files behind a
token, the page loads, a facet filters the list, a series opens and its slices scroll, and the
progress panel follows a progress file. Expected values come from the catalog (polars), never
from the page. Screenshots are kept under the test's folder, and copied to
``$DICOMFLOW_ARTIFACTS/browse`` when that is set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

import dicomflow as dfl
from dicomflow.runtime import ProgressEvent, ProgressFile
from dicomflow.sample import make_sample

from .conftest import copy_corpus, free_port, wait_until

sync_api = pytest.importorskip("playwright.sync_api")

CORPUS_FILES = (
    "series/dcm_qa_ct_ge",  # 28 CT slices: the series opened and scrolled
    "modality/RTDOSE/rtdose_rle.dcm",
    "modality/SR/test-SR.dcm",  # no image: no thumbnail asked for
    "charsets/chrRuss.dcm",
)
# PEERS.md section 7: no background networking (this machine reaches no other host)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN_ENV = "DICOMFLOW_BROWSE_TOKEN"
TOKEN = "browse-token"
CT_SERIES_FOLDER = "dcm_qa_ct_ge"


@pytest.fixture(scope="module")
def archive(corpus: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browse")
    copy_corpus(corpus, CORPUS_FILES, root / "corpus")
    make_sample(root / "sample")
    # one series whose only instance is cut inside its Pixel Data: a row with an error
    first = sorted((root / "corpus" / "series" / CT_SERIES_FOLDER).iterdir())[0]
    ds = dcmread(first)
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesNumber = 99
    cut = root / "cut" / "cut.dcm"
    cut.parent.mkdir()
    ds.save_as(cut, enforce_file_format=True)
    cut.write_bytes(cut.read_bytes()[:3000])
    dfl.scan(root).to_parquet(root / "catalog.parquet")
    return root


@pytest.fixture(scope="module")
def catalog(archive: Path) -> pl.DataFrame:
    """The cataloged rows the server can name (all three UIDs)."""
    return pl.read_parquet(archive / "catalog.parquet").filter(
        pl.col("sop_instance_uid").is_not_null()
        & pl.col("series_instance_uid").is_not_null()
        & pl.col("study_instance_uid").is_not_null()
    )


def _slice_order(rows: pl.DataFrame) -> list[str]:
    """SOP Instance UIDs along the normal of the image plane (the scroller's order)."""
    keyed = []
    for row in rows.iter_rows(named=True):
        o = np.array(row["ImageOrientationPatient"], float)
        normal = np.cross(o[:3], o[3:])
        keyed.append((float(np.dot(np.array(row["ImagePositionPatient"], float), normal)),
                      row["sop_instance_uid"]))  # fmt: skip
    return [sop for _, sop in sorted(keyed)]


def _artefacts(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def _keep(folder: Path) -> None:
    extra = os.environ.get("DICOMFLOW_ARTIFACTS")
    if extra:
        shutil.copytree(folder, Path(extra) / "browse", dirs_exist_ok=True)


def test_browse_page_in_chromium(archive: Path, catalog: pl.DataFrame, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: bash scripts/system-deps.sh")
    run_folder = tmp_path / "out.manifests"
    progress_file = run_folder / "progress.json"
    # a run still going (not closed: the file says running)
    ProgressFile(progress_file, every=0)(
        ProgressEvent("running", unit="instances", done=12, total=40, failed=3, elapsed=6.0)
    )

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "serve", str(archive / "catalog.parquet"),
         "--port", str(port), "--token-env", TOKEN_ENV, "--progress", str(run_folder)],
        env={**os.environ, TOKEN_ENV: TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    shots = _artefacts(tmp_path)
    problems: list[str] = []
    requested: list[str] = []
    try:

        def up() -> bool:
            return httpx.get(f"{url}/", timeout=1).status_code == 200

        wait_until(up, 60, "dicomflow serve", proc)
        # the page's own files need no token; the data does
        assert httpx.get(f"{url}/browse/app.js").status_code == 200
        assert httpx.get(f"{url}/facets").status_code == 401
        assert httpx.get(f"{url}/progress").status_code == 401

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
                page.on("request", lambda r: requested.append(r.url))
                _browse(page, url, catalog, progress_file, shots)
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
        _keep(shots)
    assert not problems, problems
    outside = [u for u in requested if not u.startswith((url + "/", "blob:", "data:"))]
    assert not outside, f"the page fetched from elsewhere: {outside}"
    assert {p.name for p in shots.iterdir()} >= {"list.png", "filtered.png", "series.png",
                                                  "progress.png"}  # fmt: skip


def _until(page, script: str, arg: object = None, timeout: float = 30.0) -> None:
    """Wait until ``script`` (a function of ``arg``) is true in the page. Polled from here:
    Playwright's own wait_for_function evaluates text, which the page's policy forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s: {script}")
        page.wait_for_timeout(50)


def _ready(page, before: str | None) -> str:
    """Wait until the list was rebuilt after ``before`` (its data-ready counter)."""
    _until(page, "b => { const r = document.getElementById('list').dataset.ready;"
                 " return r !== undefined && r !== b; }", before)  # fmt: skip
    return page.get_attribute("#list", "data-ready")


def _listed(page) -> set[str]:
    return set(page.eval_on_selector_all(".study", "els => els.map(e => e.dataset.study)"))


def _browse(page, url: str, catalog: pl.DataFrame, progress_file: Path, shots: Path) -> None:
    # the token is given once in the address, kept for the tab, and gone from the address
    page.goto(f"{url}/?token={TOKEN}")
    ready = _ready(page, None)
    assert "token" not in page.url
    every = set(catalog["study_instance_uid"].unique())
    assert _listed(page) == every
    _until(page, "() => document.querySelectorAll('img.thumb[data-loaded]').length > 0")
    page.screenshot(path=shots / "list.png", full_page=True)

    # a facet: CT only lists the studies with a CT series (the catalog says which)
    ct = set(catalog.filter(pl.col("Modality") == "CT")["study_instance_uid"].unique())
    assert ct and ct < every
    page.locator('.facet[data-key="Modality"] input[value="CT"]').check()
    ready = _ready(page, ready)
    assert _listed(page) == ct
    page.screenshot(path=shots / "filtered.png", full_page=True)

    # the study date: from one date on, with CT still chosen
    dates = sorted(set(catalog["StudyDate"].drop_nulls()))
    since = dates[len(dates) // 2]
    recent = set(
        catalog.filter((pl.col("Modality") == "CT") & (pl.col("StudyDate") >= since))[
            "study_instance_uid"
        ]
    )
    assert recent and recent < ct
    page.fill("#date-from", f"{since:%Y-%m-%d}")
    ready = _ready(page, ready)
    assert _listed(page) == recent

    # the errors facet: only the series holding a row with an error
    failed = set(catalog.filter(pl.col("error").is_not_null())["series_instance_uid"])
    assert failed
    page.locator("#clear").click()
    ready = _ready(page, ready)
    assert _listed(page) == every
    page.locator("#errors-only").check()
    ready = _ready(page, ready)
    shown = set(page.eval_on_selector_all(".series", "els => els.map(e => e.dataset.series)"))
    assert shown == failed
    page.locator("#errors-only").uncheck()
    ready = _ready(page, ready)

    # a series opens on its middle slice, in slice order; the arrow keys, the wheel and the
    # slider move through it, and the image shown changes
    rows = catalog.filter(pl.col("uri").str.contains(CT_SERIES_FOLDER) & pl.col("error").is_null())
    series = rows["series_instance_uid"][0]
    order = _slice_order(rows.filter(pl.col("series_instance_uid") == series))
    assert len(order) == 28
    page.locator(f'li.series[data-series="{series}"] button').click()
    middle = len(order) // 2
    _at(page, middle, order)
    before = page.locator("#slice").screenshot()
    page.keyboard.press("ArrowDown")
    _at(page, middle + 1, order)
    assert page.locator("#slice").screenshot() != before
    page.locator("#stage").hover()
    page.mouse.wheel(0, 120)
    _at(page, middle + 2, order)
    page.locator("#slider").fill("0")
    _at(page, 0, order)
    assert page.inner_text("#slice-label") == f"slice 1 / {len(order)}"
    page.screenshot(path=shots / "series.png")

    # the progress panel shows the file, and follows it when it changes
    panel = page.locator("#progress")
    assert panel.is_visible()
    task = page.locator("#tasks .task")
    assert task.count() == 1 and task.get_attribute("data-state") == "running"
    assert page.inner_text("#tasks .task .state") == "running"
    text = panel.inner_text()
    assert "12/40 instances (30%)" in text and "3 failed" in text and "2.0 instances/s" in text
    with ProgressFile(progress_file, every=0) as tracked:
        tracked(ProgressEvent("running", unit="instances", done=40, total=40, failed=3,
                              elapsed=20.0, finished=True))  # fmt: skip
    _until(page, "() => document.querySelector('#tasks .task[data-state=finished]') !== null")
    assert "40/40 instances (100%)" in panel.inner_text()
    assert page.inner_text("#tasks .task .state") == "finished"
    page.screenshot(path=shots / "progress.png")


def _at(page, index: int, order: list[str]) -> None:
    """Wait until slice ``index`` is shown, and check it is that instance's image."""
    _until(page, "i => document.getElementById('slice').dataset.index === String(i)", index)
    assert page.get_attribute("#slice", "data-sop") == order[index]
    assert page.get_attribute("#slice", "data-frame") == "1"
