"""Training: data, augmentation, losses, SRP, the loop (a generator of events) and its run folder.

Imports ``config``, ``io``, ``metrics``, ``network`` and ``inference`` (validation segments the way
``predict`` does); never the CLI or the plugin.
"""
