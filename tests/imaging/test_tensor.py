"""to_tensor's modes: the KServe sample's exact formula, and what an unknown mode is."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamapp.imaging.tensor import to_tensor
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
