"""Independent reference for unleash's OOD detectors, written from the papers' definitions (and
their authors' code where the paper leaves a choice) in PyTorch, numpy and scikit-learn. It shares
nothing with unleash but the exported model file and the data.

Two jobs:

  check    python3 benches/detectors_reference.py check --run R --model M.safetensors --eval E.json
           Scores the exported model on the run's data (training set for the fits, ID test set, and
           every test OOD set read from a file; the generated noise sets are left out) and compares
           each detector's AUROC with `unleash eval --model M --run R --json > E.json`
           (add `--odin` with a run or config that enables ODIN).

  fixture  python3 benches/detectors_reference.py fixture --run R --model M.safetensors
           Writes tests/fixtures/detectors_reference.json (+ .npy feature matrices): a subsample of the
           model's real penultimate features, its last layer, and every detector's scores and AUROC;
           and tests/fixtures/odin_reference.{json,safetensors}: a tiny seeded MLP, inputs and ODIN
           scores. tests/detectors_reference.rs checks unleash against them.

Needs torch, numpy, scikit-learn, safetensors.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.covariance import EmpiricalCovariance
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_smallcnn import SmallCNN, drop_held_out, read_idx  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SETTINGS = {"knn_k": 50, "react_percentile": 90.0, "ash_percentile": 90.0, "dice_percentile": 90.0,
            "odin_temperature": 1000.0, "odin_epsilon": 0.0014}


class Penultimate(nn.Module):
    """SmallCNN split at the last linear layer: features (its input) and logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        x = F.max_pool2d(F.relu(n.conv1(x)), 2)
        x = F.max_pool2d(F.relu(n.conv2(x)), 2)
        f = F.relu(n.fc1(x.flatten(1)))
        return f, n.fc2(f)


# ---- the detectors, from the papers -------------------------------------------------------------

def energy(logits):
    return torch.logsumexp(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()


def fit_mahalanobis(train_f, train_y, classes):
    """Lee et al. 2018 (penultimate layer): class means, one covariance of the class-centred
    features (sklearn's EmpiricalCovariance as in the authors' code), its pseudo-inverse."""
    means = np.stack([train_f[train_y == c].mean(0) for c in range(classes)])
    centred = train_f - means[train_y]
    cov = EmpiricalCovariance(assume_centered=False).fit(centred).covariance_
    precision = np.linalg.pinv(cov, rcond=cov.shape[0] * np.finfo(np.float64).eps, hermitian=True)
    return means, precision


def mahalanobis(f, fit):
    means, precision = fit
    d = np.stack([np.einsum("ij,jk,ik->i", f - m, precision, f - m) for m in means], axis=1)
    return -d.min(1)


def knn(f, train_f, k):
    """Sun et al. 2022: normalised features, -(distance to the k-th nearest training feature)."""
    norm = lambda x: x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-10)  # noqa: E731
    q, b = norm(f), norm(train_f)
    d2 = (q * q).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * q @ b.T
    kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return -np.sqrt(np.maximum(kth, 0))


def fit_vim(train_f, train_logits, w, b, dim):
    """Wang et al. 2022: origin -pinv(W) b, principal subspace of the features centred there,
    alpha from the training set (as the authors' code)."""
    u = -np.linalg.pinv(w, rcond=max(w.shape) * np.finfo(np.float64).eps) @ b
    cov = EmpiricalCovariance(assume_centered=True).fit(train_f - u).covariance_
    vals, vecs = np.linalg.eigh(cov)
    ns = vecs[:, np.argsort(-vals)[dim:]]
    residual = np.linalg.norm((train_f - u) @ ns, axis=1)
    alpha = train_logits.max(1).mean() / residual.mean()
    return u, ns, alpha


def vim(f, logits, fit):
    u, ns, alpha = fit
    return energy(logits) - alpha * np.linalg.norm((f - u) @ ns, axis=1)


def react(f, threshold, w, b):
    """Sun et al. 2021: clip at the percentile of the training activations, then Energy."""
    return energy(np.minimum(f, threshold) @ w.T + b)


def ash_s(f, percentile, w, b):
    """Djurisic et al. 2023, the authors' ash_s on a feature vector: keep the top
    n - round(n p / 100), scale by exp(s1 / s2), then Energy. A row with nothing left stays 0."""
    x = torch.as_tensor(f, dtype=torch.float64)
    n = x.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    s1 = x.sum(1)
    v, i = torch.topk(x, k, dim=1)
    t = torch.zeros_like(x).scatter_(1, i, v)
    s2 = t.sum(1)
    scale = torch.where(s2 != 0, s1 / torch.where(s2 != 0, s2, torch.ones_like(s2)), torch.zeros_like(s2))
    t = torch.where((s2 != 0)[:, None], t * torch.exp(scale[:, None]), torch.zeros_like(t))
    return energy(t.numpy() @ w.T + b)


def dice(f, train_f, percentile, w, b):
    """Sun & Li 2022: keep the weights whose contribution (mean training feature x weight) is above
    the percentile, then Energy."""
    contrib = train_f.mean(0)[None, :] * w
    mask = contrib > np.percentile(contrib, percentile)
    return energy(f @ (w * mask).T + b)


