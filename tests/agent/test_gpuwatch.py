from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agent.gpuwatch import GpuWatch, open_watch

GB = 2**30


class Nvml:
    def __init__(self, compute: list[Any] = (), graphics: list[Any] = (), percent: int = 0) -> None:  # type: ignore[assignment]
        self.compute, self.graphics, self.percent = list(compute), list(graphics), percent
        self.fail = False

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        if self.fail:
            raise RuntimeError("GPU is lost")
        return self.compute

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        return self.graphics

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=self.percent)


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


def test_gpuwatch_own_process_and_unknown_memory_do_not_count() -> None:
    nvml = Nvml(compute=[proc(100, 8 * GB)], graphics=[proc(200, None)])
    watch = GpuWatch(nvml, own_pid=100)
    assert watch.sample(working=False) is None


def test_gpuwatch_other_memory_counts_even_while_working() -> None:
    nvml = Nvml(compute=[proc(100, 8 * GB), proc(300, GB)], percent=100)
    watch = GpuWatch(nvml, own_pid=100)
    assert watch.sample(working=True) == "other programs use 1024 MB of GPU memory"


def test_gpuwatch_load_counts_only_while_the_agent_is_idle() -> None:
    watch = GpuWatch(Nvml(percent=80), own_pid=1)
    assert watch.sample(working=True) is None
    assert watch.sample(working=False) == "the GPU is 80% busy with other work"


def test_gpuwatch_quiet_period_with_a_fake_clock() -> None:
    nvml = Nvml(percent=80)
    watch = GpuWatch(nvml, own_pid=1, quiet_s=30)
    assert watch.busy(0.0, working=False) is not None
    nvml.percent = 0
    assert "stay free (20 s more)" in str(watch.busy(10.0, working=False))
    assert watch.busy(30.0, working=False) is None


def test_gpuwatch_nvml_failures_never_stop_the_agent() -> None:
    nvml = Nvml()
    watch = GpuWatch(nvml, own_pid=1)
    nvml.fail = True
    assert watch.sample(working=False) is None
    assert open_watch(0, importer=lambda: nvml) is None  # init fails: no watch
