"""The napari widgets: Segment, Train and Evaluate (the only modules that import napari, magicgui or qtpy).

Each widget is a thin layer over the cores: ``predict.segment``, ``training.train`` and
``evaluation.evaluate_arrays`` run in napari thread workers, so the viewer stays responsive. Torch is
imported only when a widget starts work, never when napari reads the plugin manifest. The widget
classes are in their own modules (``segment``, ``train``, ``evaluate``) so that opening one does not
import the others.
"""