def odin(model, x, temperature, epsilon):
    """Liang et al. 2018: one step against the gradient of the tempered CE of the predicted class
    on the (normalised) input, then MSP at temperature T, reported as T (log MSP_T + log C)."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits / temperature, logits.argmax(1), reduction="sum")
    loss.backward()
    sign = (x.grad >= 0).double() * 2 - 1
    with torch.no_grad():
        out = model(x - epsilon * sign).double() / temperature
    logp = torch.log_softmax(out, dim=1).max(1).values
    return (temperature * (logp + np.log(out.shape[1]))).numpy()


def all_scores(f, logits, fits, w, b, train_f):
    return {
        "msp": torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), 1).max(1).values.numpy(),
        "maxlogit": logits.max(1),
        "energy": energy(logits),
        "mahalanobis": mahalanobis(f, fits["mahalanobis"]),
        "knn": knn(f, train_f, SETTINGS["knn_k"]),
        "vim": vim(f, logits, fits["vim"]),
        "react": react(f, fits["react"], w, b),
        "ash": ash_s(f, SETTINGS["ash_percentile"], w, b),
        "dice": dice(f, train_f, SETTINGS["dice_percentile"], w, b),
    }


def fit_all(train_f, train_y, train_logits, w, b, classes):
    return {
        "mahalanobis": fit_mahalanobis(train_f, train_y, classes),
        "vim": fit_vim(train_f, train_logits, w, b, train_f.shape[1] // 2),
        "react": np.percentile(train_f.flatten(), SETTINGS["react_percentile"]),
    }


def auroc(id_scores, ood_scores):
    y = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    return float(roc_auc_score(y, np.concatenate([id_scores, ood_scores])))


# ---- data and model -------------------------------------------------------------------------------

def load_run(run, model_path):
    with open(os.path.join(run, "config.json")) as fh:
        cfg = json.load(fh)
    norm = cfg["normalization"]
    mean, std = np.float32(norm["mean"][0]), np.float32(norm["std"][0])
    prep = lambda x: torch.from_numpy(((x.astype(np.float32) / np.float32(255.0) - mean) / std)[:, None])  # noqa: E731
    data = cfg["experiment"]["data"]
    x, y = read_idx(data["train"]), read_idx(data["train"].replace("images-idx3", "labels-idx1")).astype(np.int64)
    x, y = drop_held_out(x, y, os.path.join(run, "config.json"))
    if data.get("train_limit"):
        x, y = x[: data["train_limit"]], y[: data["train_limit"]]
    sets = {"train": (prep(x), y)}
    tx = read_idx(data["test"])
    sets["id_test"] = (prep(tx), None)
    for name, path in zip(cfg["ood"], data["ood"]):
        if os.path.exists(path):
            sets[name] = (prep(read_idx(path)), None)
    net = SmallCNN(channels=1, classes=cfg["classes"]).double()
    net.load_state_dict({k: v.double() for k, v in load_file(model_path).items()})
    net.eval()
    return cfg, sets, net


def embed(net, x, batch=1000):
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            f, lg = Penultimate(net)(x[i:i + batch].double())
            feats.append(f.numpy())
            logits.append(lg.numpy())
    return np.concatenate(feats), np.concatenate(logits)


def check(args):
    cfg, sets, net = load_run(args.run, args.model)
    w, b = net.fc2.weight.detach().numpy(), net.fc2.bias.detach().numpy()
    train_f, train_logits = embed(net, sets["train"][0])
    fits = fit_all(train_f, sets["train"][1], train_logits, w, b, cfg["classes"])
    with open(args.eval) as fh:
        ours = json.load(fh)["ood"]
    id_f, id_logits = embed(net, sets["id_test"][0])
    id_scores = all_scores(id_f, id_logits, fits, w, b, train_f)
    if args.odin:
        id_scores["odin"] = odin(net, sets["id_test"][0].double(), SETTINGS["odin_temperature"], SETTINGS["odin_epsilon"])
    worst = {}
    print(f"{'set':<28}{'score':<13}{'reference':>11}{'unleash':>11}{'diff':>11}")
    for name in [n for n in sets if n not in ("train", "id_test")]:
        f, logits = embed(net, sets[name][0])
        scores = all_scores(f, logits, fits, w, b, train_f)
        if args.odin:
            scores["odin"] = odin(net, sets[name][0].double(), SETTINGS["odin_temperature"], SETTINGS["odin_epsilon"])
        for key, s in scores.items():
            ref = auroc(id_scores[key], s)
            got = ours[name][key]["auroc"]
            worst[key] = max(worst.get(key, 0.0), abs(ref - got))
            print(f"{name:<28}{key:<13}{ref:>11.6f}{got:>11.6f}{ref - got:>11.2e}")
    print("largest |difference| per score:", json.dumps({k: float(f"{v:.2e}") for k, v in worst.items()}))
    tolerance = {k: (1e-3 if k == "odin" else 1e-4) for k in worst}
    failed = [k for k, v in worst.items() if v > tolerance[k]]
    if failed:
        sys.exit(f"AUROC differs by more than the tolerance for: {', '.join(failed)}")


def fixture(args):
    cfg, sets, net = load_run(args.run, args.model)
    w, b = net.fc2.weight.detach().numpy(), net.fc2.bias.detach().numpy()
    rng = np.random.default_rng(0)
    pick = lambda n, k: np.sort(rng.choice(n, size=k, replace=False))  # noqa: E731
    tx, ty = sets["train"]
    ti = pick(len(tx), args.train)
    train_f, train_logits = embed(net, tx[ti])
    train_y = ty[ti]
    ood_name = next(n for n in sets if n not in ("train", "id_test"))
    id_f, id_logits = embed(net, sets["id_test"][0][pick(len(sets["id_test"][0]), args.queries)])
    ood_f, ood_logits = embed(net, sets[ood_name][0][pick(len(sets[ood_name][0]), args.queries)])
    # The fixture's inputs are float32, as unleash reads them; the reference computes from those.
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    train_f, train_logits, id_f, id_logits, ood_f, ood_logits = map(f32, (train_f, train_logits, id_f, id_logits, ood_f, ood_logits))
    w32, b32 = f32(w), f32(b)
    wd, bd = w32.astype(np.float64), b32.astype(np.float64)
    d64 = lambda a: a.astype(np.float64)  # noqa: E731
    fits = fit_all(d64(train_f), train_y, d64(train_logits), wd, bd, cfg["classes"])
    sid = all_scores(d64(id_f), d64(id_logits), fits, wd, bd, d64(train_f))
    sood = all_scores(d64(ood_f), d64(ood_logits), fits, wd, bd, d64(train_f))
    for name, arr in [("train_features", train_f), ("train_logits", train_logits), ("id_features", id_f), ("id_logits", id_logits),
                      ("ood_features", ood_f), ("ood_logits", ood_logits), ("weight", w32)]:
        np.save(os.path.join(FIXTURES, f"detectors_{name}.npy"), arr)
    out = {
        "about": "Made by benches/detectors_reference.py fixture from a SmallCNN trained on the sample data; "
                 "features are a seeded subsample; scores computed in float64 from the float32 arrays.",
        "model": os.path.basename(args.model), "ood_set": ood_name, "settings": SETTINGS,
        "vim_dim": int(train_f.shape[1] // 2),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "train_labels": train_y.tolist(), "bias": b32.tolist(),
        "id_scores": {k: v.tolist() for k, v in sid.items()},
        "ood_scores": {k: v.tolist() for k, v in sood.items()},
        "auroc": {k: auroc(sid[k], sood[k]) for k in sid},
    }
    with open(os.path.join(FIXTURES, "detectors_reference.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    odin_fixture()
    print("AUROC:", json.dumps(out["auroc"], indent=1))


def odin_fixture():
    """A tiny seeded MLP (unleash's Mlp layout: fc1 -> ReLU -> fc2) on 4x4 inputs, 3 classes."""
    g = torch.Generator().manual_seed(0)
    fc1_w, fc1_b = torch.randn(256, 16, generator=g) * 0.5, torch.randn(256, generator=g) * 0.1
    fc2_w, fc2_b = torch.randn(3, 256, generator=g) * 0.2, torch.randn(3, generator=g) * 0.1
    tensors = {"fc1.weight": fc1_w, "fc1.bias": fc1_b, "fc2.weight": fc2_w, "fc2.bias": fc2_b}
    save_file(tensors, os.path.join(FIXTURES, "odin_mlp.safetensors"))
    model = lambda x: F.linear(F.relu(F.linear(x.flatten(1), fc1_w.double(), fc1_b.double())), fc2_w.double(), fc2_b.double())  # noqa: E731
    x = (torch.randn(40, 1, 4, 4, generator=g)).float()
    scores = odin(model, x.double(), SETTINGS["odin_temperature"], SETTINGS["odin_epsilon"])
    plain = odin(model, x.double(), SETTINGS["odin_temperature"], 0.0)
    out = {"about": "Made by benches/detectors_reference.py fixture: a seeded MLP, 40 inputs (already normalised), ODIN.",
           "settings": SETTINGS, "shape": [1, 4, 4], "classes": 3, "inputs": x.flatten().tolist(),
           "odin": scores.tolist(), "without_step": plain.tolist()}
    with open(os.path.join(FIXTURES, "odin_reference.json"), "w") as fh:
        json.dump(out, fh, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="job", required=True)
    c = sub.add_parser("check")
    c.add_argument("--run", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--eval", required=True, help="unleash eval --json output for the same model and run")
    c.add_argument("--odin", action="store_true")
    fx = sub.add_parser("fixture")
    fx.add_argument("--run", required=True)
    fx.add_argument("--model", required=True)
    fx.add_argument("--train", type=int, default=300)
    fx.add_argument("--queries", type=int, default=80)
    args = p.parse_args()
    torch.set_grad_enabled(True)
    check(args) if args.job == "check" else fixture(args)


if __name__ == "__main__":
    main()
