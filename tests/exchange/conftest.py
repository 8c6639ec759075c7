"""Fixtures for the exchange tests: the tiny model's exported package, and no network."""

from __future__ import annotations

import socket

import pytest

from _exchange_support import tiny_model

pytest.importorskip("bioimageio.core")
pytest.importorskip("onnxruntime")


@pytest.fixture
def offline(monkeypatch):
    """Every network connection fails, as on a machine without internet."""
    def refuse(self, address, *args, **kwargs):
        raise OSError(f"network disabled in tests (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """(model, path) of the tiny model exported as a BioImage Model Zoo package, once per module."""
    from napari_litenext.exchange import export_bioimageio
    from napari_litenext.exchange.testdata import synthetic_image

    model = tiny_model()
    # A 64-pixel test image keeps the zoo's test quick; it also runs 16, 32 and 48 pixels.
    path = export_bioimageio(model, tmp_path_factory.mktemp("package") / "tiny.zip",
                             test_image=synthetic_image(model.inference, 64))
    return model, path
