"""Converts NAS-Bench-Graph's light tables (pickles shipped in the PyPI package
`nas-bench-graph`) into the plain CSV files archsmith reads: one per data set.

    python scripts/nbgraph_convert.py OUT_DIR

Each file starts with one header line that archsmith checks before using the rows:

    # archsmith-nbgraph 1 dataset=cora rows=26206 source=<pickle path> source_sha256=<hex> body_sha256=<hex>

then `key,valid,test,latency,params_m` and one row per architecture key. `body_sha256` is the
SHA-256 of every byte after the header line, so a truncated or edited file is refused. Floats
are written with repr(), which round-trips exactly. Files are written to a temporary name and
renamed, so an interrupted conversion leaves no half-written table behind.
"""

import hashlib
import os
import pickle
import sys

FORMAT = 1
DATASETS = ["cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv", "proteins"]


def convert(src, dataset, out_dir):
    with open(src, "rb") as f:
        raw = f.read()
    table = pickle.loads(raw)
    if not isinstance(table, dict) or not table:
        raise SystemExit(f"{src}: not a non-empty dict of architectures")
    lines = ["key,valid,test,latency,params_m"]
    for key in sorted(table):
        v = table[key]
        row = [int(key), float(v["valid_perf"]), float(v["perf"]), float(v["latency"]), float(v["para"])]
        lines.append(",".join(repr(x) for x in row))
    body = ("\n".join(lines) + "\n").encode()
    header = (
        f"# archsmith-nbgraph {FORMAT} dataset={dataset} rows={len(table)} source=nas_bench_graph/light/{dataset}.bench "
        f"source_sha256={hashlib.sha256(raw).hexdigest()} body_sha256={hashlib.sha256(body).hexdigest()}\n"
    ).encode()
    dst = os.path.join(out_dir, f"{dataset}.csv")
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header + body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    print(f"[setup-nbgraph] {dataset}: {len(table)} architectures -> {dst}", file=sys.stderr)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: nbgraph_convert.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    import nas_bench_graph

    light = os.path.join(os.path.dirname(os.path.abspath(nas_bench_graph.__file__)), "light")
    for d in DATASETS:
        convert(os.path.join(light, f"{d}.bench"), d, out_dir)


if __name__ == "__main__":
    main()
