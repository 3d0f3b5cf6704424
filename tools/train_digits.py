"""Train the digit CNN ensemble with PyTorch and export it for numpy serving.

Reads: MNIST's training digits less the held-out split
(:func:`tools.mnist_data.training_set`); the held-out split and MNIST's test
digits are only scored, once, after training.
Writes: ``streamapp/assets/digits-model.npz`` (or ``--out``): BatchNorm folded
into float32 weights plus a JSON ``meta`` entry, in the layout
:mod:`streamapp.serving.model` reads.

    .venv/bin/pip install torch==2.13.0        # the ``train`` extra
    .venv/bin/python -m tools.train_digits     # the bundled model; ~32 min on 2 shared cores
    .venv/bin/python -m tools.train_digits --dev --nets 1 --epochs 10   # recipe work

Recipe: each net is a small VGG-style CNN (2x conv3x3 + BN + ReLU, maxpool,
twice; dense + BN + dropout; dense), trained with AdamW, a one-cycle learning
rate and label smoothing on heavily augmented digits: affine (rotation,
scale, aspect, shear, shift), elastic distortion, stroke thickness
(dilate / erode), blur and ink gain. The ensemble averages the nets' softmax.
``--dev`` holds out part of the *training* split for recipe decisions, so
the held-out split is never used to choose anything.

Determinism: every net trains in its own process with one thread,
``torch.use_deterministic_algorithms(True)``, and torch / numpy seeded from
(``--seed``, net index, epoch). Two runs on the same machine (same CPU
instruction set and torch build) write byte-identical files; ``--jobs`` only
changes how many nets train at once, not the result. Another CPU may round
differently in the last bit, and training amplifies that, so expect the same
accuracy there but not the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import multiprocessing
import time
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tools import mnist_data

logger = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parents[1] / "streamapp" / "assets" / "digits-model.npz"
DEV_VALIDATION = 800

# -- augmentation (numpy + OpenCV, seeded) ------------------------------------

_SQUARE2 = np.ones((2, 2), np.uint8)
_CROSS3 = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_GRID_X, _GRID_Y = np.meshgrid(np.arange(28, dtype=np.float32), np.arange(28, dtype=np.float32))


def _affine(angle: float, scale: float, aspect: float, shear: float, shift: np.ndarray) -> np.ndarray:
    """2x3 matrix: shear, scale and rotate about the image centre, then shift."""
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.array([[cos, -sin], [sin, cos]])
    linear = rotate @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale * aspect, scale / aspect])
    centre = np.array([13.5, 13.5])
    return np.hstack([linear, (centre - linear @ centre + shift)[:, None]]).astype(np.float32)


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly distorted copy of (N, 28, 28) float32 digits; pure given ``rng``."""
    n = len(images)
    angle = np.deg2rad(rng.uniform(-15, 15, n))
    scale = rng.uniform(0.8, 1.15, n)
    aspect = rng.uniform(0.88, 1.12, n)
    shear = rng.uniform(-0.25, 0.25, n)
    shift = rng.uniform(-2.5, 2.5, (n, 2))
    elastic = rng.random(n) < 0.35
    stroke = rng.random(n)
    blur = rng.random(n) < 0.15
    sigma = rng.uniform(0.4, 0.9, n)
    gain = rng.uniform(0.75, 1.0, n)
    out = np.empty_like(images)
    for i in range(n):
        img = cv2.warpAffine(
            images[i], _affine(angle[i], scale[i], aspect[i], shear[i], shift[i]), (28, 28),
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        if elastic[i]:
            # Simard-style: smoothed random displacement fields, ~1-2 px
            field = rng.uniform(-1, 1, (2, 28, 28)).astype(np.float32)
            dx = cv2.GaussianBlur(field[0], (0, 0), 4) * 34
            dy = cv2.GaussianBlur(field[1], (0, 0), 4) * 34
            img = cv2.remap(img, _GRID_X + dx, _GRID_Y + dy, cv2.INTER_LINEAR, borderValue=0)
        if stroke[i] < 0.2:
            img = cv2.dilate(img, _SQUARE2)
        elif stroke[i] < 0.3:
            img = cv2.dilate(img, _CROSS3)
        elif stroke[i] < 0.45:
            thinner = cv2.erode(img, _SQUARE2)
            # thin strokes may vanish under erosion; keep those as they are
            if thinner.sum() > 0.45 * img.sum():
                img = thinner
        if blur[i]:
            img = cv2.GaussianBlur(img, (0, 0), sigma[i])
            img /= max(float(img.max()), 1e-6)
        out[i] = np.clip(img * gain[i], 0.0, 1.0)
    return out


# -- the network ---------------------------------------------------------------


def architecture(c1: int, c2: int, fc: int) -> list[dict[str, Any]]:
    """The serving-side layer list (BatchNorm folded away, dropout dropped)."""
    return [
        {"op": "conv", "name": "c1", "pad": 1, "shape": [3, 3, 1, c1]},
        {"op": "relu"},
        {"op": "conv", "name": "c2", "pad": 1, "shape": [3, 3, c1, c1]},
        {"op": "relu"},
        {"op": "maxpool", "size": 2},
        {"op": "conv", "name": "c3", "pad": 1, "shape": [3, 3, c1, c2]},
        {"op": "relu"},
        {"op": "conv", "name": "c4", "pad": 1, "shape": [3, 3, c2, c2]},
        {"op": "relu"},
        {"op": "maxpool", "size": 2},
        {"op": "flatten"},
        {"op": "dense", "name": "f1", "shape": [7 * 7 * c2, fc]},
        {"op": "relu"},
        {"op": "dense", "name": "f2", "shape": [fc, 10]},
    ]


def build_net(c1: int, c2: int, fc: int, dropout: float):  # -> torch.nn.Module
    import torch.nn as nn

    def block(c_in: int, c_out: int) -> list:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(1, c1), *block(c1, c1), nn.MaxPool2d(2),
        *block(c1, c2), *block(c2, c2), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(7 * 7 * c2, fc, bias=False), nn.BatchNorm1d(fc), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(fc, 10),
    )


