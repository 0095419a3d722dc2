"""Remote progress bars: what a tqdm.auto bar in a `%%cake` cell costs the remote loop, and how far the
notebook lags behind it.

    .venv/bin/python bench/widgets.py [--n 5] [--iterations 10000]

A frontend (tests/frontend.py: jupyter_client driving the notebook's own ipykernel, as JupyterLab does)
runs `%%cake` cells on a local session. Each cell times, remotely, a loop of ``--iterations`` steps of a
little work (~40 µs, a fast training step's bookkeeping) these ways: no bar; a tqdm.auto bar with its
defaults (it redraws at most every 0.1 s); the same in the notebook's own kernel, without Cake (what
tqdm itself costs); a bar forced to send every single update (``mininterval=0``, 10,000 comm messages),
the worst a library could do. Rows: median and p90 over ``--n`` cells of the remote loop time, and of the lag: from
the remote loop's end to the frontend having every message of the cell (the bar at 100 %).

Goal (issue 18): the default bar slows the loop by at most 10 % versus no bar. Everything runs in a
temporary Cake / Jupyter data dir, deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import percentile  # noqa: E402

LOOP = """{magic}
import time
from tqdm.auto import tqdm
def work():
    return sum(range(5000))
steps = {bar}
t0 = time.perf_counter()
for _ in steps:
    work()
loop_s = time.perf_counter() - t0
print(f"LOOP {{loop_s:.6f}} END {{time.time():.6f}}")
"""
# (label, the loop's iterable, where it runs): the same bar in the notebook's own kernel says what tqdm
# itself costs, so the remote rows show what Cake adds to that.
WAYS = [
    ("no bar", "range({n})", "%%cake"),
    ("tqdm.auto, defaults", "tqdm(range({n}))", "%%cake"),
    ("tqdm.auto, defaults, in the notebook's own kernel (no Cake)", "tqdm(range({n}))", ""),
    ("tqdm.auto, every update sent (mininterval=0)", "tqdm(range({n}), mininterval=0, miniters=1)", "%%cake"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5, help="cells per way")
    parser.add_argument("--iterations", type=int, default=10_000)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cake-bench-widgets-"))
    os.environ.update(CAKE_DATA_DIR=str(scratch / "cake"), CAKE_CONFIG=str(scratch / "targets.toml"),
                      JUPYTER_DATA_DIR=str(scratch / "jupyter"))  # fmt: skip
    from frontend import Frontend

    fe = Frontend()
    rows: list[str] = []
    try:
        fe.execute("%load_ext jupyter_cake")
        fe.execute("%cake use local --name bench-widgets --new")
        loops: dict[str, list[float]] = {}
        for way, bar, magic in WAYS:
            fe.execute(LOOP.format(magic=magic, bar=bar.format(n=100)))  # warm: imports, the first widget models
            loops[way], lags = [], []
            for _ in range(args.n):
                messages = fe.execute(LOOP.format(magic=magic, bar=bar.format(n=args.iterations)), timeout=600)
                done = time.time()
                line = next(m["content"]["text"] for m in messages if m["msg_type"] == "stream" and "LOOP" in m["content"]["text"])
                loop_s, remote_end = (float(x) for x in line.split("LOOP")[1].split("END"))
                loops[way].append(loop_s)
                lags.append(done - remote_end)
            base = percentile(loops["no bar"], 50)
            median = percentile(loops[way], 50)
            slowdown = f"{(median / base - 1) * 100:+.1f} %" if way != "no bar" else "-"
            verdict = ("PASS" if median <= base * 1.10 else "FAIL") if way == "tqdm.auto, defaults" else ""
            rows.append(f"| {way} | {median * 1000:.0f} ms | {percentile(loops[way], 90) * 1000:.0f} ms | {slowdown} | "
                        f"{percentile(lags, 50) * 1000:.0f} ms | {percentile(lags, 90) * 1000:.0f} ms | {verdict} |")  # fmt: skip
        fe.execute("%cake down")
    finally:
        fe.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n**Remote tqdm bars** ({args.iterations} iterations, {args.n} cells per way; local session)\n")
    print("| loop | remote loop median | p90 | vs no bar | notebook lag median | p90 | goal: defaults ≤ +10 % |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
