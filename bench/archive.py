"""ZIP streaming benchmark: N originals through `stream_archive`, timed, with peak memory.

Needs no database: the plan is built in memory over a local folder of synthetic originals
(random-pixel JPEGs, which no compression shrinks), so what is measured is reading, inserting
the recipe and writing the ZIP.

Run: `.venv/bin/python -m bench.archive` (`--images`, `--side` in pixels). Prints the figures.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from PIL import Image as PILImage

from app.bulk.archive import ArchivePlan, Entry, stream_archive
from app.storage import LocalStorage


def _original(side: int) -> bytes:
    picture = PILImage.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=512, help="pixels per side of each image")
    args = parser.parse_args()
    data = _original(args.side)
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as root:
        storage = LocalStorage(Path(root))
        plan = ArchivePlan()
        for i in range(args.images):
            job_id = uuid.uuid4()
            key = f"teams/bench/{job_id}/original.jpg"
            storage.put(key, data, "image/jpeg")
            recipe = {"prompt": f"frame {i}", "model": "flux-2-pro", "seed": i, "width": 1024}
            plan.entries.append(
                Entry(
                    job_id, key, f"frame-{i}.jpg", recipe, Decimal("3"), "bench", datetime.now(UTC)
                )
            )
        tracemalloc.start()
        started = time.perf_counter()
        total = sum(len(piece) for piece in stream_archive(plan, storage))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"images            {args.images}")
    print(f"image size        {len(data) / 1e3:.0f} KB")
    print(f"archive           {total / 1e6:.1f} MB")
    print(f"time              {elapsed:.2f} s ({total / 1e6 / elapsed:.0f} MB/s)")
    print(f"traced peak       {peak / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
