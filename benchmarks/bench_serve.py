"""Serve benchmark: QIDO-RS latency on a 1,000,000-row catalog, and frames/s against Orthanc.

Two measurements, one run:

* **QIDO latency**: a generated catalog of ``--rows`` instances (default 1,000,000: studies of
  5 series of 10 instances, 20,000 studies) is built in memory (no files: QIDO never opens
  one), loaded into :class:`CatalogIndex`, and served by ``dicomflow serve`` in a child
  process. Filtered study lists (a date range and a modality; a patient name wildcard; an
  accession number) and the browse page's ``/facets`` are timed over HTTP, median of
  ``--repeat`` requests each, from request to the parsed JSON. Target: < 100 ms.
* **frames/s**: ``--files`` 512 x 512 CT instances (``benchmarks/synth.py``, native 16-bit)
  are cataloged and served by ``dicomflow serve`` (child process) and loaded into Orthanc with
  its DICOMweb plugin (the recipe of the network tests, ``tests/network/conftest.py``); then
  ``--clients`` concurrent clients (threads, one ``httpx.Client`` each) fetch single frames
  (WADO-RS ``.../frames/1``, ``application/octet-stream``) of random instances for
  ``--seconds`` seconds from each server in turn; every frame's size is checked, and first
  that both send the stored frame's bytes. Target: >= 3x Orthanc.
* **Delta appends**: 2 writer processes append ``--delta-batches`` batches of
  ``--delta-rows`` catalog rows each (the generated catalog's columns) at once to one Delta
  Lake table through :class:`dicomflow.TableWriter` (batch ids checked, conflicts retried),
  against the baseline: the same 2 writers appending Parquet part files to one folder
  (``format="parquet"``, the same batch ids). Rows/s from the moment both writers start to
  the moment both finish, ``--delta-rounds`` rounds alternating the two; the range is shown.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_serve.py                 # 1,000,000 rows, 200 files
    .venv/bin/python benchmarks/bench_serve.py --rows 200000 --files 50 --seconds 3
    .venv/bin/python benchmarks/bench_serve.py --delta-only        # the Delta appends only
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
from _summary import record  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAME_ACCEPT = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}


def synthetic_catalog(rows: int, seed: int = 0) -> pl.DataFrame:
    """``rows`` instances: studies of 5 series x 10 instances, dates over 2015-2024."""
    rng = np.random.default_rng(seed)
    per_study = 50
    studies = max(rows // per_study, 1)
    n = studies * per_study
    study = np.repeat(np.arange(studies), per_study)
    series = study * 5 + np.tile(np.repeat(np.arange(5), 10), studies)
    days = rng.integers(0, 3650, studies)
    modality = np.array(["CT", "MR", "CR", "US", "PT"])[rng.integers(0, 5, studies)]
    first = np.array(["ANNA", "BEN", "CARLA", "DAVID", "EMMA", "FRANZ", "GRETA", "HUGO"])
    last = np.array(["SMITH", "MULLER", "ROSSI", "DUBOIS", "NOVAK", "GARCIA", "KOWALSKI"])
    pairs = zip(rng.integers(0, 7, studies), rng.integers(0, 8, studies), strict=True)
    names = [f"{last[a]}^{first[b]}" for a, b in pairs]
    frame = pl.DataFrame(
        {
            "study": study,
            "series": series,
            "instance": np.arange(n),
        }
    )
    base = pl.DataFrame(
        {
            "study": np.arange(studies),
            "StudyDate": np.datetime64("2015-01-01") + days.astype("timedelta64[D]"),
            "Modality": modality,
            "PatientName": names,
            "PatientID": [f"P{i // 2:07d}" for i in range(studies)],
            "AccessionNumber": [f"A{i:09d}" for i in range(studies)],
        }
    )
    return (
        frame.join(base, on="study")
        .with_columns(
            pl.format("2.25.1.{}", pl.col("study")).alias("study_instance_uid"),
            pl.format("2.25.2.{}", pl.col("series")).alias("series_instance_uid"),
            pl.format("2.25.3.{}", pl.col("instance")).alias("sop_instance_uid"),
            pl.format("/nowhere/{}.dcm", pl.col("instance")).alias("uri"),
            (pl.col("instance") % 10 + 1).cast(pl.Int64).alias("InstanceNumber"),
            pl.lit(None, pl.String).alias("error"),
        )
        .drop("study", "series", "instance")
    )


def _serve(source: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "serve", str(source), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/studies?limit=1", timeout=2).status_code < 300:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("dicomflow serve exited")
        time.sleep(0.2)
    raise RuntimeError("dicomflow serve did not start")


def qido(rows: int, repeat: int, workdir: Path) -> list[tuple[str, int, float]]:
    from tests.network.conftest import free_port

    t0 = time.perf_counter()
    catalog = synthetic_catalog(rows)
    catalog.write_parquet(workdir / "big.parquet")
    print(f"generated {catalog.height:,} rows in {time.perf_counter() - t0:.1f} s")
    port = free_port()
    t0 = time.perf_counter()
    proc = _serve(workdir / "big.parquet", port)
    print(f"dicomflow serve loaded and answered in {time.perf_counter() - t0:.1f} s")
    queries = {
        "StudyDate range + ModalitiesInStudy": "StudyDate=20230101-20230131&ModalitiesInStudy=CT",
        "PatientName wildcard": "PatientName=rossi*&limit=100",
        "AccessionNumber": f"AccessionNumber=A{rows // 100:09d}",
        "OHIF study list (first page)": "limit=101&offset=0&includefield=00081030,00080060",
        # the browse page's facets: every series counted, then under two keys
        "facets (browse page), no filter": "/facets",
        "facets, Modality + StudyDate range": "/facets?Modality=CT&StudyDate=20230101-20230131",
    }
    out = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
            for label, q in queries.items():
                times = []
                found = 0
                for _ in range(repeat):
                    t = time.perf_counter()
                    path = q if q.startswith("/") else f"/studies?{q}"
                    r = web.get(path, headers={"Accept": "application/dicom+json"})
                    answer = r.json() if r.status_code == 200 else []
                    found = answer["studies"] if isinstance(answer, dict) else len(answer)
                    times.append(time.perf_counter() - t)
                out.append((label, found, statistics.median(times) * 1000))
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def _hammer(url: str, targets: list[str], clients: int, seconds: float, size: int,
            headers: dict) -> tuple[int, float]:  # fmt: skip
    counts = [0] * clients
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def one(k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(base_url=url, timeout=60) as web:
            while time.monotonic() < stop:
                r = web.get(rng.choice(targets), headers=headers)
                if r.status_code != 200 or len(r.content) < size:
                    errors.append(f"{r.status_code} {len(r.content)}")
                    return
                counts[k] += 1

    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{url}: {len(errors)} bad answers, e.g. {errors[0]}")
    return sum(counts), sum(counts) / elapsed


def frames(files: int, clients: int, seconds: float, workdir: Path) -> dict[str, float]:
    import dicomflow as dfl
    from tests.network.conftest import Orthanc, free_port

    archive = workdir / "ct"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "synth.py"), str(archive),
                    "-n", str(files), "--seed", "3"], check=True, capture_output=True)  # fmt: skip
    dfl.scan(archive).to_parquet(workdir / "ct.parquet")
    catalog = pl.read_parquet(workdir / "ct.parquet")
    catalog = catalog.filter(pl.col("Rows") == 512)
    paths = [
        f"/studies/{a}/series/{b}/instances/{c}/frames/1"
        for a, b, c in catalog.select(
            "study_instance_uid", "series_instance_uid", "sop_instance_uid"
        ).iter_rows()
    ]
    size = 512 * 512 * 2
    print(f"{len(paths)} instances of 512 x 512, {clients} clients, {seconds:.0f} s each")
    port = free_port()
    proc = _serve(workdir / "ct.parquet", port)
    orthanc = Orthanc(workdir / "orthanc").start()
    try:
        orthanc.upload(sorted(archive.rglob("*.dcm")))
        # the same bytes from both: the stored frame (dicomflow.pixels locates it)
        from dicomflow.network.serve import stored_frame
        from dicomflow.pixels import row_refs

        first = catalog.row(0, named=True)
        expected = stored_frame(row_refs(first)[0])
        for url in (f"http://127.0.0.1:{port}", orthanc.dicomweb):
            body = httpx.get(url + paths[0], headers=FRAME_ACCEPT, timeout=60).content
            if expected not in body:
                raise RuntimeError(f"{url}: frame 1 is not the stored frame")
        result = {}
        for name, url in (("dicomflow", f"http://127.0.0.1:{port}"),
                          ("orthanc", orthanc.dicomweb)):  # fmt: skip
            _hammer(url, paths, clients, 1.0, size, FRAME_ACCEPT)  # warm up
            n, rate = _hammer(url, paths, clients, seconds, size, FRAME_ACCEPT)
            result[name] = rate
            print(f"  {name:10s} {n:6d} frames  {rate:8.1f} frames/s")
    finally:
        orthanc.kill()
        proc.terminate()
        proc.wait(10)
    return result


def _append_writer(fmt: str, uri: str, who: int, batches: int, rows: int, ready, go) -> None:
    """One writer process: its batches made first, then appended when ``go`` is set."""
    import pyarrow as pa

    from dicomflow import TableWriter

    table = synthetic_catalog(batches * rows, seed=who).to_arrow()
    uris = pa.array([f"/w{who}{u}" for u in table.column("uri").to_pylist()])
    table = table.set_column(table.schema.get_field_index("uri"), "uri", uris)
    parts = [table.slice(i * rows, rows) for i in range(batches)]
    writer = TableWriter(uri, fmt)
    ready.set()
    go.wait()
    for i, part in enumerate(parts):
        writer.append(part, f"w{who}-{i}")


def delta_appends(batches: int, rows: int, rounds: int, workdir: Path) -> dict[str, list[float]]:
    """Rows/s of 2 concurrent writers, Delta vs Parquet part files, rounds alternating."""
    import multiprocessing as mp

    from dicomflow import read_table

    ctx = mp.get_context("spawn")
    rates: dict[str, list[float]] = {"delta": [], "parquet": []}
    for r in range(rounds):
        for fmt in ("delta", "parquet") if r % 2 == 0 else ("parquet", "delta"):
            uri = str(workdir / f"append-{fmt}-{r}")
            go = ctx.Event()
            ready = [ctx.Event() for _ in range(2)]
            procs = [
                ctx.Process(target=_append_writer, args=(fmt, uri, w, batches, rows, ready[w], go))
                for w in range(2)
            ]
            for proc in procs:
                proc.start()
            for event in ready:
                event.wait(300)
            start = time.perf_counter()
            go.set()
            for proc in procs:
                proc.join()
            seconds = time.perf_counter() - start
            held = read_table(uri, fmt, columns=["uri"]).num_rows
            codes = [proc.exitcode for proc in procs]
            if any(codes):
                # a writer that fails is reported and its round left out (pyarrow's dataset
                # writer once aborted some at exit, after their appends: see performance.md)
                print(f"  round {r}: a {fmt} writer exited with {codes}, {held:,} rows held; "
                      "round not counted")  # fmt: skip
                rates[fmt].append(float("nan"))
                continue
            if held != 2 * batches * rows:
                raise SystemExit(f"{fmt}: {held:,} rows, expected {2 * batches * rows:,}")
            rates[fmt].append(2 * batches * rows / seconds)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-frames", action="store_true", help="QIDO latency only")
    parser.add_argument("--delta-batches", type=int, default=20, help="batches per writer")
    parser.add_argument("--delta-rows", type=int, default=5000, help="rows per batch")
    parser.add_argument("--delta-rounds", type=int, default=4)
    parser.add_argument("--skip-delta", action="store_true", help="no Delta appends")
    parser.add_argument("--delta-only", action="store_true", help="the Delta appends only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.skip_delta:
            print(f"== Delta appends, 2 writers x {args.delta_batches} batches x "
                  f"{args.delta_rows:,} rows, vs Parquet part files ({args.delta_rounds} rounds, "
                  "alternating)")  # fmt: skip
            rates = delta_appends(args.delta_batches, args.delta_rows, args.delta_rounds, workdir)
            for fmt, values in rates.items():
                values = [v for v in values if v == v]  # rounds counted (nan: left out)
                print(f"  {fmt:8s} {min(values):10,.0f} .. {max(values):10,.0f} rows/s  "
                      f"(median {statistics.median(values):,.0f})")  # fmt: skip
            pairs = zip(rates["delta"], rates["parquet"], strict=True)
            ratios = [d / p for d, p in pairs if d == d and p == p]
            print(f"  ratio delta / parquet: {min(ratios):.2f}x .. {max(ratios):.2f}x "
                  f"(median {statistics.median(ratios):.2f}x)")  # fmt: skip
            record("serve", "Delta appends, 2 writers, rows/s (median round)",
                   statistics.median(ratios), against="Parquet part files")  # fmt: skip
        if args.delta_only:
            return 0
        print(f"== QIDO-RS over {args.rows:,} rows (median of {args.repeat}, over HTTP)")
        for label, found, ms in qido(args.rows, args.repeat, workdir):
            verdict = "ok" if ms < 100 else "OVER TARGET"
            print(f"  {label:38s} {found:5d} studies  {ms:7.1f} ms  (target < 100 ms: {verdict})")
            record("serve", f"QIDO {label}, {args.rows:,} rows", ms, target=100.0,
                   lower_is_better=True, unit="ms")  # fmt: skip
        if not args.skip_frames:
            print("== WADO-RS frames/s, dicomflow serve vs Orthanc DICOMweb")
            rates = frames(args.files, args.clients, args.seconds, workdir)
            ratio = rates["dicomflow"] / rates["orthanc"]
            verdict = "ok" if ratio >= 3 else "UNDER TARGET"
            print(f"  ratio dicomflow / orthanc: {ratio:.2f}x  (target >= 3x: {verdict})")
            record("serve", f"frames/s, {args.clients} clients", ratio, target=3.0,
                   against="Orthanc DICOMweb")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
