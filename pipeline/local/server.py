"""The HTTP side of the sandbox (standard library only): a threading server
that turns each request into a `Request`, asks its `answer` function for a
`Reply` (None: drop the connection unanswered) and writes it as JSON (or
plain text) with the rate limit headers. It knows nothing about Loops.
"""
import json
import socket
import sys
import threading
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs, urlsplit

from pipeline.local.rules import ApiError

MAX_BODY_BYTES = 1_000_000
# A body over the limit is still read (up to this much) so that the 413 reaches
# the client instead of a connection reset.
MAX_DRAINED_BYTES = 16 * MAX_BODY_BYTES


@dataclass(frozen=True)
class Request:
    """One HTTP request; `body` is the ApiError to answer when it could not be read."""
    method: str
    path: str
    query: dict
    headers: Message
    body: Union[bytes, ApiError]


@dataclass(frozen=True)
class Reply:
    """A JSON answer, or (`text` set) a plain-text one; `remaining` overrides
    the x-ratelimit-remaining header."""
    status: int
    payload: Any
    remaining: Optional[int] = None
    text: Optional[str] = None


def error_reply(status: int, message: str, remaining: Optional[int] = None) -> Reply:
    """Loops' error envelope."""
    return Reply(status, {'success': False, 'message': message}, remaining)


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its open connections.

    `answer(request)` -> Reply or None; `rate_headers(remaining)` -> the
    headers every reply carries.
    """

    # The default backlog of 5 drops simultaneous connects, and the client's
    # SYN retry then adds a second of delay to a burst.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], answer: Callable[[Request], Optional[Reply]],
                 rate_headers: Callable[[Optional[int]], dict]):
        self.answer = answer
        self.rate_headers = rate_headers
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _SandboxHandler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Ends the kept-alive connections, so that a stopped sandbox answers nothing."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout, a test ending) is routine here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _IncompleteBody(Exception):
    """The connection closed before the whole body arrived."""


class _SandboxHandler(BaseHTTPRequestHandler):
    """One connection: every method goes to the server's `answer`."""

    protocol_version = 'HTTP/1.1'
    # Headers and body go out in two writes; with Nagle's algorithm the body
    # then waits for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the default access log goes to stderr on every request."""

    def send_error(self, code: int, message: Optional[str] = None,
                   explain: Optional[str] = None) -> None:
        """Malformed requests and unknown methods get the JSON envelope too."""
        self.close_connection = True
        self._respond(error_reply(code, message or HTTPStatus(code).phrase))

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            body: Union[bytes, ApiError] = self._read_body()
        except ApiError as error:
            body = error
        except _IncompleteBody:
            # The client hung up mid-body (a killed job): like any HTTP
            # server, never hand a part of a request to the API, where a
            # refusal would spend its Idempotency-Key.
            self.close_connection = True
            return
        reply = self.server.answer(Request(self.command, url.path,
                                           parse_qs(url.query, keep_blank_values=True),
                                           self.headers, body))
        if reply is None:
            # Nothing is written: the client sees the connection close unanswered.
            self.close_connection = True
        else:
            self._respond(reply)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        """The request body; ApiError (and a closed connection) when it can't be used."""
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            self.close_connection = True
            raise ApiError(411, 'A Content-Length is required.')
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise ApiError(400, 'Invalid Content-Length.')
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            left = length if length <= MAX_DRAINED_BYTES else 0
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            raise ApiError(413, 'Payload too large')
        body = self.rfile.read(length)
        if len(body) < length:
            raise _IncompleteBody()
        return body

    def _respond(self, reply: Reply) -> None:
        if reply.text is None:
            data, content_type = json.dumps(reply.payload).encode('utf-8'), 'application/json'
        else:
            data, content_type = reply.text.encode('utf-8'), 'text/plain; charset=utf-8'
        try:
            self.send_response(reply.status)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(data)))
            for name, value in self.server.rate_headers(reply.remaining).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header('Connection', 'close')
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:
            self.close_connection = True  # the client gave up (e.g. timed out)