def fold(state: dict[str, np.ndarray], c2: int) -> dict[str, np.ndarray]:
    """Torch state (numpy) -> serving weights: BN folded, NHWC layouts."""
    # indices of the layers in build_net's Sequential
    convs = {"c1": (0, 1), "c2": (3, 4), "c3": (7, 8), "c4": (10, 11)}
    out: dict[str, np.ndarray] = {}

    def bn(index: int) -> tuple[np.ndarray, np.ndarray]:
        gamma, beta = state[f"{index}.weight"], state[f"{index}.bias"]
        mean, var = state[f"{index}.running_mean"], state[f"{index}.running_var"]
        factor = gamma / np.sqrt(var + 1e-5)
        return factor, beta - mean * factor

    for name, (conv, norm) in convs.items():
        factor, bias = bn(norm)
        weight = state[f"{conv}.weight"] * factor[:, None, None, None]  # (out, in, kh, kw)
        out[f"{name}.w"] = weight.transpose(2, 3, 1, 0)
        out[f"{name}.b"] = bias
    factor, bias = bn(17)
    dense = state["16.weight"] * factor[:, None]  # (fc, c2*7*7) in NCHW flatten order
    fc = dense.shape[0]
    out["f1.w"] = dense.reshape(fc, c2, 7, 7).transpose(2, 3, 1, 0).reshape(7 * 7 * c2, fc)
    out["f1.b"] = bias
    out["f2.w"] = state["20.weight"].T
    out["f2.b"] = state["20.bias"]
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in out.items()}


# -- training one net (its own process, one thread) ----------------------------


def train_net(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    torch.use_deterministic_algorithms(True)
    seed, index, cfg = job["seed"], job["index"], job["cfg"]
    torch.manual_seed(seed * 1000 + index)

    images, labels = job["images"], job["labels"]
    net = build_net(cfg["c1"], cfg["c2"], cfg["fc"], cfg["dropout"])
    steps_per_epoch = (len(images) + cfg["batch"] - 1) // cfg["batch"]
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], epochs=cfg["epochs"], steps_per_epoch=steps_per_epoch, pct_start=0.25,
    )
    log = []
    started = time.monotonic()
    for epoch in range(cfg["epochs"]):
        rng = np.random.default_rng([seed, index, epoch])
        order = rng.permutation(len(images))
        batch_x = torch.from_numpy(augment(images[order], rng)).unsqueeze(1)
        batch_y = torch.from_numpy(labels[order])
        net.train()
        total = 0.0
        for step in range(steps_per_epoch):
            part = slice(step * cfg["batch"], (step + 1) * cfg["batch"])
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(batch_x[part]), batch_y[part], label_smoothing=cfg["smoothing"])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch_y[part])
        entry = {"epoch": epoch + 1, "loss": round(total / len(images), 4), "seconds": round(time.monotonic() - started, 1)}
        if job["val_images"] is not None and ((epoch + 1) % 5 == 0 or epoch + 1 == cfg["epochs"]):
            predicted = torch_logits(net, job["val_images"]).argmax(1)
            entry["val_accuracy"] = round(float((predicted == job["val_labels"]).mean()), 4)
        log.append(entry)
        print(f"net {index} {entry}", flush=True)
    state = {key: value.detach().numpy().copy() for key, value in net.state_dict().items()}
    return {"index": index, "state": state, "log": log}


def torch_logits(net, images: np.ndarray) -> np.ndarray:
    import torch

    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(images).unsqueeze(1)).numpy()


