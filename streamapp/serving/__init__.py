"""Serving: the digit model, the model server that serves it, and the client
the workers call it with; :mod:`.protocol` is the KServe v1 / Open Inference
Protocol v2 wire format both sides share. Nothing here imports Faust.
"""
