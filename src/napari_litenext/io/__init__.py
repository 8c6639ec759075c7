"""Files in and out (numpy only, no torch): image and mask reading, atomic writes, image/mask pairing.

Bottom layer with ``config`` and ``metrics``: it imports nothing else from the package.
"""
