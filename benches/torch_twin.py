"""PyTorch twin of benches/train_speed.rs: the einspace ResNet-18 and ViT seeds written by hand
in PyTorch with the same semantics (im2col = F.unfold + permute, a linear map of the patches,
col2im = permute + reshape; norm = BatchNorm2d on images, LayerNorm on sequences; leaky ReLU;
learned positional encoding; group(4, 2) heads with their own projections), run eagerly.

    eval "$(scripts/setup-torch.sh)"
    python benches/torch_twin.py [STEPS] [BATCH]

Also times ResNet-18 written idiomatically with nn.Conv2d, to show the cost of the einspace
(unfold + linear) formulation. Parameter counts are printed to check the twin against
archsmith's.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv(nn.Module):
    """route(im2col(k, s, p), linear(d), col2im)"""

    def __init__(self, cin, d, k, s, p):
        super().__init__()
        self.k, self.s, self.p = k, s, p
        self.lin = nn.Linear(cin * k * k, d)

    def forward(self, x):
        b, _, h, w = x.shape
        ho = (h + 2 * self.p - self.k) // self.s + 1
        wo = (w + 2 * self.p - self.k) // self.s + 1
        cols = F.unfold(x, self.k, padding=self.p, stride=self.s).permute(0, 2, 1)
        y = self.lin(cols)
        return y.permute(0, 2, 1).reshape(b, -1, ho, wo)


class Block(nn.Module):
    def __init__(self, cin, d, stride, idiomatic):
        super().__init__()
        conv = (lambda i, o, k, s, p: nn.Conv2d(i, o, k, s, p)) if idiomatic else Conv
        self.a = nn.Sequential(
            conv(cin, d, 3, stride, 1), nn.BatchNorm2d(d), nn.LeakyReLU(0.01),
            conv(d, d, 3, 1, 1), nn.BatchNorm2d(d))
        self.short = None
        if stride != 1:
            self.short = nn.Sequential(conv(cin, d, 1, 2, 0), nn.BatchNorm2d(d))

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        return F.leaky_relu(self.a(x) + s, 0.01)


class ResNet18(nn.Module):
    def __init__(self, classes=10, idiomatic=False):
        super().__init__()
        conv = (lambda i, o, k, s, p: nn.Conv2d(i, o, k, s, p)) if idiomatic else Conv
        layers = [conv(3, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.LeakyReLU(0.01),
                  Block(64, 64, 1, idiomatic), Block(64, 64, 1, idiomatic)]
        for cin, d in [(64, 128), (128, 256), (256, 512)]:
            layers += [Block(cin, d, 2, idiomatic), Block(d, d, 1, idiomatic)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(512, classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


class Head(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        q = self.q(x)
        scores = q @ self.k(x).permute(0, 2, 1) / math.sqrt(q.size(-1))
        return scores.softmax(-1) @ self.v(x)


class Attention(nn.Module):
    def __init__(self, width=128, heads=4):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(Head(width // heads) for _ in range(heads))
        self.out = nn.Linear(width, width)

    def forward(self, x):
        parts = self.norm(x).chunk(len(self.heads), 2)
        return x + self.out(torch.cat([h(p) for h, p in zip(self.heads, parts)], 2))


class Mlp(nn.Module):
    def __init__(self, width=128):
        super().__init__()
        self.f = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 256), nn.LeakyReLU(0.01),
                               nn.Linear(256, width))

    def forward(self, x):
        return x + self.f(x)


class ViT(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.embed = nn.Linear(48, 128)
        self.pos = nn.Parameter(torch.randn(64, 128) * 0.02)
        self.blocks = nn.Sequential(*[m for _ in range(4) for m in (Attention(), Mlp())])
        self.norm = nn.LayerNorm(128)
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        t = F.unfold(x, 4, stride=4).permute(0, 2, 1)
        t = self.norm(self.blocks(self.embed(t) + self.pos))
        return self.head(t.mean(1))


def bench(name, model, steps, batch, device):
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    secs = time.perf_counter() - t
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"impl": "pytorch-eager", "model": name, "device": str(device),
                      "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
                      "params": params, "steps_per_second": steps / secs}))


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    bench("resnet18", ResNet18(), steps, batch, device)
    bench("vit", ViT(), steps, batch, device)
    bench("resnet18-conv2d", ResNet18(idiomatic=True), steps, batch, device)


if __name__ == "__main__":
    main()
