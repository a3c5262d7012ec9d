"""What the Ray processes of a distributed training print: ours on the terminal, Ray's in ``<output>/ray.log``.

Ray forwards the stdout and stderr of every process of the job to the driver
(``log_to_driver``) and prints each line as ``(RayTrainWorker pid=N) line``
with the prefix in colour, in a file too. Training needs rank 0's lines (the
``training: ...``, ``step i/n ...`` and validation lines) but gets, in the same
stream, the lines of Ray Train's own actors: the controller's resource
requests, the PlacementGroupCleaner's warning or traceback each second when
Ray's state API is unreachable (there is no dashboard here), and Ray's C++
logs (``[time E pid tid] core_worker.cc:N: ...``).

:func:`route_ray_output` replaces Ray's printer for the duration of a block:

* lines of the training workers (actor ``RayTrainWorker``) are printed as they
  are, stdout to stdout and stderr to stderr, without Ray's prefix or colour
  codes (only rank 0 prints, so the prefix says nothing);
* their C++ log lines and every line of any other Ray process (controller,
  helper actors; of the autoscaler only its events, as Ray's printer does) are
  appended to the log file with Ray's prefix, without colour.

Ray's printer is a private API (``ray._private.worker``); when it is not found,
Ray prints as before. Errors Ray reports about dead workers do not pass through
that printer and still reach the terminal, and a failed run's exception
carries the worker's error either way.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["RAY_LOG_NAME", "TRAIN_WORKER_ACTOR", "route_ray_output"]

#: the file in the run folder that receives Ray's own lines
RAY_LOG_NAME = "ray.log"

#: the actor class Ray Train V2 runs the training function in
TRAIN_WORKER_ACTOR = "RayTrainWorker"

# Ray's C++ log line: "[2026-12-01 15:58:43,704 E 30568 30627] core_worker.cc:2465: ..."
_CPP_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ [DIWEF] \d+ \d+\] ")

# Ray's own printer, as registered by ray.init
_RAY_HANDLER = "ray_print_logs"
_OUR_HANDLER = "audiocl_ray_output"


def _is_ours(data: dict[str, Any], line: str) -> bool:
    return data.get("actor_name") == TRAIN_WORKER_ACTOR and not _CPP_LOG.match(line)


@contextlib.contextmanager
def route_ray_output(log_path: str | Path) -> Iterator[Path | None]:
    """For the block, print the training workers' lines plainly and append all
    other forwarded Ray output to ``log_path`` (see the module docstring).
    Yields the log path, or None when Ray's printer could not be replaced.
    Ray must be initialised (with ``log_to_driver``) before the block; a
    ``ray.shutdown()`` inside the block flushes the last lines into this routing."""
    try:
        from ray._private.worker import filter_autoscaler_events
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

        ray_handlers = [pair for pair in dispatcher.handlers if pair[0] == _RAY_HANDLER]
    except (ImportError, AttributeError):  # Ray's private API moved: Ray prints as before
        yield None
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} Ray output of this run (the workers' own lines are on the terminal)\n")
        log.flush()

        def handle(data: dict[str, Any]) -> None:
            name = data.get("actor_name") or data.get("task_name") or ""
            prefix = f"({name + ' ' if name else ''}pid={data.get('pid')}{', err' if data.get('is_err') else ''}) "
            stream = sys.stderr if data.get("is_err") else sys.stdout
            lines = data.get("lines", [])
            if data.get("pid") == "autoscaler":
                # its status table every 5 s; Ray's printer keeps only the events too
                lines = list(filter_autoscaler_events(lines))
            with lock:
                for line in lines:
                    if _is_ours(data, line):
                        print(line, file=stream, flush=True)
                    else:
                        log.write(prefix + line + "\n")
                log.flush()

        dispatcher.remove_handler(_RAY_HANDLER)
        dispatcher.add_handler(_OUR_HANDLER, handle)
        try:
            yield path
        finally:
            dispatcher.remove_handler(_OUR_HANDLER)
            import ray

            # ray.shutdown() removes Ray's printer itself and the next ray.init adds it
            # again: put it back only while this Ray connection lives on
            if ray.is_initialized():
                for name, handler in ray_handlers:
                    dispatcher.add_handler(name, handler)
