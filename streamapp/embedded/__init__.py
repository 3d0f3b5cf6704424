"""The embedded stack: everything ``streamapp up`` and the tests run locally.

Nothing here is imported by the production path (``faust -A streamapp worker``
against real Kafka, S3 and a model server). Work-arounds for the embedded
broker's deviations from Kafka live in this package only.
"""
