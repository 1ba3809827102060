"""einspace's own code on its own seeds: its `EinSpace.recurse_state` (shapes), `Compiler`
and `Network` from a checkout of github.com/linusericsson/einspace, timed by the idiomatic
twins' own `bench` of benches/torch_twin.py (SGD with momentum, random 3x32x32 batches, 10
classes, 2 untimed steps, then STEPS timed ones). Prints one JSON line a seed, with the
parameter count to check against archsmith's (`head = "einspace"`: einspace's Network reads a
sequence averaged over its features).

    eval "$(scripts/setup-torch.sh)"
    pip install --target DEPS --no-deps einops positional-encodings psutil pyyaml
    PYTHONPATH=DEPS python benches/einspace_own.py --src EINSPACE_CHECKOUT [STEPS] [BATCH] [THREADS]

einspace's `utils` imports matplotlib, seaborn and scipy for its plots; where they are not
installed they are replaced by empty modules, since nothing timed here draws.
"""

import argparse
import importlib
import os
import sys
import types
from copy import deepcopy

SEEDS = ["resnet18_no_maxpool", "wideresnet16_4", "transformer", "mlp_mixer"]


def stub_missing(names):
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                mod = ".".join(parts[:i])
                if mod not in sys.modules:
                    sys.modules[mod] = types.ModuleType(mod)
            parent = sys.modules[".".join(parts[:-1])] if len(parts) > 1 else None
            if parent is not None:
                setattr(parent, parts[-1], sys.modules[name])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, help="a checkout of einspace (holding einspace/)")
    ap.add_argument("steps", nargs="?", type=int, default=3)
    ap.add_argument("batch", nargs="?", type=int, default=32)
    ap.add_argument("threads", nargs="?", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    # The twins' timing loop, so that both scripts time the same way.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_twin import bench
    stub_missing(["matplotlib.pyplot", "seaborn", "scipy.stats"])

    import torch
    from einspace.compiler import Compiler
    from einspace.network import Network
    from einspace.search_spaces import EinSpace
    from einspace.seed_architectures import seed_architectures

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    input_shape = (args.batch, 3, 32, 32)
    space = EinSpace(input_shape=input_shape, input_mode="im")
    compiler = Compiler()
    for name in SEEDS:
        arch = space.recurse_state(
            deepcopy(seed_architectures[name]), input_shape=input_shape, input_mode="im"
        )
        model = Network(compiler.compile(arch), arch["output_shape"], 10, {"dataset": "cifar10"})
        bench(name, model, args.steps, args.batch, torch.device("cpu"), impl="einspace-own")


if __name__ == "__main__":
    main()
