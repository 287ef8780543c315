"""`python -m bench [PART ...] [--repeats N]`: run benchmarks on the simulated pair and write their JSON into
bench/results/, then bench/RESULTS.md from all the JSON there (`make bench`; see bench/RESULTS.md).

Parts: failover (four methods, N runs each on fresh pairs), tool (the tool's overhead, the proxy's, and
phases 1-2 at growing seed sizes), basebackup (the tool's against bare pg_basebackup, A/B, and
compression). `--repeats` sets the failover runs per method (5 by default; fewer for a quick look).
`python -m bench report` only writes RESULTS.md again.
"""

from __future__ import annotations

import argparse
import time

from . import basebackup, failover, results, tool
from .common import save, say

PARTS = ("basebackup", "tool", "failover")  # the quick ones first


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "parts", nargs="*", help=f"of {', '.join(PARTS)} or report; all parts when none is named"
    )
    parser.add_argument("--repeats", type=int, default=5, help="failover runs per method (default 5)")
    parser.add_argument(
        "--sizes",
        default="small,medium,5000",
        help="seed sizes for the scale figures (SEED_SIZE values; default small,medium,5000)",
    )
    parser.add_argument("--samples", type=int, default=200, help="requests per path for the proxy overhead")
    parser.add_argument(
        "--backups",
        default="medium:180,medium:10000",
        help="SEED_SIZE:SEED_TEXT_BYTES pairs for the base backup A/B (medium:10000 is ~2 GB)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="A/B rounds of the base backup per size (even: each side goes first in half)",
    )
    args = parser.parse_args()
    unknown = set(args.parts) - {*PARTS, "report"}
    if unknown:
        parser.error(f"no part {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)} or report")
    failed = []
    began = time.monotonic()
    for part in args.parts or PARTS:
        started = time.monotonic()
        try:
            measured = run_part(part, args)
        except (Exception, SystemExit) as error:  # the other parts still run; this one's JSON stays as it was
            say(f"{part} failed: {error}")
            failed.append(part)
            continue
        if measured:
            seconds = round(time.monotonic() - started)
            save(part, measured[1], {**measured[0], "bench_seconds": seconds})
            say(f"{part} took {seconds} s")
    if not args.parts and not failed:  # the whole run: how long `make bench` takes, for RESULTS.md
        command = (
            f"make bench REPEATS={args.repeats} SIZES={args.sizes} SAMPLES={args.samples} "
            f"BACKUPS={args.backups} ROUNDS={args.rounds}"
        )
        save("whole", command, {"bench_seconds": round(time.monotonic() - began), "parts": list(PARTS)})
    results.write()
    return 1 if failed else 0


def run_part(part: str, args) -> tuple[dict, str] | None:
    """One part's figures and the command that reproduces them (None for `report`)."""
    if part == "failover":
        return failover.run(args.repeats), f"make bench PARTS=failover REPEATS={args.repeats}"
    if part == "tool":
        command = f"make bench PARTS=tool SIZES={args.sizes} SAMPLES={args.samples}"
        return tool.run(args.sizes.split(","), args.samples), command
    if part == "basebackup":
        sizes = [(size, int(text)) for size, text in (x.split(":") for x in args.backups.split(","))]
        command = f"make bench PARTS=basebackup BACKUPS={args.backups} ROUNDS={args.rounds}"
        return basebackup.run(sizes, args.rounds), command
    return None


if __name__ == "__main__":
    raise SystemExit(main())
