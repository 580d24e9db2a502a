"""uvicorn's HTTP/1.1 protocol, answering requests it cannot parse with problem+json like everything else.

uvicorn answers bytes that do not parse as HTTP (a request line or headers too long for the parser,
e.g. a 100,000-character URL; malformed framing) itself, as ``text/plain`` "Invalid HTTP request
received.", before the application sees anything. Clients that branch on ``application/problem+json``
then get something else; this subclass writes the same 400 in the API's error format.
``binwatch serve`` passes it to uvicorn (``http=``). uvicorn is pinned (constraints.txt), and
tests/api/test_hardening.py sends such a request to a real server.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import PROBLEM_MEDIA_TYPE

UNPARSABLE = (
    "the request could not be parsed as HTTP/1.1: a malformed request line or headers, or a URL or "
    "headers too long (keep URLs under 8 KB)"
)


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": UNPARSABLE}
        ).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"x-content-type-options: nosniff\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(head))
        self.transport.close()
