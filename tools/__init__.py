"""Developer tools: MNIST data, training, evaluation and bundled samples.

Not part of the served package; run from the repository root, e.g.
``.venv/bin/python -m tools.evaluate``.
"""
