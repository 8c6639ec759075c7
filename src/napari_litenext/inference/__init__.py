"""From an image to labels and scores: normalisation, tiling and resizing, the segment generator,
post-processing and evaluation against ground truth.

Imports ``config``, ``io``, ``metrics`` and ``network``; never ``training`` or the plugin.
"""
