"""Run the random-architecture conversion fuzzer and count outcomes.

Each case is a small random HGQ model (see ``tests/fuzz_models.py``) that is trained
briefly, calibrated, and deployed on both paths: converted with hls4ml, compiled and
its C simulation compared bit for bit with Keras; traced into alkaid (``HGQ.rtl``) and
its interpreter compared likewise (one case in five also through verilator).
Outcomes per path: exact, refused (a documented HGQ error), warned, mismatch, crash.

    python bench/fuzz.py --seed 1000 --count 200 [--keep-going] [--json out.json]
    python bench/fuzz.py --case 1005        # one case, verbosely, with its traceback

Without ``--keep-going`` the run stops at the first mismatch or crash (useful while
fixing one); with it, every case runs and the table at the end lists them all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hls4ml imports TensorFlow if present
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz_models  # noqa: E402  (needs the tests directory on the path)

BAD_OUTCOMES = ("mismatch", "crash")


def run_one_verbose(seed: int) -> int:
    """Re-run one case with the model summary and the library's output; 1 if it failed."""
    result = fuzz_models.run_case(seed, verbose=True)
    print(result.summary())
    if result.traceback:
        print(result.traceback)
    for kind, (differ, total) in result.mismatches.items():
        print(f"  {kind:20s} {differ}/{total} outputs differ")
    print(f"{result.seconds:.1f} s")
    return 1 if failed(result) else 0


def failed(result: fuzz_models.Result) -> bool:
    return result.outcome in BAD_OUTCOMES or result.rtl_outcome in BAD_OUTCOMES


def fuzzing_outcomes() -> tuple[str, ...]:
    return (*fuzz_models.OUTCOMES, "skipped")


def report(results: list[fuzz_models.Result], wall: float) -> str:
    """The outcome table, then every non-exact case with its seed and first error line."""
    hls = Counter(r.outcome for r in results)
    rtl = Counter(r.rtl_outcome for r in results)
    verilated = [r for r in results if r.verilated]
    lines = [f"{len(results)} cases in {wall:.0f} s ({wall / max(len(results), 1):.1f} s/case)"]
    lines.append(f"  {'outcome':9s} {'hls4ml':>7s} {'rtl':>7s}")
    for outcome in (*fuzzing_outcomes(),):
        lines.append(f"  {outcome:9s} {hls.get(outcome, 0):7d} {rtl.get(outcome, 0):7d}")
    lines.append(
        f"  rtl cases also simulated with verilator: {len(verilated)} "
        f"({sum(r.rtl_outcome == 'exact' for r in verilated)} exact)"
    )
    failing = [r for r in results if r.outcome != "exact" or r.rtl_outcome != "exact"]
    if failing:
        lines.append("non-exact cases:")
        lines += [f"  {r.summary()}" for r in failing]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="first case seed")
    parser.add_argument("--count", type=int, default=20, help="number of cases")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a failure")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--case", type=int, help="re-run this one seed verbosely")
    args = parser.parse_args()

    if args.case is not None:
        return run_one_verbose(args.case)

    start = time.perf_counter()
    results: list[fuzz_models.Result] = []
    for seed in range(args.seed, args.seed + args.count):
        result = fuzz_models.run_case(seed)
        results.append(result)
        print(
            f"[{len(results)}/{args.count}] {result.summary()} ({result.seconds:.1f} s)", flush=True
        )
        if args.json:  # rewritten after every case, so an interrupted run keeps its results
            payload = {
                "first_seed": args.seed,
                "count": args.count,
                "wall_s": time.perf_counter() - start,
                "counts": dict(Counter(r.outcome for r in results)),
                "rtl_counts": dict(Counter(r.rtl_outcome for r in results)),
                "results": [asdict(r) for r in results],
            }
            args.json.write_text(json.dumps(payload, indent=1))
        if failed(result) and not args.keep_going:
            break
    print(report(results, time.perf_counter() - start))
    return 1 if any(failed(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
