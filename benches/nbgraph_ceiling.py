#!/usr/bin/env python3
"""How far can a 100-evaluation search get on NAS-Bench-Graph? Measured from the tables alone.

Issue 14 sets a goal: at 100 evaluations, a mean validation regret at most a third of random
search's, on each of the nine tables. This script measures, per table, what that asks and what
the table lets any strategy see:

- `random@100`: random search's exact expected regret at 100 evaluations (without replacement,
  the formula `archsmith bench` prints), in points, and `goal`, a third of it;
- `cells in goal`: how many cells lie within `goal` of the table's best;
- `random needs`: the budget at which random search's exact expected regret reaches `goal`;
- `rho top 1%`: Spearman's correlation of validation and test accuracy among the table's top 1%
  by validation (how much of the order at the top belongs to the cell, and how much to the
  noise of training and of a small validation split);
- `surrogate 5%+100`: a search given far more than the budget: a random 5% of the table (1,310
  cells; 101 on proteins) trains a ridge regression on the cell's structure (topology, the
  operation at each position, and every pair of positions' operations), and its 100 best
  predictions among the other cells
  are evaluated; the mean (and worst) regret of the best of all those evaluated, over 10
  draws, beside `random 5%+100`, random search's exact expected regret with as many;
- `climb to goal`: the share of cells from which steepest ascent over one-edit neighbours
  (`gnn::neighbours` in archsmith) ends on a cell within `goal` of the best.

Run with the set-up's Python (numpy and nas-bench-graph are installed there):
    ~/.cache/archsmith/venv/bin/python benches/nbgraph_ceiling.py [dataset ...]
It reads the CSV tables that `scripts/setup-nbgraph.sh` writes ($ARCHSMITH_NBGRAPH_DIR, default
~/.cache/archsmith/nbgraph) and prints a Markdown table. Nothing here is a strategy, nor a proof
of what no strategy can do: it measures what the goal asks of a search on each table.
"""

import itertools
import math
import os
import sys

import numpy as np

OPS = ["gat", "gcn", "gin", "cheb", "sage", "arma", "graph", "fc", "skip"]
OPS_PROTEINS = ["gcn", "sage", "arma", "fc", "skip"]
LINKS = [
    [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, 2], [0, 0, 1, 3],
    [0, 1, 1, 1], [0, 1, 1, 2], [0, 1, 2, 2], [0, 1, 2, 3],
]
DATASETS = ["cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv", "proteins"]
BUDGET = 100
SURROGATE_TRAIN = 0.05
DRAWS = 10


