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


def test_nvidia_smi_probe_parses_compute_cap(monkeypatch):
    import subprocess

    from dpa_perception.backends.tensorrt import probe

    monkeypatch.setattr(probe.shutil, "which", lambda exe: "/usr/bin/nvidia-smi")
    answers = {"ok": (0, "8.7\n"), "junk": (0, "N/A\n"), "fail": (9, "")}
    for what, (rc, stdout) in answers.items():
        monkeypatch.setattr(probe.subprocess, "run", lambda *a, _rc=rc, _out=stdout, **k: types.SimpleNamespace(
            returncode=_rc, stdout=_out))
        assert probe.probe_cc_nvidia_smi(0) == ("8.7" if what == "ok" else None), what

    def timeout(*a, **k):
        raise subprocess.TimeoutExpired("nvidia-smi", 10)

    monkeypatch.setattr(probe.subprocess, "run", timeout)
    assert probe.probe_cc_nvidia_smi(0) is None
    monkeypatch.setattr(probe.shutil, "which", lambda exe: None)
    assert probe.probe_cc_nvidia_smi(0) is None


def test_libcuda_probe_reads_the_driver_attributes(monkeypatch):
    from dpa_perception.backends.tensorrt import probe

    class FakeLib:
        def cuInit(self, flags):
            return 0

        def cuDeviceGet(self, dev, ordinal):
            return 0

        def cuDeviceGetAttribute(self, out, attr, dev):
            out._obj.value = {probe._CU_ATTR_CC_MAJOR: 9, probe._CU_ATTR_CC_MINOR: 0}[attr]
            return 0

    monkeypatch.setattr(probe.ctypes, "CDLL", lambda name: FakeLib())
    assert probe.probe_cc_libcuda(0) == "9.0"

    def missing(name):
        raise OSError(name)

    monkeypatch.setattr(probe.ctypes, "CDLL", missing)
    assert probe.probe_cc_libcuda(0) is None
