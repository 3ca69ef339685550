"""Turn a pytest-benchmark JSON from test_scan_benchmarks.py into a markdown table
(and the SSD cases of test_ssd_benchmarks.py into a second one, with TFLOP/s).

    python benchmarks/kernels/report.py results.json > table.md
"""

import json
import sys
from collections import defaultdict


def main(path):
    with open(path) as f:
        data = json.load(f)
    m = data.get("machine_info", {})
    print(
        f"machine: {m.get('cpu', {}).get('brand_raw', m.get('processor', '?'))}; "
        f"torch threads {m.get('torch_threads', '?')}; freed memory kept: {m.get('zoo_freed_memory_kept', '?')}; "
        f"load average at start {m.get('load_average', '?')}\n"
    )
    rows = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("op") == "ssd":
            continue
        key = (info["op"], info["direction"], info["dtype"], tuple(info["shape"]))
        rows[key][info["impl"]] = info
    if not rows:  # only SSD cases in this JSON
        ssd_table(data)
        return
    order = ("naive", "torch", "torch-chunked", "triton")
    impls = [i for i in order if any(i in r for r in rows.values())]
    fast = [i for i in impls if i.startswith("torch")] if "naive" in impls else []
    head = ["op", "direction", "dtype", "shape (B,T,D)"]
    for impl in impls:
        head += [f"{impl} ms", f"{impl} GB/s"]
    head += [f"{impl} vs naive" for impl in fast]
    if any("pct_of_device_bw" in i for r in rows.values() for i in r.values()):
        head.append("triton % of device BW")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key in sorted(rows, key=lambda k: (k[0], k[1], k[2], k[3][1], k[3][2])):
        r = rows[key]
        cells = [key[0], key[1], key[2], "x".join(map(str, key[3]))]
        for impl in impls:
            cells += [f"{r[impl]['ms']:.2f}", f"{r[impl]['gbs']:.2f}"] if impl in r else ["-", "-"]
        for impl in fast:
            ok = "naive" in r and impl in r
            cells.append(f"{r['naive']['ms'] / r[impl]['ms']:.1f}x" if ok else "-")
        if "triton % of device BW" in head:
            cells.append(str(r.get("triton", {}).get("pct_of_device_bw", "-")))
        print("| " + " | ".join(cells) + " |")
    print()
    ssd_table(data)


def ssd_table(data):
    rows = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("op") == "ssd":
            rows[(info["direction"], info["dtype"], tuple(info["shape"]))][info["impl"]] = info
    if not rows:
        return
    impls = [i for i in ("torch-chunked", "triton", "mamba-ssm") if any(i in r for r in rows.values())]
    head = ["ssd direction", "dtype", "shape (B,T,H,P,G,N,L)"]
    for impl in impls:
        head += [f"{impl} ms", f"{impl} GB/s", f"{impl} TFLOP/s"]
    ratios = [other for other in ("torch-chunked", "mamba-ssm") if "triton" in impls and other in impls]
    head += [f"triton vs {other}" for other in ratios]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key in sorted(rows):
        r = rows[key]
        cells = [key[0], key[1], "x".join(map(str, key[2]))]
        for impl in impls:
            cells += (
                [f"{r[impl]['ms']:.2f}", f"{r[impl]['gbs']:.2f}", f"{r[impl]['tflops']:.3g}"]
                if impl in r
                else ["-", "-", "-"]
            )
        for other in ratios:  # > 1: triton is faster
            ok = "triton" in r and other in r
            cells.append(f"{r[other]['ms'] / r['triton']['ms']:.2f}x" if ok else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
