"""The network as files that run without napari-litenext: the architecture source and TorchScript."""

from __future__ import annotations

import ast
import importlib.util
import sys

import pytest
import torch

from _exchange_support import tiny_model
from napari_litenext.config import ModelConfig
from napari_litenext.exchange.architecture import ARCHITECTURE_CALLABLE, architecture_kwargs, architecture_source
from napari_litenext.exchange.torchscript import export_torchscript, trace
from napari_litenext.network.model import LiteNeXt

# TorchScript is what the tests load (and bioimageio.core loads in its test); its deprecation is moot.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


class _Refuse:
    """A meta-path finder that makes ``import napari_litenext`` fail."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "napari_litenext":
            raise ImportError(f"{name} must not be imported by the architecture file")
        return None


def load_architecture(tmp_path):
    source = tmp_path / "architecture.py"
    source.write_text(architecture_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("litenext_architecture_under_test", source)
    module = importlib.util.module_from_spec(spec)
    sys.meta_path.insert(0, _Refuse())
    try:
        spec.loader.exec_module(module)
    finally:
        sys.meta_path.pop(0)
    return module


def test_architecture_source_imports_only_torch():
    modules = set()
    for node in ast.walk(ast.parse(architecture_source())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the architecture file"
            modules.add(node.module.split(".")[0])
    assert modules <= {"torch", "__future__"}


@pytest.mark.parametrize("config", [ModelConfig(), ModelConfig(base_width=4, fusion_dim=8, depths=(1, 2, 1, 1))])
def test_architecture_file_builds_the_same_network(tmp_path, config):
    module = load_architecture(tmp_path)
    torch.manual_seed(0)
    ours = LiteNeXt(config).eval()
    theirs = getattr(module, ARCHITECTURE_CALLABLE)(**architecture_kwargs(config))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(theirs(x), ours(x))
    assert sum(p.numel() for p in theirs.parameters()) == ours.num_parameters()


@pytest.mark.parametrize("full, shape", [(False, (1, 3, 64, 64)), (False, (3, 3, 48, 80)), (False, (1, 3, 16, 16)),
                                         (True, (2, 3, 256, 192))])
def test_traced_module_matches_the_network_at_other_sizes(full, shape):
    # The paper-sized network at 256 px computes its fusion in row blocks on CPU, which the trace
    # (made at 64 px) does not: the results must agree all the same.
    torch.manual_seed(0)
    model = LiteNeXt().eval() if full else tiny_model()
    traced = trace(model)
    x = torch.rand(*shape)
    with torch.no_grad():
        assert (traced(x) - model(x)).abs().max().item() <= 1e-5


def test_export_torchscript_writes_a_loadable_module(tmp_path):
    model = tiny_model()
    path = export_torchscript(model, tmp_path / "tiny.pt")
    loaded = torch.jit.load(str(path))
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max().item() <= 1e-5
    with pytest.raises(FileExistsError):
        export_torchscript(model, path)