def table(dataset):
    root = os.environ.get("ARCHSMITH_NBGRAPH_DIR", os.path.expanduser("~/.cache/archsmith/nbgraph"))
    path = os.path.join(root, f"{dataset}.csv")
    if not os.path.exists(path):
        sys.exit(f"{path}: not found; install the tables with scripts/setup-nbgraph.sh")
    keys, val, test = [], [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or line.startswith("key"):
                continue
            k, v, t, _lat, _par = line.strip().split(",")
            keys.append(int(k))
            val.append(float(v))
            test.append(float(t))
    return np.array(keys), 100 * np.array(val), 100 * np.array(test)


def decode(key):
    """A table's key (the package's `hash_arch`, base 10 over the nine operations, which the
    proteins table keeps too) as (link, operation indices)."""
    b = len(OPS) + 1
    digits = []
    for _ in range(4):
        digits.append(key % b)
        key //= b
    return LINKS[key], digits[::-1]


def exact_random(sorted_desc, n):
    """Expected best of n draws without replacement from the values sorted best first."""
    total = len(sorted_desc)
    lc = lambda a, b: math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
    norm = lc(total, n)
    expect = 0.0
    for i, s in enumerate(sorted_desc):
        if total - 1 - i < n - 1:
            break
        expect += math.exp(lc(total - 1 - i, n - 1) - norm) * s
    return expect


def budget_to_reach(sorted_desc, regret):
    lo, hi = BUDGET, len(sorted_desc)
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_desc[0] - exact_random(sorted_desc, mid) <= regret:
            hi = mid
        else:
            lo = mid + 1
    return lo


def spearman(a, b):
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def features(keys):
    m = len(OPS)
    pairs = list(itertools.combinations(range(4), 2))
    x = np.zeros((len(keys), 1 + 9 + 4 * m + len(pairs) * m * m))
    for r, k in enumerate(keys):
        link, op = decode(int(k))
        x[r, 0] = 1.0
        x[r, 1 + LINKS.index(link)] = 1.0
        for i in range(4):
            x[r, 10 + m * i + op[i]] = 1.0
        for n, (i, j) in enumerate(pairs):
            x[r, 10 + 4 * m + m * m * n + m * op[i] + op[j]] = 1.0
    return x


def surrogate_search(x, val, rng):
    train = rng.random(len(val)) < SURROGATE_TRAIN
    xt, yt = x[train], val[train]
    ridge = 1.0
    w = np.linalg.solve(xt.T @ xt + ridge * np.eye(x.shape[1]), xt.T @ (yt - yt.mean()))
    pred = x[~train] @ w
    picks = val[~train][np.argsort(-pred)[:BUDGET]]
    return val.max() - max(yt.max(), picks.max())


def neighbours(keys, ops):
    """One-edit neighbours of every cell (one operation or one input changed), canonical."""
    from nas_bench_graph.architecture import Arch

    allowed = [OPS.index(o) for o in ops]
    index = {int(k): i for i, k in enumerate(keys)}
    out = []
    for k in keys:
        link, op = decode(int(k))
        near = set()
        edits = [(link, op[:i] + [g] + op[i + 1:]) for i in range(4) for g in allowed if g != op[i]]
        edits += [(link[:i] + [s] + link[i + 1:], op) for i in range(4) for s in range(i + 1) if s != link[i]]
        for l2, o2 in edits:
            try:
                h = Arch(list(l2), [OPS[g] for g in o2]).valid_hash()
            except Exception:
                continue
            j = index.get(h)
            if j is not None and j != index[int(k)]:
                near.add(j)
        out.append(list(near))
    return out


def climb_share(val, near, goal_cells):
    dest = np.full(len(val), -1)
    for start in range(len(val)):
        path, i = [], start
        while dest[i] < 0:
            path.append(i)
            up = max(near[i], key=lambda j: val[j], default=i)
            if val[up] <= val[i]:
                dest[i] = i
                break
            i = up
        for p in path:
            dest[p] = dest[i]
    return float(np.mean([d in goal_cells for d in dest]))


def main():
    wanted = sys.argv[1:] or DATASETS
    # The eight nine-operation tables hold the same cells: their neighbours are listed once.
    cache = {}
    print("| table | random@100 | goal | cells in goal | random needs | rho top 1% | "
          "surrogate 5%+100 (mean, worst) | random 5%+100 | climb to goal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ds in wanted:
        ops = OPS_PROTEINS if ds == "proteins" else OPS
        keys, val, test = table(ds)
        order = np.argsort(-val)
        sorted_desc = val[order]
        r100 = sorted_desc[0] - exact_random(sorted_desc, BUDGET)
        goal = r100 / 3
        in_goal = set(np.nonzero(val >= sorted_desc[0] - goal - 1e-9)[0].tolist())
        needs = budget_to_reach(sorted_desc, goal)
        top = order[: max(2, len(val) // 100)]
        rho = spearman(val[top], test[top])
        x = features(keys)
        rng = np.random.default_rng(0)
        regrets = [surrogate_search(x, val, rng) for _ in range(DRAWS)]
        r14 = sorted_desc[0] - exact_random(sorted_desc, round(len(val) * SURROGATE_TRAIN) + BUDGET)
        cells = (tuple(ops), keys.tobytes())
        if cells not in cache:
            cache[cells] = neighbours(keys, ops)
        climb = climb_share(val, cache[cells], in_goal)
        print(f"| {ds} | {r100:.2f} | {goal:.2f} | {len(in_goal)} | {needs} | {rho:.2f} | "
              f"{np.mean(regrets):.2f}, {np.max(regrets):.2f} | {r14:.2f} | {100 * climb:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
