"""streamapp: S3 notifications -> digits, as a topology of Faust agents.

``faust -A streamapp worker`` imports this package and reads ``app``. The app
is built on first access (PEP 562 module ``__getattr__``), so importing a pure
module such as ``streamapp.pipeline.events`` or starting the predictor server does not
pull in Faust or read the pipeline's settings.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        import streamapp.app as module

        # Importing the submodule binds ``streamapp.app`` to the *module*;
        # rebind it to the Faust app, which is what ``-A streamapp`` wants.
        globals()["app"] = module.app
        return module.app
    raise AttributeError(f"module 'streamapp' has no attribute {name!r}")
