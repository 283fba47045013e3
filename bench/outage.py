"""BFL outage run: how fast the queue drains after BFL returns, against an undisturbed run.

    .venv/bin/python -m bench.outage --jobs 40 --latency 1 --cap 8 --outage-at 3 --outage-for 30

Runs `bench.pipeline` twice with the same work, each in a process (and database) of its own:
once undisturbed, once with BFL answering 503 to everything for `--outage-for` seconds from
`--outage-at` seconds after the jobs were queued. Prints both and appends them to
bench/RESULTS.md with the date, the command and the machine's load: the time from BFL's return
to the last image stored, against the time the undisturbed run needed for the same number of
jobs; every job's outcome; and the POSTs BFL refused per job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
JSON_DIR = ROOT / "bench" / "results"


def _run(extra: list[str], common: list[str], name: str) -> dict[str, Any]:
    target = JSON_DIR / name
    subprocess.run(
        [sys.executable, "-m", "bench.pipeline", *common, *extra, f"--results={target}"],
        cwd=ROOT,
        check=True,
    )
    result: dict[str, Any] = json.loads(target.read_text())
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--cap", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--outage-at", type=float, default=3.0)
    parser.add_argument("--outage-for", type=float, default=30.0)
    args = parser.parse_args(argv)
    command = "python -m bench.outage " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = os.getloadavg()
    common = [
        f"--jobs={args.jobs}",
        f"--latency={args.latency}",
        f"--cap={args.cap}",
        f"--workers={args.workers}",
        f"--concurrency={args.concurrency}",
        f"--size={args.size}",
    ]
    calm = _run([], common, "outage-undisturbed.json")
    stormy = _run(
        [f"--outage-at={args.outage_at}", f"--outage-for={args.outage_for}"],
        common,
        "outage-disturbed.json",
    )
    load_after = os.getloadavg()

    outage = stormy["outage"] or {}
    left = outage.get("jobs_left_when_bfl_returned") or 0
    # What the undisturbed run needed for that many jobs, at its own pace.
    undisturbed_for_left = round(left / calm["jobs_per_s"], 2) if calm["jobs_per_s"] else None
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpu_count": os.cpu_count(),
        "undisturbed_span_s": calm["span_s"],
        "undisturbed_jobs_per_s": calm["jobs_per_s"],
        "jobs_left_when_bfl_returned": left,
        "drain_after_return_s": outage.get("drain_after_return_s"),
        "undisturbed_time_for_as_many_jobs_s": undisturbed_for_left,
        "statuses_undisturbed": calm["statuses"],
        "statuses_with_outage": stormy["statuses"],
        "accepted_posts_with_outage": stormy["accepted_posts"],
        "refused_posts_with_outage": stormy["refused_posts"],
        "refused_posts_per_job": stormy["refused_posts_per_job"],
    }
    print(json.dumps(summary, indent=2))
    _record(summary, args)
    return summary


def _record(summary: dict[str, Any], args: argparse.Namespace) -> None:
    load = summary["load_average_before"]
    lines = [
        "",
        f"## Outage (`bench/outage.py`), {summary['date'][:10]}",
        "",
        f"`.venv/bin/{summary['command']}`",
        f"({args.jobs} jobs, BFL latency {args.latency:g} s, cap {args.cap}; BFL answers 503 to",
        f"everything from {args.outage_at:g} s after queueing, for {args.outage_for:g} s).",
        f"Machine: {summary['cpu_count']} cores, load average {load[0]} at the start,",
        f"{summary['load_average_after'][0]} at the end.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| undisturbed run, queued → last stored | {summary['undisturbed_span_s']} s |",
        f"| jobs still unfinished when BFL returned | {summary['jobs_left_when_bfl_returned']} |",
        f"| BFL back → last stored | {summary['drain_after_return_s']} s |",
        "| the undisturbed run's time for as many jobs | "
        f"{summary['undisturbed_time_for_as_many_jobs_s']} s |",
        f"| outcomes with the outage | {summary['statuses_with_outage']} |",
        f"| accepted POSTs with the outage | {summary['accepted_posts_with_outage']} |",
        f"| refused POSTs (by status) | {summary['refused_posts_with_outage']} |",
        f"| refused POSTs per job | {summary['refused_posts_per_job']} |",
        "",
    ]
    with RESULTS_MD.open("a") as results:
        results.write("\n".join(lines))


if __name__ == "__main__":
    main()
