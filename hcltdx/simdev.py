"""A stand-in ``/dev/mshv_vtl`` served over FUSE by the simulator.

``with mount(vp_count=2) as dev: hcltdx.Hcl.open(dev.path)`` runs the real
ioctl and mmap path of the core against the in-process simulator. The daemon
runs either as a thread of this process (``in_process=True``: ``dev.sim`` is
the very :class:`~hcltdx._sim.Sim` it serves) or as a child process
(``in_process=False``: ``dev.sim`` is None; ``dev.pid``/``dev.kill()`` for
crash tests). See docs/simdev.md.

CLI: ``python -m hcltdx.simdev mount DIR [--vp-count N] [--memory-size S]``
serves ``DIR/mshv_vtl`` until SIGINT/SIGTERM; ``python -m hcltdx.simdev
umount DIR`` removes a mount left behind.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref

try:
    from hcltdx import _simdev
    from hcltdx._sim import Sim
except ImportError as exc:  # pragma: no cover - an unbuilt checkout
    raise ImportError(
        f"hcltdx.simdev needs the compiled extensions ({exc}); run "
        "'pip install .' or 'python setup.py build_ext --inplace'") from exc

from hcltdx._cliutil import OneLineParser
from hcltdx._simdev import SimDevUnavailable, Watchdog

__all__ = [
    "FILE_NAME", "SimDev", "SimDevUnavailable", "Watchdog", "available",
    "is_mounted", "main", "mount", "umount",
]

FILE_NAME = _simdev.FILE_NAME
PAGE_SIZE = 4096
APIC_PAGE_OFFSET = 0x30000
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0
_live: weakref.WeakSet[SimDev] = weakref.WeakSet()


@atexit.register
def _close_leftovers():
    # A daemon thread dies with the interpreter; its mount must not outlive it.
    for dev in list(_live):
        with contextlib.suppress(Exception):
            dev.close()


def _forget_after_fork():
    # A forked child shares its parent's mounts but owns none of them: its
    # exit (atexit, a `with` unwinding, garbage collection) must not stop
    # the parent's daemon or unmount the parent's device.
    for dev in list(_live):
        dev._disown()
    _live.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def is_mounted(path) -> bool:
    """True when ``path`` is a mount point in this mount namespace."""
    target = os.path.realpath(os.fspath(path))
    with open("/proc/self/mountinfo") as f:
        return any(_unescape_mountinfo(line.split()[4]) == target for line in f)


def umount(path, *, force: bool = False) -> bool:
    """Unmount a stand-in (or any mount) at ``path``: a plain unmount first,
    then, if busy or ``force``, abort the FUSE connection and detach lazily.
    Returns False when nothing was mounted there."""
    return _simdev.umount(os.fspath(path), force=force)


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))
    except OSError:
        pass
    return os.geteuid() == 0


def _preflight() -> None:
    if not os.path.exists("/dev/fuse"):
        raise SimDevUnavailable(errno.ENOENT, "/dev/fuse is missing (no FUSE here)")
    if not _has_cap_sys_admin():
        raise SimDevUnavailable(errno.EPERM, "mounting FUSE needs CAP_SYS_ADMIN (run as root)")


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """Whether the stand-in can run here: ``(True, "")`` or ``(False, reason)``.

    Decided by a real trial mount (one VP), so a kernel without FUSE
    passthrough is found out here rather than in the middle of a test.
    """
    try:
        with mount(vp_count=1, in_process=True):
            pass
    except SimDevUnavailable as exc:
        return False, str(exc)
    return True, ""


# ---- building the served simulator ------------------------------------------

def _backing_pages(vp_count: int) -> list[int]:
    return [vp for vp in range(vp_count)] + [APIC_PAGE_OFFSET | vp for vp in range(vp_count)]


def _make_sim(workdir: str, vp_count: int, sim_kwargs: dict) -> tuple[Sim, str]:
    """A Sim whose backing file refuses every page the kernel would refuse.

    The backing file lives on a tmpfs holding exactly the run and VTL0 APIC
    pages: touching any other offset of the mapped file needs a new block,
    which the full tmpfs refuses, so the fault is a SIGBUS (as the kernel's)
    instead of a fresh zero page. The tmpfs is detached at once; the Sim's
    descriptor keeps it alive and nothing is left mounted.
    """
    pages = _backing_pages(vp_count)
    tmpfs = os.path.join(workdir, "backing")
    os.mkdir(tmpfs, 0o700)
    try:
        _simdev.mount_tmpfs(tmpfs, len(pages))
    except OSError as exc:
        os.rmdir(tmpfs)
        sim = Sim(vp_count=vp_count, backing="memfd", **sim_kwargs)
        return sim, f"memfd (tmpfs unavailable: {exc.strerror}; holes read as zeros)"
    try:
        sim = Sim(vp_count=vp_count, backing=os.path.join(tmpfs, "pages"), **sim_kwargs)
        for page in pages:
            os.posix_fallocate(sim.backing_fd, page * PAGE_SIZE, PAGE_SIZE)
    finally:
        _simdev.umount(tmpfs, force=True)
        os.rmdir(tmpfs)
    return sim, "tmpfs (refused offsets fault with SIGBUS)"


def _pin_current_thread(cpu) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})


# ---- the mount ----------------------------------------------------------------

class SimDev:
    """A mounted stand-in device. Use through :func:`mount`.

    ``path``: the file to hand to ``Hcl.open``; ``mountpoint``: its directory;
    ``sim``: the served Sim (in-process mode) or None (child process);
    ``pid``: the daemon's process id; ``backing``: how refused offsets behave.
    """

    def __init__(self, workdir: str, in_process: bool):
        self.workdir = workdir
        self.mountpoint = os.path.join(workdir, "mnt")
        self.path = os.path.join(self.mountpoint, FILE_NAME)
        self.in_process = in_process
        self.sim: Sim | None = None
        self.server: _simdev.Server | None = None
        self.pid = os.getpid()
        self.vp_count = 0
        self.backing = ""
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lifeline = -1
        self._closed = False
        self._owner = os.getpid()
        _live.add(self)

    def _disown(self) -> None:
        """In a forked child: keep the mount alone, drop what was inherited."""
        self._closed = True
        if self._lifeline >= 0:
            # The child-mode daemon stops when its lifeline closes: a copy
            # held here must not keep it serving after the parent is gone.
            with contextlib.suppress(OSError):
                os.close(self._lifeline)
            self._lifeline = -1

    def __repr__(self):
        mode = "thread" if self.in_process else f"child {self.pid}"
        return f"<SimDev {self.path!r} vp_count={self.vp_count} daemon={mode}>"

    @property
    def alive(self) -> bool:
        """Whether the daemon still serves."""
        if self.in_process:
            return self._thread is not None and self._thread.is_alive()
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """Simulate a daemon crash. A child process gets SIGKILL; the daemon
        thread cannot be killed, so its connection is aborted (as a crash
        would) by a forced unmount. Calls on the file then fail."""
        if os.getpid() != self._owner:
            raise RuntimeError(f"this stand-in belongs to process {self._owner}, not to this "
                               f"forked child")
        if self.in_process:
            umount(self.mountpoint, force=True)
            if self._thread is not None:
                self._thread.join(_STOP_TIMEOUT)
        elif self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self) -> None:
        """Stop the daemon, unmount, remove the temporary directory. Idempotent.
        In a process forked after the mount, it only forgets the device: the
        mount belongs to the process that made it."""
        if self._closed:
            return
        if os.getpid() != self._owner:
            self._disown()
            return
        self._closed = True
        _live.discard(self)
        try:
            if self.in_process:
                self._stop_thread()
            else:
                self._stop_child()
        finally:
            # Whatever happened above, nothing stays mounted.
            for _ in range(3):
                if not is_mounted(self.mountpoint):
                    break
                umount(self.mountpoint, force=True)
            if self._lifeline >= 0:
                os.close(self._lifeline)
                self._lifeline = -1
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_thread(self):
        if self.server is None:
            return  # the mount never happened
        if is_mounted(self.mountpoint):
            umount(self.mountpoint)
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive():
                umount(self.mountpoint, force=True)
                self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive():
                # Never close a descriptor a live thread reads: leak it instead.
                raise RuntimeError("the simdev daemon thread did not stop")
        self.server.close()

    def _stop_child(self):
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                umount(self.mountpoint, force=True)
                proc.kill()
                proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _start_thread(dev: SimDev, vp_count: int, daemon_cpu, sim_kwargs: dict) -> None:
    sim, dev.backing = _make_sim(dev.workdir, vp_count, sim_kwargs)
    server = _simdev.Server(sim, vp_count)
    server.mount(dev.mountpoint)
    dev.sim, dev.server, dev.vp_count = sim, server, vp_count

    def run():
        _pin_current_thread(daemon_cpu)
        server.serve()

    dev._thread = threading.Thread(target=run, name=f"simdev {dev.mountpoint}", daemon=True)
    dev._thread.start()


def _start_child(dev: SimDev, vp_count: int, daemon_cpu, sim_kwargs: dict) -> None:
    rd, wr = os.pipe()
    # The child unmounts itself when this end closes: when we die, however.
    life_rd, dev._lifeline = os.pipe()
    cmd = [sys.executable, "-m", "hcltdx.simdev", "mount", dev.mountpoint,
           "--vp-count", str(vp_count), "--ready-fd", str(wr),
           "--lifeline-fd", str(life_rd),
           "--sim-kwargs", json.dumps(sim_kwargs), "--quiet"]
    if daemon_cpu is not None:
        cmd += ["--cpu", str(daemon_cpu)]
    env = dict(os.environ)
    # The child must import this very checkout, whatever its working directory.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
    try:
        dev._proc = subprocess.Popen(cmd, pass_fds=(wr, life_rd), env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        os.close(rd)
        raise
    finally:
        os.close(wr)
        os.close(life_rd)
    dev.pid = dev._proc.pid
    with os.fdopen(rd, "rb") as ready:
        line = _read_line(ready, _STARTUP_TIMEOUT)
    if not line:
        dev._proc.kill()
        code = dev._proc.wait()
        raise RuntimeError(f"the simdev daemon failed to start (exit status {code}; "
                           "its stderr says why)")
    msg = json.loads(line)
    if not msg["ok"]:
        dev._proc.wait()
        if msg.get("unavailable"):
            raise SimDevUnavailable(msg.get("errno") or 0, msg["error"])
        if msg.get("type") in ("ValueError", "TypeError"):
            raise {"ValueError": ValueError, "TypeError": TypeError}[msg["type"]](msg["error"])
        raise OSError(msg.get("errno") or 0, msg["error"])
    dev.vp_count, dev.backing = vp_count, msg["backing"]


def _read_line(f, timeout: float) -> bytes:
    import select
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([f], [], [], left)[0]:
            return b""
        chunk = os.read(f.fileno(), 4096)
        if not chunk:
            return b""
        data += chunk
    return data


@contextlib.contextmanager
def mount(vp_count: int = 2, memory_size: int | None = None, *, in_process: bool = True,
          daemon_cpu: int | None = None, **sim_kwargs):
    """Mount a stand-in ``mshv_vtl`` on a fresh temporary directory.

    Yields a :class:`SimDev`; ``dev.path`` is the file for ``Hcl.open``.
    ``in_process=True`` serves from a thread of this process (GIL held while
    a request is handled), ``False`` from a child process. ``daemon_cpu``
    pins the daemon. Other keywords go to :class:`Sim`. Always unmounts and
    removes the directory on exit, also after the daemon died. Raises
    :class:`SimDevUnavailable` when FUSE, CAP_SYS_ADMIN or passthrough is
    missing.
    """
    if isinstance(vp_count, bool) or not isinstance(vp_count, int) or not 1 <= vp_count <= _MAX_VPS:
        raise ValueError(f"vp_count must be an int in 1..{_MAX_VPS}, got {vp_count!r}")
    if daemon_cpu is not None and (isinstance(daemon_cpu, bool) or not isinstance(daemon_cpu, int)
                                   or daemon_cpu not in os.sched_getaffinity(0)):
        raise ValueError(f"daemon_cpu {daemon_cpu!r} is not a CPU this process may run on")
    _preflight()
    if memory_size is not None:
        sim_kwargs["memory_size"] = memory_size
    workdir = tempfile.mkdtemp(prefix="hcltdx-simdev-")
    dev = SimDev(workdir, in_process)
    try:
        os.mkdir(dev.mountpoint, 0o700)
        if in_process:
            _start_thread(dev, vp_count, daemon_cpu, sim_kwargs)
        else:
            _start_child(dev, vp_count, daemon_cpu, sim_kwargs)
    except BaseException:
        dev.close()
        raise
    with dev:
        yield dev


# ---- command line -----------------------------------------------------------

def _watch_lifeline(fd: int, mountpoint: str) -> None:
    def watch():
        with contextlib.suppress(OSError):
            while os.read(fd, 64):
                pass
        # The parent is gone: unmounting ends serve() with ENODEV.
        with contextlib.suppress(OSError):
            umount(mountpoint)

    threading.Thread(target=watch, name="simdev lifeline", daemon=True).start()


def _makedirs(path: str) -> list[str]:
    """``os.makedirs(path, exist_ok=True)`` that returns the directories it
    created, outermost first, so that they can be removed again."""
    created = []
    head = path
    while not os.path.lexists(head):
        created.append(head)
        head = os.path.dirname(head)
    if not os.path.isdir(head):
        raise NotADirectoryError(errno.ENOTDIR, f"{head} is not a directory", head)
    for d in reversed(created):
        os.mkdir(d, 0o755)
    return list(reversed(created))


def _remove_created(created: list[str]) -> None:
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            break


def _serve_foreground(args) -> int:
    # The daemon serves from a thread; this thread only waits for a signal.
    # A Python signal handler could run too late (after the daemon went back
    # into read(2)), so the signals are blocked and taken with sigwait.
    stops = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    sim_kwargs = dict(args.sim_kwargs or {})
    if args.memory_size is not None:
        sim_kwargs["memory_size"] = args.memory_size
    mountpoint = os.path.abspath(args.path)
    ready = os.fdopen(args.ready_fd, "w") if args.ready_fd is not None else None

    def report(**msg):
        if ready is not None:
            ready.write(json.dumps(msg) + "\n")
            ready.flush()

    server = None
    thread = None
    failure = []
    created: list[str] = []
    try:
        try:
            _pin_current_thread(args.cpu)
            _preflight()
            created = _makedirs(mountpoint)
            # Needed only while the backing is set up: gone before anything can kill us.
            workdir = tempfile.mkdtemp(prefix="hcltdx-simdev-")
            try:
                sim, backing = _make_sim(workdir, args.vp_count, sim_kwargs)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            daemon = _simdev.Server(sim, args.vp_count)
            daemon.mount(mountpoint)
            server = daemon
        except SimDevUnavailable as exc:
            report(ok=False, unavailable=True, errno=exc.errno, error=exc.strerror or str(exc))
            print(f"hcltdx simdev: {exc}", file=sys.stderr)
            return 2
        except (OSError, ValueError, TypeError) as exc:
            # A bad argument or a refused mount: one line, no traceback.
            report(ok=False, errno=getattr(exc, "errno", None), type=type(exc).__name__,
                   error=str(exc))
            print(f"hcltdx simdev: cannot serve {mountpoint}: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, (ValueError, TypeError)) else 1
        main_thread = threading.get_ident()

        def serve():
            try:
                server.serve()
            except BaseException as exc:  # handed to the main thread
                failure.append(exc)
            finally:
                signal.pthread_kill(main_thread, signal.SIGUSR1)

        thread = threading.Thread(target=serve, name="simdev daemon", daemon=True)
        thread.start()
        if args.lifeline_fd is not None:
            _watch_lifeline(args.lifeline_fd, mountpoint)
        report(ok=True, pid=os.getpid(), backing=backing)
        if ready is not None:
            ready.close()
            ready = None
        if not args.quiet:
            print(f"serving {os.path.join(mountpoint, FILE_NAME)} "
                  f"({args.vp_count} VPs, backing: {backing}); Ctrl-C to stop", flush=True)
        signal.sigwait(stops)
        if failure:
            print(f"hcltdx simdev: the daemon stopped: {type(failure[0]).__name__}: {failure[0]}",
                  file=sys.stderr)
            return 1
        return 0
    finally:
        if server is not None:
            # Every step runs even if an earlier one fails: the mount must go.
            try:
                umount(mountpoint)
            except OSError:
                pass  # forced below
            if thread is not None:
                thread.join(_STOP_TIMEOUT)
                if thread.is_alive():
                    try:
                        umount(mountpoint, force=True)
                    except OSError:
                        pass
                    thread.join(_STOP_TIMEOUT)
            if thread is None or not thread.is_alive():
                server.close()
            if is_mounted(mountpoint):
                umount(mountpoint, force=True)
        # The directories this command made go with it (a failed mount too).
        if not is_mounted(mountpoint):
            _remove_created(created)
        if ready is not None:
            ready.close()


def _vp_count(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= n <= _MAX_VPS:
        raise argparse.ArgumentTypeError(f"must be in 1..{_MAX_VPS}, got {n}")
    return n


def _size(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer (decimal or 0x hex): {text!r}") from None
    if n <= 0 or n % (2 << 20):
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 2 MiB, got {text}")
    return n


def _cpu(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n not in os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(
            f"CPU {n} is not one this process may run on ({sorted(os.sched_getaffinity(0))})")
    return n


def _fd(text: str) -> int:
    try:
        n = int(text)
        os.fstat(n)
    except (ValueError, OSError):
        raise argparse.ArgumentTypeError(f"not an open file descriptor: {text!r}") from None
    return n


def _json_object(text: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return obj


_MAX_VPS = 64  # HCLTDX_SIM_MAX_VPS


def main(argv=None) -> int:
    """``mount DIR [--vp-count N] [--memory-size S]`` | ``umount DIR``.
    Bad arguments and refused mounts are reported in one line (exit status
    2 for arguments, 1 for a failure of the system), never a traceback; a
    directory created for a mount is removed when the command ends."""
    parser = OneLineParser(prog="hcltdx simdev",
                           description="A stand-in /dev/mshv_vtl over FUSE.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mount", help="serve DIR/mshv_vtl in the foreground until SIGINT/SIGTERM")
    m.add_argument("path", help="mount point (created if missing, removed again at the end)")
    m.add_argument("--vp-count", type=_vp_count, default=2, help=f"1..{_MAX_VPS} (default 2)")
    m.add_argument("--memory-size", type=_size, default=None,
                   help="bytes of TD private memory (multiple of 2 MiB)")
    m.add_argument("--cpu", type=_cpu, default=None, help="pin the daemon to this CPU")
    m.add_argument("--sim-kwargs", type=_json_object, default=None, help=argparse.SUPPRESS)
    m.add_argument("--ready-fd", type=_fd, default=None, help=argparse.SUPPRESS)
    m.add_argument("--lifeline-fd", type=_fd, default=None, help=argparse.SUPPRESS)
    m.add_argument("--quiet", action="store_true")
    u = sub.add_parser("umount", help="unmount a stand-in (forcing it if the daemon is gone)")
    u.add_argument("path")
    args = parser.parse_args(argv)
    if args.command == "umount":
        try:
            if not umount(args.path):
                print(f"{args.path}: not mounted", file=sys.stderr)
                return 1
        except OSError as exc:
            print(f"hcltdx simdev: cannot unmount {args.path}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        return 0
    return _serve_foreground(args)


if __name__ == "__main__":
    sys.exit(main())
