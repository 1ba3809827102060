"""PyTorch twin of benches/train_speed.rs: the einspace ResNet-18 and ViT seeds written by hand
in PyTorch with the same semantics (im2col = F.unfold + permute, a linear map of the patches,
col2im = permute + reshape; norm = BatchNorm2d on images, LayerNorm on sequences; leaky ReLU;
learned positional encoding; group(4, 2) heads with their own projections), run eagerly.

    eval "$(scripts/setup-torch.sh)"
    python benches/torch_twin.py [STEPS] [BATCH] [THREADS] [--einspace]

With --einspace: idiomatic twins (nn.Conv2d, F.scaled_dot_product_attention) of einspace's own
seeds, resnet18_no_maxpool, wideresnet16_4, transformer and mlp_mixer, instead.

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


# Idiomatic twins of einspace's own seeds (spaces/einspace/seeds/, from einspace's
# seed_architectures.py): the same layers and parameter counts (every convolution has a bias,
# as a linear over patches does), written the way a PyTorch user would: nn.Conv2d and
# F.scaled_dot_product_attention.

def conv2d(cin, d, k, s, p):
    return nn.Conv2d(cin, d, k, s, p)


class BasicBlock(nn.Module):
    """einspace's ResNet basic block: conv-BN-act-conv-BN beside a shortcut, add, act."""

    def __init__(self, cin, d, stride):
        super().__init__()
        self.a = nn.Sequential(conv2d(cin, d, 3, stride, 1), nn.BatchNorm2d(d), nn.LeakyReLU(0.01),
                               conv2d(d, d, 3, 1, 1), nn.BatchNorm2d(d))
        self.short = None
        if stride != 1 or cin != d:
            self.short = nn.Sequential(conv2d(cin, d, 1, stride, 0), nn.BatchNorm2d(d))

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        return F.leaky_relu(self.a(x) + s, 0.01)


class ResNet18NoMaxpool(nn.Module):
    """einspace's resnet18_no_maxpool: 3x3 stem, a stride-2 3x3 conv where the max-pool was."""

    def __init__(self, classes=10):
        super().__init__()
        layers = [conv2d(3, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.LeakyReLU(0.01),
                  conv2d(64, 64, 3, 2, 1), BasicBlock(64, 64, 1), BasicBlock(64, 64, 1)]
        for cin, d in [(64, 128), (128, 256), (256, 512)]:
            layers += [BasicBlock(cin, d, 2), BasicBlock(d, d, 1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(512, classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


class WideBlock(nn.Module):
    """einspace's WRN block: conv-BN-act-conv beside a shortcut, add, then BN and act."""

    def __init__(self, cin, d, stride):
        super().__init__()
        self.a = nn.Sequential(conv2d(cin, d, 3, stride, 1), nn.BatchNorm2d(d), nn.LeakyReLU(0.01),
                               conv2d(d, d, 3, 1, 1))
        self.short = None if (stride == 1 and cin == d) else conv2d(cin, d, 1, stride, 0)
        self.bn = nn.BatchNorm2d(d)

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        return F.leaky_relu(self.bn(self.a(x) + s), 0.01)


class WideResNet16_4(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        layers = [conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.01)]
        for cin, d, s in [(16, 64, 1), (64, 128, 2), (128, 256, 2)]:
            layers += [WideBlock(cin, d, s), WideBlock(d, d, 1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(256, classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


class PatchEmbed(nn.Module):
    """4x4 patches as tokens, width 512, plus a learned position encoding."""

    def __init__(self, width=512):
        super().__init__()
        self.proj = nn.Conv2d(3, width, 4, 4)
        self.pos = nn.Parameter(torch.randn(1, 64, width) * 0.02)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos


class MultiHead(nn.Module):
    """einspace's attention: 4 heads, each with 64-wide q, k, v maps of all 512 features."""

    def __init__(self, width=512, heads=4, d=64):
        super().__init__()
        self.heads, self.d = heads, d
        self.qkv = nn.Linear(width, 3 * heads * d)
        self.out = nn.Linear(heads * d, width)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, self.heads * self.d))


class PostNormLayer(nn.Module):
    def __init__(self, width=512):
        super().__init__()
        self.attn = MultiHead(width)
        self.n1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.01), nn.Linear(width, width))
        self.n2 = nn.LayerNorm(width)

    def forward(self, x):
        x = self.n1(x + self.attn(x))
        return self.n2(x + self.mlp(x))


class Transformer(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.embed = PatchEmbed()
        self.layers = nn.Sequential(*[PostNormLayer() for _ in range(4)])
        self.head = nn.Linear(512, classes)

    def forward(self, x):
        return self.head(self.layers(self.embed(x)).mean(1))


class MixerBlock(nn.Module):
    """einspace's mixer block: x + channel_mlp(token_mlp(norm(x)))."""

    def __init__(self, tokens=64, width=512):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.t1, self.t2 = nn.Linear(tokens, 4 * tokens), nn.Linear(4 * tokens, tokens)
        self.c1, self.c2 = nn.Linear(width, width // 2), nn.Linear(width // 2, width)

    def forward(self, x):
        y = self.norm(x).transpose(1, 2)
        y = self.t2(F.leaky_relu(self.t1(y), 0.01)).transpose(1, 2)
        y = self.c2(F.leaky_relu(self.c1(y), 0.01))
        return x + y


class MlpMixer(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.embed = PatchEmbed()
        self.blocks = nn.Sequential(*[MixerBlock() for _ in range(8)])
        self.head = nn.Linear(512, classes)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)).mean(1))


EINSPACE_TWINS = {
    "resnet18_no_maxpool": ResNet18NoMaxpool,
    "wideresnet16_4": WideResNet16_4,
    "transformer": Transformer,
    "mlp_mixer": MlpMixer,
}


def bench(name, model, steps, batch, device, impl="pytorch-eager"):
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
    print(json.dumps({"impl": impl, "model": name, "device": str(device),
                      "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
                      "params": params, "steps_per_second": steps / secs}), flush=True)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    steps = int(args[0]) if len(args) > 0 else 10
    batch = int(args[1]) if len(args) > 1 else 64
    threads = int(args[2]) if len(args) > 2 else 0
    if threads > 0:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    if "--einspace" in sys.argv:
        for name, cls in EINSPACE_TWINS.items():
            bench(name, cls(), steps, batch, device, impl="pytorch-idiomatic")
        return
    bench("resnet18", ResNet18(), steps, batch, device)
    bench("vit", ViT(), steps, batch, device)
    bench("resnet18-conv2d", ResNet18(idiomatic=True), steps, batch, device)


if __name__ == "__main__":
    main()
