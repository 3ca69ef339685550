"""Turn a pytest-benchmark JSON from test_scan_benchmarks.py into a markdown table.

    python benchmarks/kernels/report.py results.json > table.md
"""

import json
import sys
from collections import defaultdict


def main(path):
    with open(path) as f:
        data = json.load(f)
    m = data.get("machine_info", {})
    print(f"machine: {m.get('cpu', {}).get('brand_raw', m.get('processor', '?'))}; "
          f"torch threads {m.get('torch_threads', '?')}; freed memory kept: {m.get('zoo_freed_memory_kept', '?')}; "
          f"load average at start {m.get('load_average', '?')}\n")
    rows = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        key = (info["op"], info["direction"], info["dtype"], tuple(info["shape"]))
        rows[key][info["impl"]] = info
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


if __name__ == "__main__":
    main(sys.argv[1])