def torch_proba(states: list[dict[str, np.ndarray]], cfg: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """The ensemble's probabilities computed by torch itself, for the parity check."""
    import torch

    probs = np.zeros((len(images), 10), np.float32)
    for state in states:
        net = build_net(cfg["c1"], cfg["c2"], cfg["fc"], cfg["dropout"])
        net.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
        probs += torch.softmax(torch.from_numpy(torch_logits(net, images)), 1).numpy()
    return probs / len(states)


# -- export ----------------------------------------------------------------------


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but byte-reproducible: fixed zip timestamps and order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.asarray(arrays[key]), allow_pickle=False)
            archive.writestr(entry, payload.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--nets", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=3, help="nets trained at once (result does not depend on it)")
    parser.add_argument("--c1", type=int, default=24)
    parser.add_argument("--c2", type=int, default=48)
    parser.add_argument("--fc", type=int, default=128)
    parser.add_argument("--dev", action="store_true", help=f"validate on {DEV_VALIDATION} training images; export nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    cfg = {
        "c1": args.c1, "c2": args.c2, "fc": args.fc, "dropout": 0.3, "epochs": args.epochs,
        "batch": 128, "lr": 3e-3, "weight_decay": 5e-4, "smoothing": 0.1,
    }
    images, labels = mnist_data.load()
    parts = mnist_data.split(labels)
    train_x, train_y = mnist_data.training_set()
    val_x = val_y = None
    if args.dev:
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(train_x))
        val_x, val_y = train_x[order[:DEV_VALIDATION]], train_y[order[:DEV_VALIDATION]]
        train_x, train_y = train_x[order[DEV_VALIDATION:]], train_y[order[DEV_VALIDATION:]]
    jobs = [
        {"seed": args.seed, "index": i, "cfg": cfg, "images": train_x, "labels": train_y,
         "val_images": val_x, "val_labels": val_y}
        for i in range(args.nets)
    ]
    started = time.monotonic()
    if args.jobs > 1 and args.nets > 1:
        with multiprocessing.get_context("spawn").Pool(min(args.jobs, args.nets)) as pool:
            results = pool.map(train_net, jobs)
    else:
        results = [train_net(job) for job in jobs]
    results.sort(key=lambda result: result["index"])
    minutes = (time.monotonic() - started) / 60
    logger.info("trained %d nets in %.1f min", args.nets, minutes)
    states = [result["state"] for result in results]
    if args.dev:
        probs = torch_proba(states, cfg, val_x)
        print(f"dev validation accuracy (ensemble): {(probs.argmax(1) == val_y).mean():.4f}")
        return

    from streamapp.serving.model import DigitModel

    arrays: dict[str, np.ndarray] = {}
    for index, state in enumerate(states):
        for key, value in fold(state, cfg["c2"]).items():
            arrays[f"net{index}.{key}"] = value
    meta: dict[str, Any] = {
        "format": 1,
        "architecture": architecture(cfg["c1"], cfg["c2"], cfg["fc"]),
        "nets": args.nets,
        "input": "(28, 28) float32 in [0, 1], white ink on black, MNIST-centred",
        "training": {**cfg, "seed": args.seed, "train_images": len(train_x),
                     "torch": __import__("torch").__version__},
        "data": {"package": mnist_data.PACKAGE, "integrity": mnist_data.INTEGRITY,
                 "training": {"package": mnist_data.FULL_PACKAGE, "integrity": mnist_data.FULL_INTEGRITY,
                              "file": "train, less the held-out split"},
                 "split": mnist_data.split_digest(parts), "held_out_images": len(parts.held_out)},
    }
    # score the numpy model on the held-out split once, and check it matches torch
    held_x, held_y = images[parts.held_out], labels[parts.held_out]
    write_npz(args.out, {**arrays, "meta": np.array(json.dumps(meta))})
    exported = DigitModel.load(args.out)
    numpy_probs = exported.predict_proba(held_x)
    parity = float(np.abs(numpy_probs - torch_proba(states, cfg, held_x)).max())
    accuracy = float((numpy_probs.argmax(1) == held_y).mean())
    single = [float((torch_proba([s], cfg, held_x).argmax(1) == held_y).mean()) for s in states]
    test_x, test_y = mnist_data.mnist_test()
    test_accuracy = float((exported.predict(test_x) == test_y).mean())
    meta["held_out_accuracy"] = round(accuracy, 5)
    meta["held_out_accuracy_per_net"] = [round(a, 5) for a in single]
    meta["mnist_test_accuracy"] = round(test_accuracy, 5)
    meta["parity_max_abs_diff"] = parity
    write_npz(args.out, {**arrays, "meta": np.array(json.dumps(meta))})
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()[:12]
    print(f"held-out accuracy {accuracy:.4f} (per net {single}), MNIST test {test_accuracy:.4f}; "
          f"numpy vs torch max |dp| {parity:.2e}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, version {digest})")
    if parity > 1e-4:
        raise SystemExit(f"numpy forward pass differs from torch by {parity:.2e} > 1e-4")


if __name__ == "__main__":
    main()
