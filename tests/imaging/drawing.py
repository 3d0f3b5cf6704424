"""Digits drawn with OpenCV in memory, and measures of a tensor, for the imaging tests."""

from __future__ import annotations

import cv2
import numpy as np


def glyph(text: str = "4", size: int = 200, thickness: int | None = None) -> np.ndarray:
    """White-on-black ink in [0, 1]: ``text`` drawn about ``size`` px tall, anti-aliased."""
    canvas = np.zeros((size, size), np.uint8)
    scale = size / 32
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness or max(1, size // 14))
    origin = ((size - width) // 2, (size + height) // 2)
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness or max(1, size // 14), cv2.LINE_AA)
    return canvas.astype(np.float32) / 255


def on_paper(ink: np.ndarray, paper=(0.92, 0.92, 0.92), pen=(0.1, 0.1, 0.1), canvas=None, at=(0, 0), light=None,
             noise=0.0, seed=0) -> np.ndarray:
    """Dark pen ``ink`` on BGR paper (float [0, 1]), optionally placed on a bigger sheet."""
    height, width = canvas or ink.shape
    alpha = np.zeros((height, width), np.float32)
    alpha[at[0] : at[0] + ink.shape[0], at[1] : at[1] + ink.shape[1]] = ink
    image = np.array(paper, np.float32) * (1 - alpha[..., None]) + np.array(pen, np.float32) * alpha[..., None]
    if light is not None:
        image *= light[..., None]
    if noise:
        image += np.random.default_rng(seed).normal(0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


def encode(image: np.ndarray, ext: str = ".png", params: tuple = (), depth: int = 8) -> bytes:
    """Float [0, 1] image -> encoded bytes at 8 or 16 bits."""
    pixels = (image * 255).round().astype(np.uint8) if depth == 8 else (image * 65535).round().astype(np.uint16)
    ok, buf = cv2.imencode(ext, pixels, list(params))
    assert ok, ext
    return buf.tobytes()


def similar(a: np.ndarray, b: np.ndarray, at_least: float = 0.9) -> bool:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) >= at_least


def ink_box(tensor: np.ndarray, level: float = 0.1) -> tuple[int, int]:
    ys, xs = np.nonzero(tensor > level)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def centre_of_mass(tensor: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(tensor.shape)
    return float((ys * tensor).sum() / tensor.sum()), float((xs * tensor).sum() / tensor.sum())


def seven(size: int, thickness: int) -> np.ndarray:
    """A "7" drawn with a pen ``thickness`` px wide, white on black."""
    ink = np.zeros((size, size), np.uint8)
    points = (np.array([[0.25, 0.15], [0.75, 0.15], [0.45, 0.85]]) * size).astype(np.int32)
    cv2.polylines(ink, [points], False, 255, thickness, cv2.LINE_AA)
    return ink.astype(np.float32) / 255
