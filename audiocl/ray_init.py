"""Starting or joining Ray: the one place that calls ``ray.init``.

:func:`start_ray` joins the cluster at ``address`` (or ``RAY_ADDRESS``) or
starts a local instance with ``num_cpus`` CPUs, always with the same settings:
no dashboard, Ray's own logging at ERROR, a small object store for a local
instance (only small rows and parameters travel through it; audio and
features go through the file system). Joining a head started with
``ray start --head`` turns on token authentication when a token is present
(see :func:`_use_token_auth_if_available`), and a failure to start or join is
one :class:`~audiocl.errors.AudioclError` line that quotes Ray's reason.
:func:`stop_ray` shuts down what :func:`start_ray` started, without the 1 s
that ``ray.shutdown`` waits on the autoscaler monitor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from audiocl.errors import AudioclError

__all__ = ["start_ray", "stop_ray"]

#: object store of a local instance: small, to keep /dev/shm use low on shared machines
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024


def start_ray(address: str | None, num_cpus: int, *, worker_output: bool = False) -> tuple[bool, int]:
    """Join the cluster at ``address`` (else ``RAY_ADDRESS``) or start a local
    instance with ``num_cpus`` CPUs; a Ray already initialised in this process is used
    as it is. ``worker_output``: forward the workers' stdout/stderr to this process
    (training wants rank 0's progress lines; extraction keeps its actors quiet).
    Returns (whether this call started or joined Ray, so the caller shuts it down;
    the cluster's CPU count)."""
    import ray

    if ray.is_initialized():
        return False, int(ray.cluster_resources().get("CPU", num_cpus))
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        # Ray colours the "(pid=...)" prefix of the lines it forwards even into a file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    common = dict(
        include_dashboard=False,
        log_to_driver=worker_output,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    token_source = None
    if address:
        token_source = _use_token_auth_if_available()
    said: list[str] = []
    try:
        if address:
            # Ray's C++ client logs a warning a second while it retries (20 s); keep
            # that off the terminal and quote it once if joining fails
            with _stderr_captured(said):
                ray.init(address=address, **common)
        else:
            ray.init(num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        text = " ".join(str(err).split())
        if said:
            text += f" (Ray: {said[-1]})"
        if len(text) > 400:
            text = text[:397] + "..."
        hint = ""
        if address:
            mode = os.environ.get("RAY_AUTH_MODE", "unset")
            hint = (
                f" (auth mode here: {mode}"
                + (f", token from {token_source}" if token_source else ", no token found")
                + "). Check that the head runs at that address (`ray status --address "
                f"{address}`); a head started by `ray start --head` uses token "
                "authentication when it finds a token (Ray 2.59+): give this machine the "
                "head's token (`ray get-auth-token` on the head prints it) in "
                "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN"
            )
        raise AudioclError(f"cannot start or join {where}: {text}{hint}") from None
    return True, int(ray.cluster_resources().get("CPU", num_cpus))


def stop_ray() -> None:
    """``ray.shutdown()``, without its 1 s wait on the autoscaler monitor of a local
    instance: ``ray.shutdown`` sends each of its processes SIGTERM and waits up to
    1 s, and the monitor (which a fixed local instance never uses) always takes
    the full second before it is SIGKILLed; here it is SIGKILLed first. That is
    most of the teardown (1.5 s -> 0.5 s measured). A joined cluster is only
    disconnected from, as before."""
    import ray

    try:
        node = ray._private.worker._global_node  # private, hence the guard
        if node is not None and node.head:
            node.kill_monitor(check_alive=False)
    except Exception:
        pass  # ray.shutdown below still stops everything, just slower
    ray.shutdown()


@contextlib.contextmanager
def _stderr_captured(lines: list[str]) -> Iterator[None]:
    """Redirect file descriptor 2 (C++ logs write there directly) to a temporary
    file for the block; afterwards ``lines`` holds its distinct messages, in order,
    without the ``[time W pid] file.cc:N:`` prefix."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for raw in tmp.read().decode("utf-8", "replace").splitlines():
                msg = re.sub(r"^\[[^\]]*\]\s*(\S+\.cc:\d+:\s*)?", "", raw).strip()
                if msg and msg not in lines:
                    lines.append(msg)


def _ray_token_source() -> str | None:
    """Where Ray would read an auth token from (in Ray's order), or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" if os.path.isfile(path) else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _use_token_auth_if_available() -> str | None:
    """Join a head the way ``ray start --head`` set it up: Ray 2.59+ starts a head
    with token authentication whenever a token exists (``~/.ray/auth_token``, which
    any local ``ray.init()`` creates, or ``RAY_AUTH_TOKEN[_PATH]``), but
    ``ray.init(address=...)`` only turns it on for ``address="auto"``, so an explicit
    address fails with "Failed to connect" after ~20 s. With ``RAY_AUTH_MODE`` unset and
    a token present, turn token mode on, as ``address="auto"`` does; a head without
    authentication accepts such a client too (checked with Ray 2.60). An explicit
    ``RAY_AUTH_MODE`` is left as it is. Returns where the token comes from."""
    source = _ray_token_source()
    if source is None or "RAY_AUTH_MODE" in os.environ:
        return source
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        # refresh Ray's cached config, as Ray's own helper does (private API, hence
        # the guard: without it the environment variable still reaches ray.init)
        from ray._raylet import Config

        Config.initialize("")
    except Exception:
        pass
    return source
