"""``python -m streamapp``: the same as the ``streamapp`` command."""

from streamapp.cli import main

raise SystemExit(main())
