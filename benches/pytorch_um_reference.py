"""Independent PyTorch run of the reproduction recipe of `unleash reproduce` (optional; never needed
by tests or CI). It answers one question: on this sample data, with these noise definitions, does UM
(gamma from mask ratio 0.7) beat a plain-CE fine-tune of the same length? If PyTorch shows the same
gap as unleash, the gap is in the data / seed noise, not in unleash's implementation.

Recipe (as METHOD.md and `unleash reproduce`): SmallCNN, 40 epochs, SGD momentum 0.9 (dampening 0),
weight decay 5e-4, lr 0.05 cosine per step, batch 128, inputs /255 then normalised with the training
set's mean and std. Then from the final model: UM (L = |CE - gamma| + gamma, gamma = mean training CE
of the model with 70% of each conv/linear weight zeroed by magnitude, eval mode) and a plain-CE control,
each 10 epochs, lr 0.05 cosine, fresh optimizer. Energy score; AUROC (ID positive) per OOD set, mean
over MNIST, textures, Gaussian clip(0.5 + 0.25 z) and uniform U[0,1] noise (2000 each, as bytes).

Usage: python3 benches/pytorch_um_reference.py --seeds 0,1,2 [--threads 2] [--ft-wd 5e-4] [--init DIR]
Prints one JSON line per evaluated stage, then a summary.
"""
import argparse
import copy
import json
import math
import os
import statistics
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--base-epochs", type=int, default=40)
    ap.add_argument("--ft-epochs", type=int, default=10)
    ap.add_argument("--ft-lr", type=float, default=0.05)
    ap.add_argument("--ft-wd", type=float, default=5e-4)
    ap.add_argument("--mask-ratio", type=float, default=0.7)
    ap.add_argument("--ft-shuffle-seed", type=int, default=1000, help="fine-tune shuffle seed = this + seed (replicates)")
    ap.add_argument("--stages", default="um,control")
    ap.add_argument("--orders", help="a file with one line per fine-tune epoch: the training order (sample indices) "
                    "to use instead of a shuffle, e.g. unleash's own order for a step-by-step comparison")
    ap.add_argument("--compare", nargs="*", default=[], metavar="EPOCH=FILE.safetensors",
                    help="after that fine-tune epoch, print the largest weight difference to this model (unleash's snapshot)")
    ap.add_argument("--run-config", help="an unleash run's config.json: train on the samples it trained on (its ID "
                    "validation split held out), as --orders and --init from that run expect")
    ap.add_argument("--cache", default="/tmp/um_reference_cache", help="final base models per seed")
    ap.add_argument("--init", help="folder of seed<N>.safetensors (e.g. `unleash export --epoch 40` of each seed's run): "
                    "start UM and control from these instead of training a base model here")
    args = ap.parse_args()
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score, roc_curve

    torch.set_num_threads(args.threads)
    from torch_smallcnn import SAMPLE_DATA as root, SmallCNN, drop_held_out, read_idx, sgd_epoch
    load = lambda name: read_idx(os.path.join(root, name))
    x_train = load("fashion-train-images-idx3-ubyte.gz")
    y_train = load("fashion-train-labels-idx1-ubyte.gz").astype(np.int64)
    x_train, y_train = drop_held_out(x_train, y_train, args.run_config)
    x_test = load("fashion-t10k-images-idx3-ubyte.gz")
    y_test = load("fashion-t10k-labels-idx1-ubyte.gz").astype(np.int64)
    rng = np.random.default_rng(12345)
    gauss = lambda n, r: np.round(np.clip(0.5 + 0.25 * r.standard_normal((n, 28, 28)), 0, 1) * 255).astype(np.uint8)
    ood_sets = {
        "mnist": load("mnist-t10k-images-idx3-ubyte.gz"),
        "textures": load("textures-images-idx3-ubyte.gz"),
        "gaussian": gauss(2000, rng),
        "uniform": np.round(rng.random((2000, 28, 28)) * 255).astype(np.uint8),
    }
    val_set = gauss(2000, np.random.default_rng(54321))
    mean = (x_train / 255.0).mean()
    std = (x_train / 255.0).std()
    prep = lambda a: torch.from_numpy(((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)).unsqueeze(1)
    X, Y, XT, YT = prep(x_train), torch.from_numpy(y_train), prep(x_test), torch.from_numpy(y_test)
    OOD = {k: prep(v) for k, v in ood_sets.items()}
    VAL = prep(val_set)

    @torch.no_grad()
    def logits_of(model, data):
        model.eval()
        return torch.cat([model(data[i:i + 500]) for i in range(0, len(data), 500)])

    def fpr95(id_s, ood_s):
        y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
        fpr, tpr, _ = roc_curve(y, np.r_[id_s, ood_s])
        return float(fpr[np.searchsorted(tpr, 0.95)])

    def evaluate(model):
        lt = logits_of(model, XT)
        energy = lambda l: torch.logsumexp(l, 1).numpy()
        s_id = energy(lt)
        out = {"acc": float((lt.argmax(1) == YT).float().mean())}
        aurocs, fprs = [], []
        for k, d in OOD.items():
            s = energy(logits_of(model, d))
            y = np.r_[np.ones(len(s_id)), np.zeros(len(s))]
            out[k] = float(roc_auc_score(y, np.r_[s_id, s]))
            aurocs.append(out[k])
            fprs.append(fpr95(s_id, s))
        s = energy(logits_of(model, VAL))
        out["val_auroc"] = float(roc_auc_score(np.r_[np.ones(len(s_id)), np.zeros(len(s))], np.r_[s_id, s]))
        out["mean_auroc"] = float(np.mean(aurocs))
        out["mean_fpr95"] = float(np.mean(fprs))
        return out

    def train(model, epochs, lr, wd, seed, gamma=None, log=None):
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        per_epoch = math.ceil(len(X) / 128)
        g = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            perm = orders[epoch] if orders is not None else torch.randperm(len(X), generator=g)
            losses = sgd_epoch(model, opt, X, Y, perm, gamma, lr, epoch * per_epoch, epochs * per_epoch)
            if log is not None:
                log(epoch + 1, float(np.mean(losses)))
        return model

    def masked_gamma(model, ratio):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for layer in (m.conv1, m.conv2, m.fc1, m.fc2):
                w = layer.weight
                # Half away from zero, as unleash's masked_count (Python's round() would give 2 for 2.5).
                k = math.floor(ratio * w.numel() + 0.5)
                order = w.abs().flatten().argsort(stable=True)[:k]
                w.view(-1)[order] = 0
            lt = logits_of(m, X)
            return float(F.cross_entropy(lt, Y))

    orders = None
    if args.orders:
        orders = [torch.tensor([int(i) for i in line.split()]) for line in open(args.orders)]
    compare = {int(k): v for k, v in (c.split("=", 1) for c in args.compare)}

    def compare_weights(model, epoch):
        if epoch not in compare:
            return
        from safetensors.torch import load_file
        theirs = load_file(compare[epoch])
        diffs = {k: float((v - theirs[k]).abs().max()) for k, v in model.state_dict().items()}
        scale = {k: float(v.abs().max()) for k, v in model.state_dict().items()}
        print(json.dumps({"compare_epoch": epoch, "file": compare[epoch], "max_abs_diff": diffs, "max_abs_weight": scale}), flush=True)

    os.makedirs(args.cache, exist_ok=True)
    results = {"final": [], "um": [], "control": [], "um_best_val": [], "control_best_val": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        path = os.path.join(args.cache, f"seed{seed}_e{args.base_epochs}.pt")
        torch.manual_seed(seed)
        base = SmallCNN()
        t = time.time()
        if args.init:
            from safetensors.torch import load_file
            base.load_state_dict(load_file(os.path.join(args.init, f"seed{seed}.safetensors")), strict=True)
        elif os.path.exists(path):
            base.load_state_dict(torch.load(path))
        else:
            train(base, args.base_epochs, 0.05, 5e-4, seed)
            torch.save(base.state_dict(), path)
        final = evaluate(base)
        gamma = masked_gamma(base, args.mask_ratio)
        print(json.dumps({"seed": seed, "stage": "final", "gamma": gamma, "secs": round(time.time() - t), **final}), flush=True)
        results["final"].append(final)
        for stage, g in [(st, gamma if st == "um" else None) for st in args.stages.split(",")]:
            model = copy.deepcopy(base)
            history = []

            def log(epoch, loss):
                compare_weights(model, epoch)
                ev = evaluate(model)
                history.append(ev)
                print(json.dumps({"seed": seed, "stage": stage, "epoch": epoch, "train_ce": loss, **ev}), flush=True)

            train(model, args.ft_epochs, args.ft_lr, args.ft_wd, args.ft_shuffle_seed + seed, gamma=g, log=log)
            results[stage].append(history[-1])
            results[stage + "_best_val"].append(max(history, key=lambda h: h["val_auroc"]))
    print("summary (Energy, mean over 4 OOD sets, x100, mean ± sd over seeds)")
    for stage, rows in results.items():
        if not rows:
            continue
        col = lambda k: [100 * r[k] for r in rows]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"{stage:18} acc {statistics.mean(col('acc')):5.1f}  AUROC {statistics.mean(col('mean_auroc')):5.1f} ± {sd(col('mean_auroc')):4.1f}"
              f"  FPR95 {statistics.mean(col('mean_fpr95')):5.1f}")


if __name__ == "__main__":
    main()
