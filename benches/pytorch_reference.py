"""PyTorch / scikit-learn reference figures for `unleash bench --pytorch` (optional; never needed by
tests or CI). Same model (SmallCNN), same batch sizes, same data (sample_data), single thread by
default to match a like-for-like CPU comparison; --threads to change it.

Prints JSON with the same keys as `unleash bench --json` ("unleash" object):
train_samples_per_sec, eval_samples_per_sec, per_sample_loss_pass_secs,
mask_preview_secs (a masked model's pass over the mask explorer's preview subsets: 1,000 training,
500 ID test twice, 250 per OOD set, with every score's AUROC and FPR95), mask_ratio_to_gamma_secs
(gamma + atypical set), mask_full_secs (+ the masked model over the ID test set, the validation and
every test OOD set, with every score's AUROC and FPR95), mask_first_answer_secs (a snapshot's
first answer: its unmasked model on the preview subsets, then a preview and a complete answer), metrics_1m_1m_secs (roc_auc_score +
average_precision_score + roc_curve). OOD sets are random tensors of the sample data's sizes (the
timing does not depend on their content).
"""
import argparse
import resource
import json
import os
import statistics
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_THREADS", "0")) or os.cpu_count())
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ops", action="store_true", help="also time each SmallCNN layer (as `unleash bench --ops`)")
    args = ap.parse_args()
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    torch.set_num_threads(args.threads)
    from torch_smallcnn import SAMPLE_DATA as root, SmallCNN, read_idx
    x = read_idx(os.path.join(root, "fashion-train-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = read_idx(os.path.join(root, "fashion-train-labels-idx1-ubyte.gz")).astype(np.int64)
    xt = read_idx(os.path.join(root, "fashion-t10k-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    mean, std = x.mean(), x.std()
    X = torch.from_numpy((x - mean) / std).unsqueeze(1)
    Y = torch.from_numpy(y)
    XT = torch.from_numpy((xt - mean) / std).unsqueeze(1)

    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    rates = []
    for step in range(args.steps + 3):
        idx = torch.from_numpy(rng.integers(0, len(X), 128))
        t = time.perf_counter()
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 3:
            rates.append(128 / (time.perf_counter() - t))
    model.eval()
    eval_rates, pass_secs, mask_secs, mask_full_secs, preview_secs, first_secs = [], [], [], [], [], []
    # The sample data's OOD sets by size: validation 2000, MNIST 2000, textures 675, Gaussian and
    # uniform 2000 each; the preview takes 250 of each.
    ood_sizes = [2000, 2000, 675, 2000, 2000]
    gen = torch.Generator().manual_seed(0)
    oods = [torch.rand((n, 1, 28, 28), generator=gen) for n in ood_sizes]

    def scores(logits):
        return [F.softmax(logits, 1).max(1).values, logits.max(1).values, torch.logsumexp(logits, 1)]

    def detection(net, id_x, ood_sets):
        id_scores = scores(torch.cat([net(id_x[i:i + 500]) for i in range(0, len(id_x), 500)]))
        for o in ood_sets:
            o_scores = scores(torch.cat([net(o[i:i + 500]) for i in range(0, len(o), 500)]))
            for a, b in zip(id_scores, o_scores):
                lab = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
                sc = np.concatenate([a.numpy(), b.numpy()])
                roc_auc_score(lab, sc)
                roc_curve(lab, sc)
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            for i in range(0, len(XT), 500):
                model(XT[i:i + 500])
            eval_rates.append(len(XT) / (time.perf_counter() - t))
            t = time.perf_counter()
            losses = torch.cat([F.cross_entropy(model(X[i:i + 500]), Y[i:i + 500], reduction="none") for i in range(0, len(X), 500)])
            pass_secs.append(time.perf_counter() - t)
            # mask ratio 0.5 -> gamma + atypical set (magnitude mask per layer, masked passes over train + test)
            t = time.perf_counter()
            masked = SmallCNN()
            masked.load_state_dict(model.state_dict())
            for m in [masked.conv1, masked.conv2, masked.fc1, masked.fc2]:
                w = m.weight.data
                k = int(0.5 * w.numel() + 0.5)  # half away from zero, as unleash's masked_count
                thr = w.abs().flatten().kthvalue(k).values
                m.weight.data = torch.where(w.abs() <= thr, torch.zeros_like(w), w)
            ml = torch.cat([F.cross_entropy(masked(X[i:i + 500]), Y[i:i + 500], reduction="none") for i in range(0, len(X), 500)])
            _gamma = ml.mean().item()
            mask_secs.append(time.perf_counter() - t)
            # ID side of the test sets and of validation (the app's preview and complete answers).
            detection(masked, XT, oods[1:])
            detection(masked, XT, oods[:1])
            mask_full_secs.append(time.perf_counter() - t)
            t = time.perf_counter()
            F.cross_entropy(masked(X[:1000]), Y[:1000], reduction="none").mean().item()
            detection(masked, XT[:500], [o[:250] for o in oods[1:]])
            detection(masked, XT[:500], [oods[0][:250]])
            preview_secs.append(time.perf_counter() - t)
            # A snapshot's first answer: its unmasked model on the preview subsets (the full sets'
            # figures are the epoch's records), then the preview and the complete answer above.
            t = time.perf_counter()
            F.cross_entropy(model(X[:1000]), Y[:1000], reduction="none").mean().item()
            detection(model, XT[:500], [o[:250] for o in oods[1:]])
            detection(model, XT[:500], [oods[0][:250]])
            first_secs.append(time.perf_counter() - t + preview_secs[-1] + mask_full_secs[-1])
    r = np.random.default_rng(1)
    s = np.concatenate([r.random(1_000_000, dtype=np.float32) + 0.3, r.random(1_000_000, dtype=np.float32)])
    lab = np.concatenate([np.ones(1_000_000), np.zeros(1_000_000)])
    metric_secs = []
    for _ in range(3):
        t = time.perf_counter()
        roc_auc_score(lab, s)
        roc_curve(lab, s)
        average_precision_score(lab, s)
        average_precision_score(1 - lab, -s)
        metric_secs.append(time.perf_counter() - t)
    ops = layer_timings(torch, nn, F) if args.ops else None
    out = {
        "ops": ops,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        "threads": args.threads,
        "train_samples_per_sec": statistics.median(rates),
        "eval_samples_per_sec": statistics.median(eval_rates),
        "per_sample_loss_pass_secs": statistics.median(pass_secs),
        "mask_ratio_to_gamma_secs": statistics.median(mask_secs),
        "mask_full_secs": statistics.median(mask_full_secs),
        "mask_preview_secs": statistics.median(preview_secs),
        "mask_first_answer_secs": statistics.median(first_secs),
        "metrics_1m_1m_secs": statistics.median(metric_secs),
    }
    print(json.dumps(out, indent=2) if args.json else out)


def layer_timings(torch, nn, F, reps=5):
    """Forward (no_grad) and forward+backward of each SmallCNN layer at batch 128, milliseconds."""
    conv1, conv2 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
    fc1, fc2 = nn.Linear(3136, 128), nn.Linear(128, 10)
    pool = lambda t: F.max_pool2d(F.relu(t), 2)
    cases = [
        ("conv1 1->32 28x28", conv1, (128, 1, 28, 28), False),
        ("relu+pool 32x28x28", pool, (128, 32, 28, 28), True),
        ("conv2 32->64 14x14", conv2, (128, 32, 14, 14), True),
        ("relu+pool 64x14x14", pool, (128, 64, 14, 14), True),
        ("fc1 3136->128", fc1, (128, 3136), True),
        ("fc2 128->10", fc2, (128, 128), True),
    ]

    def timed(run):
        run()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    rows = []
    for name, layer, shape, needs_grad in cases:
        x = torch.rand(shape)

        def forward():
            with torch.no_grad():
                layer(x).sum().item()

        def training():
            layer(x.clone().requires_grad_(needs_grad)).sum().backward()

        rows.append({"layer": name, "forward_ms": timed(forward), "forward_backward_ms": timed(training)})
    return rows


if __name__ == "__main__":
    main()
