"""The training child: ``python -m tuneforge.providers.local.process <job dir>``.

The worker starts it in a new session (so cancel can signal the whole group). It dies
with its parent: a SIGKILLed worker must not leave a trainer writing into a job that the
next worker will resume, so each process here asks the kernel for SIGKILL when its
parent goes (``PR_SET_PDEATHSIG``; to the kernel the parent is the thread that started
it, the worker's loop thread) and exits at once if the parent is already gone. With
``num_processes`` > 1 this process becomes the torchrun agent (torch's launcher, run in
process) and the ranks it starts run this module again. SIGTERM is a stop request: the
loop finishes at the next micro-batch (one process) or step (several), writes
``cancelled`` (or, when the job dir holds a pause request, a checkpoint and ``paused``)
and exits. One trainer at a time owns a job directory (an exclusive lock
the kernel drops when its holder dies), so a trainer started while an old one is still
dying waits for it instead of writing beside it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import time
from pathlib import Path

from tuneforge.providers.local.jobdir import JobPaths, LocalHyperparameters, read_spec

MODULE = "tuneforge.providers.local.process"
SUPERVISOR_PID_ENV = "TUNEFORGE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
LOCK_WAIT_SECONDS = 120.0


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits; exit now if the parent already has."""
    expected = int(os.environ.get(SUPERVISOR_PID_ENV, "0"))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if expected and os.getppid() != expected:
        os._exit(1)


def lock_job_dir(paths: JobPaths) -> None:
    """Hold the job's lock for the life of this process; wait while another trainer has it.

    The descriptor is deliberately never closed: the lock lasts until this process exits.
    """
    handle = os.open(paths.root / "trainer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Another trainer still holds {paths.root}") from None
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    die_with_parent()
    paths = JobPaths(Path(argv[0]))
    if "LOCAL_RANK" not in os.environ:
        lock_job_dir(paths)
    spec = read_spec(paths)
    processes = LocalHyperparameters.model_validate(spec.hyperparameters).num_processes
    if processes > 1 and "LOCAL_RANK" not in os.environ:
        return launch_ranks(paths, processes)
    stop_requested = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    from tuneforge.providers.local.trainer import run_training

    state = run_training(paths, lambda: stop_requested)
    return 0 if state in ("succeeded", "cancelled", "paused") else 1


def launch_ranks(paths: JobPaths, processes: int) -> int:
    """Run torchrun's launcher here; its ranks die with it (they see this pid as parent)."""
    from torch.distributed.run import main as torchrun

    os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
    # torchrun would default every rank to one thread; share the cores out instead.
    cores = len(os.sched_getaffinity(0))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    args = ["--standalone", f"--nproc-per-node={processes}", "-m", MODULE, str(paths.root)]
    try:
        torchrun(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception:  # torchrun raises ChildFailedError after printing the rank's error
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
