"""Imaging: image bytes -> the 28x28 tensor, in the order the data takes.

:mod:`.formats` checks and decodes (header sizes, completeness, pixel limits),
:mod:`.normalize` is the MNIST normalisation of the decoded picture, and
:mod:`.tensor` joins the two behind ``to_tensor``. All pure: no I/O.
"""
