"""Tools run beside the pipeline, never imported by a worker: ``streamapp
upload`` (put images and publish their notifications) and ``streamapp bench``.
"""
