"""The imaging tests' reference digit."""

from __future__ import annotations

import numpy as np
import pytest

from streamapp.imaging.tensor import to_tensor
from tests.imaging.drawing import encode, glyph


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The "4" as a clean 8-bit gray PNG, dark on white, through the default mode."""
    return to_tensor(encode(1 - glyph()))
