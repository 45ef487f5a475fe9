"""CPU stand-in for NDIF's Ray model actor, serving ndif 0.1.2's Redis queue on loopback.

Run by tests/ndif_service.py, never imported by the harness. It does what ndif's
dispatcher + replica + ModelActor do for one CPU "replica", with ndif's own code wherever
that code runs without Ray:

- marks the compute backend connected (`ray:connected`, as Dispatcher.connect does);
- answers /status and /env refresh triggers (as Dispatcher.status_worker/env_worker do,
  with the controller's status/env layout);
- pops pickled BackendRequestModel requests from the queue the API pushes to, loads the
  model from its model key (HuggingFaceModel.from_model_key, weights frozen as
  BaseModelDeployment.load_from_disk does), and runs the block with ndif's
  prepare_traced_block / execute_traced_block inside block_scope;
- answers with BackendRequestModel.respond: QUEUED, DISPATCHED, RUNNING, LOG lines for
  the block's prints, then COMPLETED with the result inline (blocking) or staged in the
  object store (non-blocking / too large), or ERROR with the block's traceback.

Usage: python tests/ndif_worker.py [--model-key KEY ...] [--dtype float32] [--hide harness ...]
Env:   NDIF_REDIS_URL, NDIF_OBJECT_STORE_URL (ndif's own settings).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import pickle
import signal
import sys
import threading
import time
import traceback
from importlib.metadata import distributions, packages_distributions

import redis
import torch
import zstandard

from ndif.common.errors import RequestError
from ndif.common.providers.objectstore import ObjectStoreProvider
from ndif.common.providers.redis import RedisProvider
from ndif.common.redis import (
    ENV_KEY,
    ENV_READY_CHANNEL,
    ENV_REQUESTED_KEY,
    ENV_TRIGGER_STREAM,
    ENV_TTL_S,
    STATUS_KEY,
    STATUS_READY_CHANNEL,
    STATUS_REQUESTED_KEY,
    STATUS_TRIGGER_STREAM,
    STATUS_TTL_S,
)
from ndif.common.schema import BackendRequestModel, Status
from ndif.services.api.queue.config import CONFIG as QUEUE_CONFIG
from ndif.services.ray.deployments.modeling.nns import (
    block_scope,
    execute_traced_block,
    prepare_traced_block,
)
from ndif.services.ray.deployments.modeling.util import LogStream, cpu_pickle_module
from nnsight.modeling.huggingface import HuggingFaceModel
from nnsight.tracing.util import clean_traceback

logger = logging.getLogger("ndif_worker")

# Redis key counting executed jobs, so a test can check request counts server-side too.
EXECUTED_KEY = "cpu_worker:executed"
REPLICA_ID = "cpu0"


class HiddenModules:
    """Import hook making packages unimportable, as they are on NDIF (e.g. the harness)."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not installed on this NDIF worker)")
        return None


