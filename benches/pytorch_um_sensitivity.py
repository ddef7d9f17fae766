"""How much one fine-tune epoch amplifies a tiny difference in the starting weights (optional; never
needed by tests or CI). Runs one epoch of UM (flooded CE) and of plain CE from the same model twice,
the second time with every weight nudged by a relative `--nudge` (default 1e-6), with the same
batches, and prints the largest weight difference after the epoch. Used to judge whether two
frameworks that drift apart in a UM phase differ by more than rounding.

Usage: python3 benches/pytorch_um_sensitivity.py --model seed0.safetensors --gamma 0.2053 --orders order.txt
(the model from `unleash export`, the batches from `unleash batch-order`; needs torch and safetensors)
"""
import argparse
import math
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--gamma", type=float, required=True)
    ap.add_argument("--orders", required=True, help="first line: one epoch's sample order")
    ap.add_argument("--run-config", help="the unleash run's config.json: train on the samples it trained on "
                    "(its ID validation split held out), as the --orders indices expect")
    ap.add_argument("--nudge", type=float, default=1e-6)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--epochs-in-phase", type=int, default=10, help="for the cosine schedule's length")
    args = ap.parse_args()
    import torch
    from safetensors.torch import load_file
    from torch_smallcnn import SAMPLE_DATA, SmallCNN, drop_held_out, read_idx, sgd_epoch

    torch.set_num_threads(1)
    x, y = drop_held_out(read_idx(os.path.join(SAMPLE_DATA, "fashion-train-images-idx3-ubyte.gz")),
                         read_idx(os.path.join(SAMPLE_DATA, "fashion-train-labels-idx1-ubyte.gz")), args.run_config)
    x = x.astype(np.float32) / 255.0
    y = torch.from_numpy(y.astype(np.int64))
    X = torch.from_numpy((x - x.mean()) / x.std()).unsqueeze(1)
    with open(args.orders) as f:
        order = torch.tensor([int(i) for i in f.readline().split()])
    steps = args.epochs_in_phase * math.ceil(len(X) / 128)

    def one_epoch(nudge, gamma):
        torch.manual_seed(0)
        m = SmallCNN()
        m.load_state_dict(load_file(args.model), strict=True)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(1 + nudge * torch.randn_like(p))
        opt = torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
        sgd_epoch(m, opt, X, y, order, gamma, args.lr, 0, steps)
        return m.state_dict()

    for name, gamma in (("UM (flooded)", args.gamma), ("plain CE", None)):
        a, b = one_epoch(0.0, gamma), one_epoch(args.nudge, gamma)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        print(f"{name}: largest weight difference after one epoch from a {args.nudge:g} relative nudge: {diff:.4f}")


if __name__ == "__main__":
    main()
