"""Writes the committed fixtures of tests/import.rs (run from the repository root with torch
installed; the test needs only the files):

- smallcnn_4x4.pt: unleash's SmallCNN for 1x4x4 images and 10 classes, random weights, saved with
  torch.save(model.state_dict()); with input.npy (a fixed batch, already normalised), and the
  PyTorch logits.npy and features.npy (the penultimate activations) of that batch in eval mode.
- hostile and broken checkpoints: a pickle whose values call os.system / builtins.eval through
  GLOBAL + REDUCE (a reader that ran code would create the marker file the test looks for), a
  tensor whose shape is far larger than its storage, and a huge shape.
"""
import io
import os
import sys
import zipfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_smallcnn import SmallCNN  # noqa: E402

OUT = os.path.join("tests", "fixtures", "import")
MARKER = "/tmp/unleash-import-fixture-ran-code"


def small_cnn_fixture():
    torch.manual_seed(25)
    model = SmallCNN(channels=1, classes=10)
    # SmallCNN's fc1 takes 64 * (H/4) * (W/4) inputs: 64 for 4x4 images.
    model.fc1 = torch.nn.Linear(64, 128)
    model.eval()
    torch.save(model.state_dict(), os.path.join(OUT, "smallcnn_4x4.pt"))
    x = torch.randn(6, 1, 4, 4)
    with torch.no_grad():
        h = F_features(model, x)
        logits = model.fc2(h)
    np.save(os.path.join(OUT, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(OUT, "logits.npy"), logits.numpy().astype(np.float32))
    np.save(os.path.join(OUT, "features.npy"), h.numpy().astype(np.float32))


def F_features(model, x):
    import torch.nn.functional as F
    x = F.max_pool2d(F.relu(model.conv1(x)), 2)
    x = F.max_pool2d(F.relu(model.conv2(x)), 2)
    return F.relu(model.fc1(x.flatten(1)))


def rewrite_pickle(src, dst, patch):
    """Copies the zip checkpoint `src` to `dst` with its data.pkl passed through `patch`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = patch(data)
            zout.writestr(item, data)


def hostile_fixtures():
    # A state dict whose one value is os.system("touch MARKER"): GLOBAL 'os system', REDUCE.
    for name, module, func, arg in [("pickle_os_system.pt", "os", "system", f"touch {MARKER}"),
                                    ("pickle_builtins_eval.pt", "builtins", "eval", f"open('{MARKER}', 'w')")]:
        pkl = (b"\x80\x02}q\x00X\x0c\x00\x00\x00conv1.weightq\x01c" + module.encode() + b"\n" + func.encode() + b"\n"
               + b"X" + len(arg).to_bytes(4, "little") + arg.encode() + b"\x85R" + b"s.")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/version", "3\n")
        open(os.path.join(OUT, name), "wb").write(buf.getvalue())
    # A 2x2 tensor (4 floats of storage) whose pickled shape claims 1000x1000, and one whose
    # shape claims 2^31 x 2^31: the reader must check the shape against its storage.
    small = os.path.join(OUT, "_small.pt")
    torch.save({"w": torch.arange(4, dtype=torch.float32).reshape(2, 2)}, small)
    two_by_two = b"K\x02K\x02\x86"
    for name, shape in [("shape_exceeds_storage.pt", b"M\xe8\x03M\xe8\x03\x86"),
                        ("shape_huge.pt", b"J\x00\x00\x00\x80J\x00\x00\x00\x80\x86".replace(b"J\x00\x00\x00\x80", b"\x8a\x05\x00\x00\x00\x80\x00"))]:
        def patch(data, shape=shape):
            assert data.count(two_by_two) == 1, "the size tuple is expected once"
            return data.replace(two_by_two, shape)
        rewrite_pickle(small, os.path.join(OUT, name), patch)
    os.remove(small)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    small_cnn_fixture()
    hostile_fixtures()
    print("wrote", sorted(os.listdir(OUT)))
