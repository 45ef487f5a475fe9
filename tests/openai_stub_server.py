"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for judge tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class OpenAIStubServer:
    """Answer POST /v1/chat/completions with decide(last user message); optionally fail first with 5xx."""

    def __init__(
        self,
        decide: Callable[[str], str],
        api_key: str = "test-key",
        fail_first: int = 0,
        fail_status: int = 503,
    ):
        self.decide = decide
        self.api_key = api_key
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests: list[dict] = []  # every request seen: {"path", "authorized", "body"}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                authorized = self.headers.get("Authorization") == f"Bearer {stub.api_key}"
                with stub._lock:
                    stub.requests.append({"path": self.path, "authorized": authorized, "body": body})
                    failing = len(stub.requests) <= stub.fail_first
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if not authorized:
                    return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                if failing:
                    return self._send(stub.fail_status, {"error": {"message": "overloaded, try again"}})
                messages = body.get("messages")
                if not body.get("model") or not isinstance(messages, list) or not messages:
                    return self._send(400, {"error": {"message": "model and messages are required"}})
                prompt = [m for m in messages if m.get("role") == "user"][-1]["content"]
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(stub.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": stub.decide(prompt)},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
                    },
                )

        return Handler
