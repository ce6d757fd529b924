"""The measured inputs of the 100-worker estimate in ``docs/performance.md``.

On a local ``dask.distributed`` cluster (2 worker processes, 1 thread each) it measures:

* the scheduler's cost per task: ``--tasks`` no-op tasks submitted at once, wall time / tasks
  (this is the cluster's task throughput, the figure the estimate divides by);
* a scan of a synthetic archive (``benchmarks/synth.py``, small pixels) run on that cluster and in
  this process: files/s both ways, the tasks it made (one per batch), bytes read per instance, and
  the catalog's bytes per row in Arrow and in Parquet.

Then it prints the estimate for ``--workers`` workers over an object store with the latency and
bandwidth given (defaults: 20 ms first byte, 80 MB/s per worker; change them for your store).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_cluster.py [--n 2000 --tasks 5000 --workers 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _summary import record  # benchmarks/ is on sys.path when run as a script
from synth import ensure_archive

ROOT = Path(__file__).resolve().parent.parent


def _noop(i: int) -> int:
    return i


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="files in the archive (2000)")
    parser.add_argument("--tasks", type=int, default=5000, help="no-op tasks timed (5000)")
    parser.add_argument("--workers", type=int, default=100, help="workers of the estimate")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="object store first byte")
    parser.add_argument("--mbps", type=float, default=80.0, help="MB/s per worker from the store")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--prefix", type=int, default=64 * 1024,
                        help="first read of an object over a URL (64 KiB)")  # fmt: skip
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq
    from dask.distributed import Client, LocalCluster

    import dicomflow as dfl

    archive = ROOT / ".bench" / f"cluster-small-n{args.n}"
    files, how = ensure_archive(archive, args.n, seed=0, pixels="small")
    print(f"archive: {len(files)} files ({how}); {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        with Client(cluster) as client:
            client.gather(client.map(_noop, range(100)))  # warm the workers
            start = time.perf_counter()
            client.gather(client.map(_noop, range(args.tasks), pure=False))
            per_task = (time.perf_counter() - start) / args.tasks
            dfl.scan(str(archive), client=client, batch_size=args.batch_size).to_arrow()  # warm
            start = time.perf_counter()
            cat = dfl.scan(str(archive), client=client, batch_size=args.batch_size)
            table = cat.to_arrow()
            on_cluster = time.perf_counter() - start
    start = time.perf_counter()
    local = dfl.scan(str(archive), workers=1, batch_size=args.batch_size)
    local.to_arrow()
    in_process = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c.parquet"
        pq.write_table(table, out)
        parquet_bytes = out.stat().st_size
    rows = table.num_rows
    tasks = -(-rows // args.batch_size)
    read_per_file = cat.stats.bytes_read / max(cat.stats.files, 1)
    mean_size = sum(os.path.getsize(f) for f in files) / len(files)
    # a URL's first read is the whole prefix (a local file's is smaller: growing is cheap there)
    remote_read = max(read_per_file, min(args.prefix, mean_size))
    print(f"scheduler: {per_task * 1e3:.2f} ms per task ({1 / per_task:,.0f} tasks/s), "
          f"{args.tasks} no-op tasks on 2 workers")  # fmt: skip
    print(f"scan: {rows / on_cluster:,.0f} files/s on the cluster (2 workers, {tasks} tasks), "
          f"{rows / in_process:,.0f} files/s in process (1 worker)")  # fmt: skip
    print(f"bytes read per instance {read_per_file:,.0f} here, {remote_read:,.0f} over a URL "
          f"(files of {mean_size:,.0f} B)")  # fmt: skip
    print(f"catalog {table.nbytes / rows:,.0f} B/row "
          f"in Arrow, {parquet_bytes / rows:,.0f} B/row in Parquet")  # fmt: skip
    record("cluster", "scheduler cost per task", per_task * 1e3, unit="ms")
    record("cluster", "catalog bytes per row (Parquet)", parquet_bytes / rows, unit="B")

    # the estimate: a worker reads its batch's prefixes concurrently (fsspec cat_ranges), so a
    # batch costs one round of latency plus its bytes over the worker's bandwidth plus the
    # parse, and the scheduler hands out tasks at its measured rate
    parse = in_process / rows
    batch = args.batch_size
    per_batch = args.latency_ms / 1e3 + batch * remote_read / (args.mbps * 1e6) + batch * parse
    workers_rate = args.workers * batch / per_batch
    scheduler_rate = batch / per_task
    rate = min(workers_rate, scheduler_rate)
    print(f"\nestimate for {args.workers} workers, {args.latency_ms:.0f} ms first byte, "
          f"{args.mbps:.0f} MB/s per worker, batches of {batch}:")  # fmt: skip
    print(
        f"  one batch: {per_batch:.2f} s ({args.latency_ms:.0f} ms latency, "
        f"{batch * remote_read / (args.mbps * 1e6):.2f} s transfer, {batch * parse:.2f} s parse)"
    )
    print(f"  workers could do {workers_rate:,.0f} files/s; the scheduler hands out "
          f"{scheduler_rate:,.0f} files/s of tasks")  # fmt: skip
    print(
        f"  so about {rate:,.0f} files/s: 1,000,000 files in {1e6 / rate / 60:.1f} min, "
        f"{'bound by the workers' if workers_rate < scheduler_rate else 'bound by the scheduler'}"
    )
    record("cluster", f"estimated scan rate, {args.workers} workers", rate, unit="files/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
