"""Shared by the PyTorch reference scripts: the IDX reader, unleash's SmallCNN in PyTorch (same
layers and names as unleash's safetensors export) and the CIFAR ResNet-18 (OpenOOD's names)."""
import gzip
import math
import os

import numpy as np
import torch.nn as nn
import torch.nn.functional as F

SAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sample_data")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def drop_held_out(x, y, run_config):
    """The training samples unleash trained on: drops the ID validation split that the run's
    config.json lists (`id_val_split.indices`, positions in the training file), keeping file order,
    so that `unleash batch-order` indices and the normalisation match. Runs made before the split
    (no such key) trained on every sample."""
    if not run_config:
        return x, y
    import json
    with open(run_config) as f:
        held = json.load(f).get("id_val_split", {}).get("indices", [])
    keep = np.setdiff1d(np.arange(len(x)), np.asarray(held, dtype=np.int64))
    return x[keep], y[keep]


class SmallCNN(nn.Module):
    def __init__(self, channels=1, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(3136, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def sgd_epoch(model, opt, X, Y, order, gamma, base_lr, first_step, total_steps, batch=128):
    """One epoch over `order` in batches of `batch`, unleash's recipe: plain CE, or the flooded
    |CE - gamma| + gamma when gamma is given; lr cosine per step from `base_lr` over `total_steps`.
    Returns the batches' CE values."""
    import torch.nn.functional as F
    model.train()
    losses = []
    for b, i in enumerate(range(0, len(order), batch)):
        for group in opt.param_groups:
            group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * (first_step + b) / total_steps))
        idx = order[i:i + batch]
        ce = F.cross_entropy(model(X[idx]), Y[idx])
        loss = ce if gamma is None else (ce - gamma).abs() + gamma
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(ce.detach()))
    return losses


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class ResNet18x32(nn.Module):
    """OpenOOD's ResNet18_32x32 (and unleash's ResNet-18): a 3x3 stem without max-pool, four stages of
    two basic blocks, 1x1 conv + BatchNorm shortcuts, global average pool, `fc`; OpenOOD's names."""

    def __init__(self, channels=3, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (w, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
            setattr(self, f"layer{i + 1}", nn.Sequential(Block(cin, w, stride), Block(w, w, 1)))
            cin = w
        self.fc = nn.Linear(512, classes)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))
