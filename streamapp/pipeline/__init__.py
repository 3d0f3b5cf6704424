"""The pipeline, in the order data flows.

:mod:`.events` parses bucket notifications, :mod:`.records` types every
topic, :mod:`.storage` is the worker's S3 client, :mod:`.agents` is the
topology (events -> tensors -> labeled -> archive -> tallies), with
:mod:`.batching` and :mod:`.retry` beside it; :mod:`.state` and
:mod:`.totals` are the counted tables and their cluster-wide totals, and
:mod:`.views` the web pages that read them.
"""
