"""What napari calls (``napari.yaml``): reader, writer, sample data and the widgets.

Only ``plugin.widgets`` imports napari, magicgui or qtpy; the reader, writer and sample data stay
importable without them.
"""