class CpuWorker:
    """One CPU replica serving every model key it is asked for (loaded on first use)."""

    def __init__(self, dtype: str) -> None:
        self.dtype_name = dtype
        self.dtype = getattr(torch, dtype)
        self.models: dict[str, HuggingFaceModel] = {}
        self.stop = threading.Event()
        # Blocking pops need socket_timeout=None under redis-py 8 (see RedisProvider.connect).
        self.queue = redis.Redis.from_url(RedisProvider.url, socket_timeout=None)

    def load(self, model_key: str) -> HuggingFaceModel:
        """Build the model for `model_key` once, frozen like NDIF's served weights."""
        if model_key not in self.models:
            model = HuggingFaceModel.from_model_key(model_key, dispatch=True, dtype=self.dtype)
            model._module.requires_grad_(False)
            self.models[model_key] = model
            self.publish_status()
            logger.info("loaded %s", model_key)
        return self.models[model_key]

    # -- /status and /env (the dispatcher's status_worker / env_worker) -----------------

    def status(self) -> dict:
        """The controller's status layout: one HOT, RUNNING replica per loaded model."""
        deployments = {}
        for model_key, model in self.models.items():
            data = json.loads(model_key.split(":", 1)[1])
            deployments[f"{REPLICA_ID}:ModelActor:{model_key}"] = {
                "application_state": "RUNNING",
                "deployment_level": "HOT",
                "model_key": model_key,
                "replica_id": REPLICA_ID,
                "repo_id": data.get("repo_id"),
                "task": data.get("task"),
                "revision": data.get("revision") or "main",
                "dtype": self.dtype_name,
                "n_params": sum(p.numel() for p in model._module.parameters()),
                "pinned": True,
                "trusted": True,
                "gpus": 0,
            }
        return {"deployments": deployments, "cluster": {"nodes": {}}}

    @staticmethod
    def env() -> dict:
        """Python version and packages by import name, as the controller's env() reports."""
        dist_to_imports: dict[str, list[str]] = {}
        for import_name, dist_names in packages_distributions().items():
            for dist_name in dist_names:
                dist_to_imports.setdefault(dist_name, []).append(import_name)
        packages = {}
        for dist in distributions():
            for name in dist_to_imports.get(dist.metadata["Name"], [dist.metadata["Name"]]):
                packages[name] = dist.version
        return {"python_version": sys.version, "packages": packages}

    def publish_status(self) -> None:
        client = RedisProvider.sync_client
        client.set(STATUS_KEY, json.dumps(self.status(), default=str), ex=STATUS_TTL_S)
        client.delete(STATUS_REQUESTED_KEY)
        client.publish(STATUS_READY_CHANNEL, "ok")

    def serve_triggers(self) -> None:
        """Refresh /status and /env when the API asks (its coalesced-cache triggers)."""
        client = redis.Redis.from_url(RedisProvider.url, decode_responses=True, socket_timeout=None)
        last = {STATUS_TRIGGER_STREAM: "$", ENV_TRIGGER_STREAM: "$"}
        while not self.stop.is_set():
            for stream, entries in client.xread(last, block=500) or []:
                last[stream] = entries[-1][0]
                if stream == STATUS_TRIGGER_STREAM:
                    self.publish_status()
                else:
                    client.set(ENV_KEY, json.dumps(self.env(), default=str), ex=ENV_TTL_S)
                    client.delete(ENV_REQUESTED_KEY)
                    client.publish(ENV_READY_CHANNEL, "ok")

    # -- requests (Processor -> Replica -> ModelActor.run) ------------------------------

    def run(self, request: BackendRequestModel) -> None:
        """Run one request and answer it the way BaseModelDeployment.run does."""
        request.respond(Status.QUEUED, "Your job has been queued.")
        request.respond(Status.DISPATCHED, "Your job has been sent to the model deployment.")
        try:
            model = self.load(request.model_key)
        except Exception as error:  # the dispatcher's "cannot deploy" path
            request.respond(Status.ERROR, f"Model {request.model_key} could not be deployed: {error}")
            return
        request.respond(Status.RUNNING, "Your job has started running.")
        RedisProvider.sync_client.incr(EXECUTED_KEY)
        with block_scope():
            try:
                model._remoteable_set_env(request.env)
                tracer, _ = prepare_traced_block(
                    model, request.payload, request.compress, deserialize=BackendRequestModel.deserialize
                )
                out, err = LogStream(request), LogStream(request)
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    saved = execute_traced_block(tracer, self.dtype)
                out.flush()
                err.flush()
                buffer = io.BytesIO()
                torch.save(saved, buffer, pickle_module=cpu_pickle_module())
                blob = buffer.getvalue()
                if request.compress:
                    blob = zstandard.ZstdCompressor(level=3).compress(blob)
            except Exception as error:
                request.respond(Status.ERROR, self.format_error(error))
                return
            finally:
                model.interleaver.cancel()
                gc.collect()
        if request.session_id and len(blob) <= RedisProvider.max_publish_bytes():
            request.respond(Status.COMPLETED, "Your job has been completed.", data=blob, pickled=True)
        else:
            key = f"{request.id}.pt"
            ObjectStoreProvider.put(key, blob)
            url = ObjectStoreProvider.presigned_get(key)
            request.respond(Status.COMPLETED, "Your job has been completed.", data=url)

    @staticmethod
    def format_error(error: BaseException) -> str:
        """The block's own traceback (nnsight frames dropped), as ModelActor.format_error."""
        if isinstance(error, RequestError):
            return str(error)
        tb = clean_traceback(error.__traceback__)
        tb_list = [f for f in traceback.extract_tb(tb) if f.filename != __file__]
        return "".join(traceback.format_list(tb_list)) + "".join(
            traceback.format_exception_only(type(error), error)
        )

    def serve(self, model_keys: list[str]) -> None:
        """Preload `model_keys`, mark the backend connected, and serve until SIGTERM."""
        for model_key in model_keys:
            self.load(model_key)
        threading.Thread(target=self.serve_triggers, daemon=True).start()
        RedisProvider.sync_client.set("ray:connected", "1")
        print("CPU worker ready", flush=True)
        while not self.stop.is_set():
            item = self.queue.brpop([QUEUE_CONFIG.queue_key], timeout=1)
            if item is None:
                continue
            request: BackendRequestModel = pickle.loads(item[1])
            try:
                self.run(request)
            except Exception:  # never let one request take the replica down
                logger.exception("request %s failed outside the block", request.id)
                request.respond(Status.ERROR, "Internal worker error; see the worker log.")
        RedisProvider.sync_client.delete("ray:connected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-key", action="append", default=[], help="preload and report this model key")
    parser.add_argument("--dtype", default="float32", help="torch dtype the weights are served in")
    parser.add_argument("--hide", action="append", default=[], help="package the server must not import")
    args = parser.parse_args()
    sys.meta_path.insert(0, HiddenModules(args.hide))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = CpuWorker(args.dtype)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    started = time.time()
    worker.serve(args.model_key)
    logger.info("stopped after %.1fs", time.time() - started)


if __name__ == "__main__":
    main()
