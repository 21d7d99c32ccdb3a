"""This machine's memory bandwidth, measured the STREAM-copy way with numpy.

`python bench/bandwidth.py [--mib 512] [--repeats 5] [--threads 2]` prints JSON.

Counting: one copy of N bytes reads N and writes N, so GB/s = 2 * N / seconds
(10^9 bytes). Write-allocate traffic (reading the destination line before it is
written) is not counted, so this is the bandwidth a copy *achieves*, not the
bus's peak. Best of `repeats`, with 1 thread and with `threads` threads (each
copying its own slice; numpy releases the GIL while copying).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np


def copy_gbps(src: np.ndarray, dst: np.ndarray, threads: int, repeats: int) -> float:
    """Best GB/s over `repeats` copies of src into dst split across `threads` threads."""
    bounds = np.linspace(0, src.size, threads + 1, dtype=np.int64)
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=np.copyto, args=(dst[s], src[s])) for s in slices]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def measure(mib: int = 512, repeats: int = 5, threads: int = 2) -> dict:
    """Copy bandwidth with 1 and with `threads` threads; `gbps` is the better of the two."""
    count = mib * 1024 * 1024 // 8
    src = np.arange(count, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page once so page faults stay out of the timing
    results = {"array_mib": mib, "repeats": repeats, "counting": "2 x bytes copied (read + write), GB = 1e9 bytes",
               "gbps_1_thread": round(copy_gbps(src, dst, 1, repeats), 2)}
    if threads > 1:
        results[f"gbps_{threads}_threads"] = round(copy_gbps(src, dst, threads, repeats), 2)
    results["gbps"] = max(v for k, v in results.items() if k.startswith("gbps_"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="array size in MiB (default 512)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(measure(args.mib, args.repeats, args.threads)))


if __name__ == "__main__":
    main()
