"""PyTorch check of `unleash import` (issue 25).

Builds OpenOOD's CIFAR ResNet-18 (`ResNet18_32x32`: 3x3 stem without max-pool, four stages of two
basic blocks with 1x1-conv+BN shortcuts, global average pool, `fc`), written here from the
architecture, and unleash's SmallCNN (benches/torch_smallcnn.py), with random weights and
randomised BatchNorm statistics; saves each with `torch.save(model.state_dict())`; computes their
eval-mode logits and penultimate features for a fixed batch; then

1. runs `unleash import` on each checkpoint and compares the run's per-sample scores of the ID test
   set (MaxLogit = max logit, Energy = logsumexp of the logits) and its per-sample training loss
   with PyTorch's, and
2. writes the fixed batches, logits and features for `tests/import.rs`'s ignored test
   (`UNLEASH_TORCH_REF=DIR cargo test --release --test import -- --ignored`), which compares the
   logits and features of the imported model themselves.

Usage: python benches/torch_import_reference.py OUT_DIR [UNLEASH_BINARY]
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_smallcnn import SAMPLE_DATA, ResNet18x32, SmallCNN, drop_held_out, read_idx  # noqa: E402

CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2470, 0.2435, 0.2616]


def small_cnn_features(m, x):
    x = F.max_pool2d(F.relu(m.conv1(x)), 2)
    x = F.max_pool2d(F.relu(m.conv2(x)), 2)
    return F.relu(m.fc1(x.flatten(1)))


def randomise_bn(model, gen):
    """Random affine parameters and running statistics, so that eval mode is really tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.randn(c, generator=gen) * 0.1
            m.running_mean = torch.randn(c, generator=gen) * 0.1
            m.running_var = torch.rand(c, generator=gen) + 0.5
            m.num_batches_tracked.fill_(123)


def write_cifar_bin(path, images, labels):
    rec = np.concatenate([labels.reshape(-1, 1).astype(np.uint8), images.reshape(len(images), -1)], axis=1)
    rec.tofile(path)


def normalise(u8, mean, std):
    x = torch.from_numpy(u8.astype(np.float32) / 255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def run_import(binary, args):
    print("$", os.path.basename(binary), " ".join(args), flush=True)
    subprocess.run([binary] + args, check=True)


def scores(run, epoch, set_name):
    cfg = json.load(open(os.path.join(run, "config.json")))
    arr = np.load(os.path.join(run, "epochs", f"{epoch:04d}", f"scores_{set_name}.npy"))
    cols = cfg["score_columns"]
    return {c: arr[:, i] for i, c in enumerate(cols)}, cfg


def compare_run(name, run, test_logits, train_logits, train_labels):
    got, cfg = scores(run, 1, "id_test")
    max_logit = test_logits.max(1)
    energy = torch.logsumexp(torch.from_numpy(test_logits).double(), 1).numpy()
    d_max = np.abs(got["maxlogit"] - max_logit).max()
    d_energy = np.abs(got["energy"] - energy).max()
    x_train, y_train = drop_held_out(train_logits, train_labels, os.path.join(run, "config.json"))
    ce = F.cross_entropy(torch.from_numpy(x_train).double(), torch.from_numpy(y_train.astype(np.int64)), reduction="none").numpy()
    loss = np.load(os.path.join(run, "per_sample_loss.npy"))
    d_loss = np.abs(loss[0] - ce).max()
    print(f"{name}: {len(max_logit)} ID test samples: max |MaxLogit diff| {d_max:.3g}, max |Energy diff| {d_energy:.3g}; "
          f"{len(ce)} training samples: max |per-sample CE diff| {d_loss:.3g}")
    return max(d_max, d_energy, d_loss)


def main():
    out = os.path.abspath(sys.argv[1])
    binary = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "unleash")
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(25)
    torch.manual_seed(25)
    worst = 0.0

    # ResNet18_32x32 on CIFAR-format batches of random images (the check is of the arithmetic).
    resnet = ResNet18x32()
    randomise_bn(resnet, gen)
    resnet.eval()
    torch.save(resnet.state_dict(), os.path.join(out, "resnet18_32x32.pt"))
    rng = np.random.default_rng(25)
    data = {}
    for split, n in [("train", 200), ("test", 100)]:
        imgs = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_cifar_bin(os.path.join(out, f"{split}.bin"), imgs, labels)
        data[split] = (imgs, labels)
    with torch.no_grad():
        logits = {k: resnet(normalise(v[0], CIFAR10_MEAN, CIFAR10_STD)).numpy() for k, v in data.items()}
        batch = normalise(data["test"][0][:8], CIFAR10_MEAN, CIFAR10_STD)
        np.save(os.path.join(out, "resnet_input.npy"), batch.numpy())
        np.save(os.path.join(out, "resnet_logits.npy"), resnet(batch).numpy())
        np.save(os.path.join(out, "resnet_features.npy"), resnet.features(batch).numpy())
    run = os.path.join(out, "resnet-run")
    run_import(binary, ["import", "--model", os.path.join(out, "resnet18_32x32.pt"), "--arch", "resnet18", "--key-map", "openood",
                        "--normalize", "cifar10", "--train", os.path.join(out, "train.bin"), "--test", os.path.join(out, "test.bin"),
                        "--val-ood", "uniform:40:1", "--ood", "gaussian:40", "--device", "cpu", "--out", run])
    worst = max(worst, compare_run("ResNet18_32x32", run, logits["test"], logits["train"], data["train"][1]))

    # SmallCNN on the sample data (Fashion-MNIST), with a normalisation given explicitly.
    cnn = SmallCNN(channels=1, classes=10)
    cnn.eval()
    torch.save(cnn.state_dict(), os.path.join(out, "smallcnn.pt"))
    mean, std = [0.2860], [0.3530]
    x_train = read_idx(os.path.join(SAMPLE_DATA, "fashion-train-images-idx3-ubyte.gz"))[:600, None]
    y_train = read_idx(os.path.join(SAMPLE_DATA, "fashion-train-labels-idx1-ubyte.gz"))[:600]
    x_test = read_idx(os.path.join(SAMPLE_DATA, "fashion-t10k-images-idx3-ubyte.gz"))[:, None]
    with torch.no_grad():
        train_logits = cnn(normalise(x_train, mean, std)).numpy()
        test_logits = cnn(normalise(x_test, mean, std)).numpy()
        batch = normalise(x_test[:8], mean, std)
        np.save(os.path.join(out, "smallcnn_input.npy"), batch.numpy())
        np.save(os.path.join(out, "smallcnn_logits.npy"), cnn(batch).numpy())
        np.save(os.path.join(out, "smallcnn_features.npy"), small_cnn_features(cnn, batch).numpy())
    run = os.path.join(out, "smallcnn-run")
    run_import(binary, ["import", "--model", os.path.join(out, "smallcnn.pt"), "--arch", "small-cnn", "--normalize", "0.2860,0.3530",
                        "--train", os.path.join(SAMPLE_DATA, "fashion-train-images-idx3-ubyte.gz"), "--train-limit", "600",
                        "--test", os.path.join(SAMPLE_DATA, "fashion-t10k-images-idx3-ubyte.gz"),
                        "--val-ood", "uniform:40:1", "--ood", "gaussian:40", "--device", "cpu", "--out", run])
    worst = max(worst, compare_run("SmallCNN", run, test_logits, train_logits, y_train))
    print(f"worst difference over both models: {worst:.3g} (limit 1e-4)")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
