"""A fake OpenAI + Anthropic server on a loopback port that streams realistic SSE.

POST /v1/chat/completions (stream or not; the final usage chunk only when the request set
stream_options.include_usage) and POST /v1/messages (message_start, content_block_*,
message_delta with cumulative usage, message_stop). `FakeProvider.words` words are
streamed, one per chunk; `delay` seconds between chunks. Requests are recorded.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


class FakeProvider:
    def __init__(self, words: int = 20, delay: float = 0.0, prompt_tokens: int = 25, cached_tokens: int = 5) -> None:
        self.words = words
        self.delay = delay
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.requests: List[Dict[str, Any]] = []
        self.disconnects = 0
        self.fail_status: Optional[int] = None
        self.ignore_max_tokens = False  # stream past max_tokens (a runaway answer)
        self.service_tier: Optional[str] = None  # OpenAI: sent on every chunk and the response when set
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                provider.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                if provider.fail_status:
                    self._json(provider.fail_status, {"error": {"message": "upstream failure", "type": "server_error"}})
                    return
                try:
                    if self.path.endswith("/chat/completions"):
                        provider._chat(self, body)
                    elif self.path.endswith("/messages"):
                        provider._messages(self, body)
                    else:
                        self._json(404, {"error": {"message": "not found"}})
                except (BrokenPipeError, ConnectionResetError):
                    provider.disconnects += 1

            def _json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _sse_start(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True

            def _send(self, text: str) -> None:
                self.wfile.write(text.encode())
                self.wfile.flush()

        self._handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeProvider":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _words(self) -> List[str]:
        return [("hello" if i == 0 else " world") for i in range(self.words)]

    def _completion_tokens(self, max_tokens: Optional[int]) -> int:
        if max_tokens is None or self.ignore_max_tokens:
            return self.words
        return min(self.words, max_tokens)

    # ---- OpenAI chat completions
    def _chat(self, h: Any, body: Dict[str, Any]) -> None:
        model = body.get("model", "gpt-test")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        words = self._words()[: self._completion_tokens(max_tokens)]
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": self.prompt_tokens + len(words),
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        base: Dict[str, Any] = {"id": "chatcmpl-fake123", "created": int(time.time()), "model": model,
                                "system_fingerprint": "fp_fake"}
        if self.service_tier is not None:
            base["service_tier"] = self.service_tier
        if not body.get("stream"):
            h._json(200, {"service_tier": "default", **base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}], "usage": usage})
            return
        h._sse_start()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: Dict[str, Any], finish: Optional[str] = None) -> str:
            c = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return "data: " + json.dumps(c) + "\n\n"

        h._send(chunk({"role": "assistant", "content": "", "refusal": None}))
        for w in words:
            if self.delay:
                time.sleep(self.delay)
            h._send(chunk({"content": w}))
        h._send(chunk({}, "stop" if max_tokens is None or len(words) < max_tokens else "length"))
        if include_usage:
            h._send("data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": [],
                                           "usage": usage}) + "\n\n")
        h._send("data: [DONE]\n\n")

    # ---- Anthropic messages
    def _messages(self, h: Any, body: Dict[str, Any]) -> None:
        model = body.get("model", "claude-test")
        words = self._words()[: self._completion_tokens(body.get("max_tokens"))]
        uncached = self.prompt_tokens - self.cached_tokens
        msg = {"id": "msg_fake123", "type": "message", "role": "assistant", "model": model,
               "stop_sequence": None}
        if not body.get("stream"):
            h._json(200, {**msg, "content": [{"type": "text", "text": "".join(words)}], "stop_reason": "end_turn",
                          "usage": {"input_tokens": uncached, "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": self.cached_tokens, "output_tokens": len(words)}})
            return
        h._sse_start()

        def ev(name: str, data: Dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        h._send(ev("message_start", {"message": {**msg, "content": [], "stop_reason": None, "usage": {
            "input_tokens": uncached, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cached_tokens, "output_tokens": 1}}}))
        h._send(ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        h._send(ev("ping", {}))
        for w in words:
            if self.delay:
                time.sleep(self.delay)
            h._send(ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}))
        h._send(ev("content_block_stop", {"index": 0}))
        h._send(ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": len(words)}}))
        h._send(ev("message_stop", {}))
