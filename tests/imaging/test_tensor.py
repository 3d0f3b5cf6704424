"""to_tensor's modes (the KServe sample's exact formula, an unknown mode), and transform's choice of thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from streamapp.errors import BadInput
from streamapp.imaging.tensor import INLINE_MAX_PIXELS, to_tensor, transform
from tests.imaging.drawing import encode, glyph, on_paper


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_kserve_sample_mode_is_exactly_the_sample_formula(tmp_path, ext):
    image = on_paper(glyph(size=120), canvas=(150, 130), at=(10, 5), paper=(0.9, 0.8, 0.7), noise=0.02)
    data = encode(image, ext)
    path = tmp_path / f"digit{ext}"
    path.write_bytes(data)
    # the sample's image_transform, verbatim but for the returned shape
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    g = cv2.resize(255 - img, (28, 28))
    g = g.flatten() / 255.0
    expected = np.asarray(g, dtype=np.float32).reshape(28, 28)
    tensor = to_tensor(data, mode="kserve-sample")
    assert tensor.dtype == np.float32 and tensor.shape == (28, 28)
    assert np.array_equal(tensor, expected)


def test_unknown_mode_is_a_programming_error():
    with pytest.raises(ValueError, match="mode"):
        to_tensor(encode(glyph()), mode="imagenet")


class RecordingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.mark.parametrize(("side", "in_thread"), [(28, False), (64, False), (65, True), (400, True)])
def test_transform_gives_to_tensors_answer_inline_for_small_images_and_in_a_thread_for_large(side, in_thread):
    data = encode(on_paper(glyph(size=side * 3 // 4), canvas=(side, side), at=(side // 8, side // 8)), ".png")
    executor = RecordingExecutor()

    async def run() -> np.ndarray:
        asyncio.get_running_loop().set_default_executor(executor)
        return await transform(data)

    tensor = asyncio.run(run())
    assert np.array_equal(tensor, to_tensor(data))
    assert executor.submitted == (1 if in_thread else 0)
    assert side * side <= INLINE_MAX_PIXELS or in_thread


def test_transform_of_bad_bytes_raises_what_to_tensor_raises():
    with pytest.raises(BadInput):
        asyncio.run(transform(b"not an image at all"))
