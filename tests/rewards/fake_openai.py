"""A small OpenAI-compatible chat server on 127.0.0.1 that injects faults, chosen by the request's
model name. Used by the LLM-judge tests; bounded: it only answers, never loops."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FENCE = re.compile(r"(<<<[0-9a-f]+>>>)\n(.*)\n\1", re.DOTALL)


def grade(user: str) -> str:
    """A 'capable judge': compares the fenced response with the reference, quoting the response."""
    m = FENCE.search(user)
    response = m.group(2) if m else ""
    answer = re.search(r"Reference answer: (.*)", user).group(1).strip().lower()
    ok = response.strip().lower().rstrip(".") == answer
    return f"The candidate wrote: {response!r}. Verdict: <answer>{int(ok)}</answer>"


LOGIN_PAGE = "<html><head><title>Sign in</title></head><body>" + "<p>Single sign-on required.</p>" * 40 + "</body></html>"
# model name -> (HTTP status, content type, body): endpoints that answer something else than a chat completion
BODIES = {
    "html": (200, "text/html; charset=utf-8", LOGIN_PAGE),
    "plain-text": (200, "text/plain", "upstream connect error or disconnect/reset before headers"),
    "json-not-completion": (200, "application/json", '{"status": "ok", "service": "judge-gateway"}'),
    "not-found-html": (404, "text/html", "<html><body><h1>404 Not Found</h1>no route for /v1/chat/completions</body></html>"),
}


class FakeOpenAI:
    def __init__(self):
        self.calls: dict[str, int] = {}
        self.requests: list[dict] = []
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                with server.lock:
                    server.in_flight += 1
                    server.peak = max(server.peak, server.in_flight)
                try:
                    self._post()
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _post(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                model = body["model"]
                n = server.calls[model] = server.calls.get(model, 0) + 1
                user = body["messages"][-1]["content"]
                if model == "rate-limited" and n <= 2 or model == "always-500":
                    return self._send(429 if model == "rate-limited" else 500, {"error": {"message": "busy"}})
                if model == "slow":
                    time.sleep(2.0)
                if model == "slowish":
                    time.sleep(0.2)
                if model == "echo-401":  # a server that quotes the credentials it was sent
                    return self._send(401, {"error": {"message": f"bad key {self.headers['Authorization']}"}})
                if model == "malformed":
                    return self._raw(200, b'{"choices": [ this is not json')
                if model in BODIES:  # a proxy, portal or wrong server answering in its own format
                    code, content_type, text = BODIES[model]
                    return self._raw(code, text.encode(), content_type)
                if model == "no-tag-then-tag":
                    text = "I think it is right." if n % 2 == 1 else "<answer>1</answer>"
                elif model == "never-tags":
                    text = "Hard to say."
                elif model == "conflicting":
                    text = "<answer>1</answer> or maybe <answer>0</answer>"
                else:
                    text = grade(user)
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _send(self, code, doc):
                self._raw(code, json.dumps(doc).encode())

            def _raw(self, code, data, content_type="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
