"""Remote execution on NDIF: the `Backend` a `--remote` value names, API key, deployment check, retries, counts.

Where traced code runs is one `Backend` object, chosen once from `--remote` (`choose_backend`)
and handed to every function that opens a trace, generate or session, which passes its
`remote` value to nnsight (`model.trace(..., remote=backend.remote)`); there is no second code
path. (The call sites open nnsight's tracers themselves rather than through a backend method:
nnsight finds a `with` block from the frame that calls `model.generate`.) What NDIF requires
of trace bodies (nnsight 0.8.1 client, ndif 0.1.2 server):
- bodies ship as source; installed packages (the editable `harness` included) travel by
  reference, so `register_harness()` makes them ship by value (`remote="local"` cannot catch
  a missing registration: it hides only non-installed modules);
- weights are frozen server-side: gradients come from activations marked
  `requires_grad_(True)` inside the trace;
- after an open `tracer.all()` loop nothing else in that invoke runs: read in a second invoke;
- only names bound to `.save()`d values come back;
- the model key carries the canonical hub repo id (`pin_model_key` for offline use).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from nnsight.intervention.backends.remote import RemoteError
from nnsight.schema.config import CONFIG, Config

from .urls import checked_host_url
from ..errors import UserError

T = TypeVar("T")
log = logging.getLogger(__name__)

API_KEY_ENV = "NDIF_API_KEY"
HOST_ENV = "NDIF_HOST"
_FALSE = {"", "false", "0", "no", "off", "none"}
_TRUE = {"true", "1", "yes", "on", "ndif", "remote"}


class RemoteSetupError(UserError, RuntimeError):
    """Remote execution cannot start: bad `remote` value, missing API key, model not deployed."""


class RemoteUnavailableError(ConnectionError):
    """The NDIF host could not be reached (or kept failing transiently) for a job."""


BACKENDS = ("local", "check", "ndif")


@dataclass(frozen=True)
class Backend:
    """Where traced code runs, chosen once (``choose_backend``) and handed to every function that opens a trace: this
    machine (``local``), this machine through nnsight's serialization check (``check``, ``--remote local``), or the
    NDIF host ``host`` (``ndif``)."""

    kind: str = "local"
    host: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            raise RemoteSetupError(f"unknown backend {self.kind!r}; backends: {', '.join(BACKENDS)}")
        if (self.kind == "ndif") != (self.host is not None):
            raise RemoteSetupError(f"an ndif backend needs its host, and only it has one: {self}")

    @property
    def remote(self) -> bool | str:
        """nnsight's ``remote=`` value: False, "local" (the serialization check) or the NDIF host URL."""
        return {"local": False, "check": "local"}.get(self.kind, self.host)

    @property
    def runs_here(self) -> bool:
        """Whether the work runs on this machine (local, or through the serialization check)."""
        return self.kind != "ndif"

    def call(self, fn: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T:
        """Run one unit of work (one job on NDIF), retrying NDIF's transient failures; here, just run it."""
        if self.runs_here:
            return fn(*args, **kwargs)
        return run_with_retry(lambda: fn(*args, **kwargs), what=what)


LOCAL = Backend()


def choose_backend(remote: bool | str | None) -> Backend:
    """The backend a ``--remote`` value names, made ready: the harness registered to ship by value (check, ndif) and
    nnsight's host set to the NDIF host (also read by ``nnsight.status()`` / ``nnsight.compare()``)."""
    if isinstance(remote, str) and remote.strip().lower() == "local":
        register_harness()
        return Backend("check")
    host = ndif_host(remote)
    if host is None:
        return LOCAL
    CONFIG.API.HOST = host
    register_harness()
    return Backend("ndif", host)


def ndif_host(remote: bool | str | Backend | None) -> str | None:
    """The NDIF host `remote` (a ``--remote`` value or a backend) names, or None for a local run ("local" included)."""
    if isinstance(remote, Backend):
        return remote.host
    if remote is None or remote is False:
        return None
    if remote is True:
        host, source = (os.environ[HOST_ENV], f"${HOST_ENV}") if os.environ.get(HOST_ENV) else \
            (Config.load().API.HOST, "nnsight's API.HOST")
        return _checked(host, source)
    if not isinstance(remote, str):
        raise RemoteSetupError(f"remote must be bool, 'local', 'ndif' or an http(s) URL, got {remote!r}")
    value = remote.strip()
    if value.lower() in _FALSE or value.lower() == "local":
        return None
    if value.lower() in _TRUE:
        return ndif_host(True)
    if "://" in value:
        return _checked(value, "remote")
    raise RemoteSetupError(
        f"remote={remote!r} is not understood: use False, 'local', True/'ndif' (host from ${HOST_ENV}) "
        "or a host URL like 'http://127.0.0.1:8001'"
    )


def _checked(url: str, what: str) -> str:
    """``url`` as a safe NDIF host (:func:`harness.models.urls.checked_host_url`) without its trailing slash."""
    try:
        return checked_host_url(url, what).rstrip("/")
    except ValueError as err:
        raise RemoteSetupError(str(err)) from None


def runs_here(remote: bool | str | None) -> bool:
    """Whether a ``--remote`` value runs on this machine: false, or "local" (nnsight's serialization check)."""
    return ndif_host(remote) is None


def resolve_remote(remote: bool | str | None) -> bool | str:
    """Turn a `--remote` value into nnsight's `remote=` value, for code that opens nnsight's tracers with no backend:
    False, "local" or the host URL (``choose_backend(remote).remote``).

    NDIF targets come back as the explicit host URL (nnsight reads a URL `remote=` as the
    host), so the resolved value can be passed on and resolved again without losing the host.
    """
    return choose_backend(remote).remote


def require_api_key(remote: bool | str | Backend | None) -> None:
    """Fail before any work when `remote` targets NDIF and NDIF_API_KEY is unset."""
    host = ndif_host(remote)
    if host is None:
        return
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise RemoteSetupError(
            f"remote execution on {host} needs an NDIF API key: set {API_KEY_ENV} "
            "(create one at https://login.ndif.us). Nothing was run."
        )
    CONFIG.API.APIKEY = key  # in memory only; never CONFIG.save()d, logged or written to results


def register_harness(*extra: str) -> None:
    """Ship `harness` (and `extra` module names, e.g. "studies") by value with every remote request."""
    import importlib

    import nnsight
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES

    for name in ("harness", *extra):
        if name not in _PICKLE_BY_VALUE_MODULES:
            nnsight.register(importlib.import_module(name))


def pin_model_key(repo_id: str, canonical_id: str | None = None) -> None:
    """Pre-resolve the repo id nnsight puts in the model key, so `to_model_key` makes no hub call."""
    from nnsight.modeling import huggingface

    huggingface._ID_CACHE[repo_id] = canonical_id or repo_id


def check_deployed(repo_id: str, remote: bool | str | Backend | None) -> dict | None:
    """Raise unless `repo_id` is RUNNING on the NDIF host; returns its status entry (None for local)."""
    host = ndif_host(remote)
    if host is None:
        return None
    import nnsight
    from nnsight.modeling import huggingface

    previous, CONFIG.API.HOST = CONFIG.API.HOST, host
    try:
        status = nnsight.status(raw=True)  # {} when the host is unreachable or its backend is down
    finally:
        CONFIG.API.HOST = previous
    if not status:
        raise RemoteUnavailableError(
            f"NDIF host {host} did not answer GET /status (unreachable, or its compute backend is "
            f"reconnecting); cannot check that {repo_id} is deployed"
        )
    wanted = {repo_id.lower(), huggingface._ID_CACHE.get(repo_id, repo_id).lower()}
    running = []
    for entry in status.get("deployments", {}).values():
        if entry.get("deployment_level") in ("HOT", "WARM") and entry.get("application_state") == "RUNNING":
            running.append(str(entry.get("repo_id")))
            if str(entry.get("repo_id")).lower() in wanted:
                return entry
    raise RemoteSetupError(
        f"{repo_id} is not running on {host}; running there: {', '.join(sorted(running)) or 'none'}. "
        "Pick a deployed model (python -c 'import nnsight; print(nnsight.status())')."
    )


# -- retries ---------------------------------------------------------------------------


def _redact(text: str) -> str:
    key = os.environ.get(API_KEY_ENV) or CONFIG.API.APIKEY
    return text.replace(key, "***") if key else text


def is_transient(error: BaseException) -> bool:
    """Whether `error` is a network/5xx failure worth retrying (a failed intervention is not)."""
    import httpx
    import websocket

    cause = error.__cause__ if isinstance(error, RemoteError) else error
    if isinstance(error, RemoteError) and cause is None:
        return False  # the server ran the job and reported ERROR: retrying repeats the failure
    if isinstance(cause, httpx.HTTPStatusError):
        return cause.response.status_code >= 500 or cause.response.status_code == 429
    if isinstance(cause, websocket.WebSocketBadStatusException):
        return cause.status_code >= 500 or cause.status_code == 429
    return isinstance(
        cause,
        (httpx.TransportError, websocket.WebSocketConnectionClosedException,
         websocket.WebSocketTimeoutException, ConnectionError, TimeoutError),
    )


def run_with_retry(
    fn: Callable[[], T], *, attempts: int = 3, backoff: float = 2.0, what: str = "remote job"
) -> T:
    """Run `fn` (one remote job), retrying transient failures with exponential backoff."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except RemoteError as error:
            if not is_transient(error):
                raise RemoteError(
                    _redact(f"{what} failed on {CONFIG.API.HOST} (rejected or failed server-side; not retried):\n{error}")
                ) from error
            last = error
        except Exception as error:
            if not is_transient(error):
                raise
            last = error
        if attempt < attempts:
            delay = backoff * 2 ** (attempt - 1)
            log.warning("%s: attempt %d/%d on %s failed (%s); retrying in %.1fs", what, attempt, attempts,
                        CONFIG.API.HOST, _redact(f"{type(last).__name__}: {last}"), delay)
            time.sleep(delay)
    raise RemoteUnavailableError(
        _redact(f"{what} failed on {CONFIG.API.HOST} after {attempts} attempts: {type(last).__name__}: {last}")
    ) from last


# -- request counting ------------------------------------------------------------------


@dataclass
class JobCount:
    """Remote jobs sent while counting: `requests` POSTed to NDIF, `simulated` remote="local" runs."""

    requests: int = 0
    simulated: int = 0

    @property
    def total(self) -> int:
        return self.requests + self.simulated


@contextlib.contextmanager
def remote_job_counter() -> Iterator[JobCount]:
    """Count remote jobs sent inside the block (one per trace or session, not per head or example)."""
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.intervention.backends.remote import RemoteBackend

    count = JobCount()
    post, simulate = RemoteBackend._post, LocalSimulationBackend.__call__

    def counted_post(self, *args, **kwargs):
        count.requests += 1
        return post(self, *args, **kwargs)

    def counted_simulate(self, *args, **kwargs):
        count.simulated += 1
        return simulate(self, *args, **kwargs)

    RemoteBackend._post, LocalSimulationBackend.__call__ = counted_post, counted_simulate
    try:
        yield count
    finally:
        RemoteBackend._post, LocalSimulationBackend.__call__ = post, simulate
