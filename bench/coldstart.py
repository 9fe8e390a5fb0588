"""What a cold Lambda process of the HTTP API spends importing, measured with
`python -X importtime` in fresh processes.

    .venv/bin/python bench/coldstart.py [--runs 15] [--top 10] [--budget 300]

Three imports, each --runs times (interleaved, so that a busy moment of the machine hits them
alike), median and 90th percentile of the cumulative milliseconds:

1. handler: `tidings.entrypoints.aws_lambda.http`, what Lambda imports while it initialises
   the function; the budget (--budget ms) applies to this one;
2. handler + app: the handler and what its first request imports before the app can answer
   (the FastAPI app without its streams, the composition root, the settings): with (1), what
   a cold start imports in all, less the store's own driver or SDK;
2b. the same with the DynamoDB store and its SDK (aiobotocore): everything a cold start of the
   API function imports before it answers;
3. baseline: `tidings.entrypoints.http.app`, the app module as `tidings serve` imports it.

"Cumulative" is the sum of the import times `-X importtime` reports for what the code under
test imported: the interpreter's own start-up imports (those of `python -c pass`) are left out.
For each, the --top modules by their own import time (median over the runs), with the median
cumulative time of each (itself and what it imported first).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field

LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\| ( *)(\S+)\s*$")

TARGETS = {
    "handler": ["tidings.entrypoints.aws_lambda.http"],
    "handler + app": ["tidings.entrypoints.aws_lambda.http", "tidings.entrypoints.http.app",
                      "tidings.bootstrap", "tidings.settings"],
    "handler + app + store": ["tidings.entrypoints.aws_lambda.http", "tidings.entrypoints.http.app",
                              "tidings.bootstrap", "tidings.settings",
                              "tidings.adapters.store.dynamodb.store", "aiobotocore.session"],
    "baseline (http.app)": ["tidings.entrypoints.http.app"],
}


@dataclass
class Run:
    total_us: int
    own: dict[str, int] = field(default_factory=dict)
    cumulative: dict[str, int] = field(default_factory=dict)


def importtime(code: str) -> list[tuple[int, int, int, str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, check=True)
    out = []
    for line in done.stderr.splitlines():
        found = LINE.match(line)
        if found:
            own, cumulative, indent, name = found.groups()
            out.append((int(own), int(cumulative), len(indent), name))
    return out


def startup_modules() -> set[str]:
    return {name for *_, name in importtime("pass")}


def measure(modules: list[str], startup: set[str]) -> Run:
    lines = importtime("; ".join(f"import {m}" for m in modules))
    run = Run(total_us=sum(cum for _, cum, depth, name in lines
                           if depth == 0 and name not in startup))
    for own, cum, _, name in lines:
        if name not in startup:
            run.own[name] = own
            run.cumulative[name] = cum
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, runs: list[Run], top: int) -> float:
    totals = [r.total_us / 1000 for r in runs]
    median = statistics.median(totals)
    print(f"\n{label}: median {median:.0f} ms, p90 {percentile(totals, 0.9):.0f} ms "
          f"(min {min(totals):.0f}, max {max(totals):.0f}, {len(runs)} runs)")
    own: dict[str, list[int]] = defaultdict(list)
    cumulative: dict[str, list[int]] = defaultdict(list)
    for r in runs:
        for name, us in r.own.items():
            own[name].append(us)
            cumulative[name].append(r.cumulative[name])
    ranked = sorted(own, key=lambda n: statistics.median(own[n]), reverse=True)[:top]
    print(f"  {'module':<48} {'own ms':>7} {'cumulative ms':>14}")
    for name in ranked:
        print(f"  {name:<48} {statistics.median(own[name]) / 1000:>7.1f} "
              f"{statistics.median(cumulative[name]) / 1000:>14.1f}")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--budget", type=float, default=300.0, help="ms, for the handler")
    args = parser.parse_args()
    startup = startup_modules()
    runs: dict[str, list[Run]] = {label: [] for label in TARGETS}
    for _ in range(args.runs):
        for label, modules in TARGETS.items():
            runs[label].append(measure(modules, startup))
    print(f"python {sys.version.split()[0]}, -X importtime, {args.runs} fresh processes each")
    medians = {label: report(label, runs[label], args.top) for label in TARGETS}
    handler = medians["handler"]
    verdict = "within" if handler <= args.budget else "OVER"
    print(f"\nhandler import: {handler:.0f} ms median, {verdict} the {args.budget:.0f} ms budget; "
          f"the first request then imports {medians['handler + app'] - handler:.0f} ms more "
          f"(baseline http.app: {medians['baseline (http.app)']:.0f} ms)")


if __name__ == "__main__":
    main()
