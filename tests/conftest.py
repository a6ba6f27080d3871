"""Shared fixtures: one test body runs over every backend.

``backend`` is parametrized over the in-process simulator ("sim") and the
FUSE stand-in device ("device": real ioctl and mmap through the kernel,
served by the same simulator). The device is skipped, with the reason, only
where FUSE is truly unavailable.
"""

import gc
import signal
from dataclasses import dataclass
from typing import Any, Callable

import pytest

import hcltdx
from hcltdx import Hcl

MEMORY = 64 << 20
VPS = 2


def device_unavailable_reason():
    try:
        from hcltdx import simdev
    except ImportError as exc:  # pragma: no cover
        return f"hcltdx.simdev cannot be imported: {exc}"
    ok, why = simdev.available()
    return None if ok else why


@dataclass
class Backend:
    name: str
    sim: Any  # the simulator's control panel (the model behind either backend)
    open: Callable[[], Hcl]  # a new Hcl on this backend


@pytest.fixture(scope="session", autouse=True)
def _sigint_raises_keyboard_interrupt():
    """The Ctrl-C tests send SIGINT and expect KeyboardInterrupt. A run
    started in the background of a non-interactive shell (``cmd &``, nohup,
    some CI runners) inherits SIGINT ignored, and CPython then installs no
    handler for it: the signal would be dropped and a long poll never
    interrupted. Python's own handler is installed for the session then."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def simdev_mount():
    reason = device_unavailable_reason()
    if reason:
        pytest.skip(f"FUSE stand-in device unavailable: {reason}")
    from hcltdx import simdev

    with simdev.mount(vp_count=VPS, memory_size=MEMORY, in_process=True) as dev:
        yield dev


@pytest.fixture(params=["sim", "device"])
def backend(request):
    opened = []
    if request.param == "sim":
        sim = hcltdx.Sim(vp_count=VPS, memory_size=MEMORY)

        def make():
            h = Hcl.from_sim(sim)
            opened.append(h)
            return h

        yield Backend("sim", sim, make)
    else:
        dev = request.getfixturevalue("simdev_mount")
        dev.sim.reset()

        def make():
            h = Hcl.open(dev.path, vp_count=VPS)
            opened.append(h)
            return h

        yield Backend("device", dev.sim, make)
    gc.collect()
    for h in opened:
        try:
            h.close()
        except BufferError:
            gc.collect()
            h.close()


@pytest.fixture
def hcl(backend):
    return backend.open()


@pytest.fixture
def sim(backend):
    return backend.sim


@pytest.fixture
def runner(hcl):
    """The runner of VP 0 on the backend under test."""
    r = hcl.runner(0)
    yield r
    gc.collect()
    r.close()
