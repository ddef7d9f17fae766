"""PyTorch eager reference for benches/gpu_check.sh: train and eval samples/s of SmallCNN (sample
data, 28x28x1) or the CIFAR-style ResNet-18 (CIFAR-10 binary batches, 32x32x3) on one device
(cuda or cpu), measured as `unleash bench` measures them:

- train: SGD momentum 0.9, weight decay 5e-4, batch 128, random batches (seed 0); 3 untimed
  warm-up steps, then the median over --steps timed steps of one step each, the logits read back
  to the host inside the step (as unleash reads them for its loss figures) and the device
  synchronised after the update;
- eval: forward passes over the test set at batch 500 under no_grad, logits read back, median of
  --repeats passes after one untimed pass.

Same layers as unleash (src/model/small_cnn.rs, src/model/resnet.rs), float32, eager (no
torch.compile, no AMP, no channels_last). Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def read_cifar(paths):
    xs, ys = [], []
    for p in paths.split(","):
        raw = np.fromfile(p, dtype=np.uint8).reshape(-1, 1 + 3 * 32 * 32)
        ys.append(raw[:, 0].astype(np.int64))
        xs.append(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return np.concatenate(xs), np.concatenate(ys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["small-cnn", "resnet18"], default="small-cnn")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--train", help="CIFAR .bin batches (comma-separated), for resnet18")
    ap.add_argument("--test", help="CIFAR .bin batch, for resnet18")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_smallcnn import SAMPLE_DATA, ResNet18x32, SmallCNN, read_idx

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "torch.cuda.is_available() is false"}))
        return 1
    if args.model == "small-cnn":
        x = read_idx(os.path.join(SAMPLE_DATA, "fashion-train-images-idx3-ubyte.gz")).astype(np.float32)[:, None] / 255.0
        y = read_idx(os.path.join(SAMPLE_DATA, "fashion-train-labels-idx1-ubyte.gz")).astype(np.int64)
        xt = read_idx(os.path.join(SAMPLE_DATA, "fashion-t10k-images-idx3-ubyte.gz")).astype(np.float32)[:, None] / 255.0
        model = SmallCNN()
    else:
        x, y = read_cifar(args.train)
        xt, _ = read_cifar(args.test)
        model = ResNet18x32()
    mean, std = x.mean(axis=(0, 2, 3), keepdims=True), x.std(axis=(0, 2, 3), keepdims=True) + 1e-12
    X = torch.from_numpy((x - mean) / std).to(dev)
    Y = torch.from_numpy(y).to(dev)
    XT = torch.from_numpy((xt - mean) / std).to(dev)
    torch.manual_seed(0)
    model = model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    rates = []
    model.train()
    for step in range(args.steps + 3):
        idx = torch.from_numpy(rng.integers(0, len(X), 128)).to(dev)
        sync()
        t = time.perf_counter()
        logits = model(X[idx])
        logits.detach().cpu()
        loss = F.cross_entropy(logits, Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if step >= 3:
            rates.append(128 / (time.perf_counter() - t))
    model.eval()
    eval_rates = []
    with torch.no_grad():
        for r in range(args.repeats + 1):
            sync()
            t = time.perf_counter()
            for i in range(0, len(XT), 500):
                model(XT[i:i + 500]).cpu()
            sync()
            if r > 0:
                eval_rates.append(len(XT) / (time.perf_counter() - t))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(json.dumps({
        "framework": f"torch {torch.__version__} eager float32",
        "device": name,
        "model": args.model,
        "train_samples_per_sec": statistics.median(rates),
        "train_batch": 128,
        "eval_samples_per_sec": statistics.median(eval_rates),
        "eval_batch": 500,
        "train_samples": len(X),
        "eval_samples": len(XT),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
