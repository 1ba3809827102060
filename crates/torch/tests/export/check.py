"""Checks exported PyTorch modules against archsmith's forward pass.

Usage: check.py MANIFEST, where MANIFEST lists case folders, one a line. Each folder holds
model.py and model.safetensors (from `archsmith export --format pytorch`) and io.safetensors
with the input `x` and archsmith's logits `y` (eval mode). Prints one line a case and exits 1
when any differs.
"""

import importlib.util
import sys

import torch
from safetensors.torch import load_file


def check(folder, i):
    spec = importlib.util.spec_from_file_location(f"exported_{i}", f"{folder}/model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.load().eval()
    io = load_file(f"{folder}/io.safetensors")
    with torch.no_grad():
        y = model(io["x"])
    want = io["y"]
    if y.shape != want.shape:
        return False, f"shape {tuple(y.shape)} != {tuple(want.shape)}"
    diff = (y - want).abs().max().item()
    tol = 1e-4 + 1e-3 * want.abs().max().item()
    return diff <= tol, f"max abs diff {diff:.3g} (tolerance {tol:.3g})"


def main():
    folders = [l.strip() for l in open(sys.argv[1]) if l.strip()]
    bad = 0
    for i, f in enumerate(folders):
        try:
            ok, why = check(f, i)
        except Exception as e:  # a module that fails to build or load is a failed case
            ok, why = False, f"{type(e).__name__}: {e}"
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {f}: {why}")
    print(f"{len(folders) - bad} of {len(folders)} exported modules match")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
