"""CPU tests of the machine probes (TensorRT version, compute capability) and of importing TensorRT."""

from __future__ import annotations

import sys
import types

import pytest

from dpa_perception.backends.tensorrt.features import import_tensorrt
from dpa_perception.backends.tensorrt.probe import current_compute_capability, probe_machine
from dpa_perception.core.errors import BackendError


def test_tensorrt_probe_machine_uses_injected_probes():
    fake_trt = types.SimpleNamespace(__version__="10.3.0")

    def broken(_dev):
        raise RuntimeError("driver mismatch")

    calls = []

    def orin(dev):
        calls.append(dev)
        return "8.7"

    info = probe_machine(fake_trt, probes=[broken, lambda _d: None, orin])
    assert (info.trt_version, info.compute_capability) == ("10.3.0", "8.7")
    assert calls == [0]
    assert current_compute_capability(probes=[lambda _d: None]) is None
    with pytest.raises(BackendError, match="cannot determine the GPU compute capability"):
        probe_machine(fake_trt, probes=[lambda _d: None])
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        probe_machine(types.SimpleNamespace(), probes=[orin])


def test_tensorrt_stub_only_namespace_counts_as_not_installed(monkeypatch):
    # tensorrt-stubs installs a bare 'tensorrt' namespace package: importable, but no Builder.
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendError, match="no Builder"):
        import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        import_tensorrt()
