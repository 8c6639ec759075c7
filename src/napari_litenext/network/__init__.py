"""The LiteNeXt network and everything that builds one: the model, checkpoints, bundled models, devices.

Imports ``config`` and ``io`` only.
"""
