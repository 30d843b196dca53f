"""A local stand-in for Segment's tracking API, for tests that drive Segment's
own Python SDK (segment-analytics-python) against it.

It takes the SDK's batches at `POST /v1/batch` (HTTP Basic auth with the
write key, JSON, gzip when the SDK compresses) and archives each message as
Segment's S3 destination writes it: `receivedAt` added from its clock,
`sentAt` from the batch, `originalTimestamp` = the message's own
`timestamp`, and `timestamp` = receivedAt - (sentAt - originalTimestamp)
(Segment's docs, connections/spec/common.md), one gzip NDJSON file per
request under `segment-logs/<source>/<received day, epoch ms>/`.

`fail_once(message_id, ...)` makes the first batch carrying that message
one Segment received but whose answer never reached the SDK: archived, then
answered 500 or the connection dropped. The SDK posts the same batch again
(the same messageIds, a new sentAt, X-Retry-Count), and the stand-in
receives that copy `later` than its clock says, as from a phone that was
offline: it lands in a later file, or a later day's folder.
"""
import base64
import datetime
import gzip
import http.server
import json
import os
import threading
import uuid
from typing import NamedTuple

DAY_MS = 86_400_000
ERROR_500, DROP = '500', 'drop'


class Post(NamedTuple):
    """One POST the SDK made: its X-Retry-Count, messageIds, what it got."""
    retry_count: int
    message_ids: tuple
    answer: str          # '200', ERROR_500 or DROP


def iso_ms(moment: datetime.datetime) -> str:
    """A UTC time as Segment writes it: '2026-11-04T10:00:00.120Z'."""
    moment = moment.astimezone(datetime.timezone.utc)
    return f'{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z'


def archived(message: dict, sent_at: str, received: datetime.datetime) -> dict:
    """A message as Segment archives it, received at `received`."""
    original = message['timestamp']
    skew = datetime.datetime.fromisoformat(sent_at) - datetime.datetime.fromisoformat(original)
    return dict(message, originalTimestamp=original, sentAt=sent_at,
                receivedAt=iso_ms(received), timestamp=iso_ms(received - skew))


class SegmentTrackingApi:
    """The stand-in, serving on a free local port while the `with` block runs;
    `host` is what the SDK's Client takes."""

    def __init__(self, root: str, write_key: str, source: str = 'sdk-source'):
        self.root = root
        self.write_key = write_key
        self.source = source
        self.posts: list[Post] = []
        self.files: list[str] = []
        self._faults = {}     # messageId -> (answer, delay of the re-post)
        self._delays = {}     # messageIds of a failed batch -> delay of its re-post
        self._lock = threading.Lock()

    def fail_once(self, message_id: str, answer: str, later: datetime.timedelta) -> None:
        """The first batch carrying `message_id` is archived, then answered
        `answer` (ERROR_500 or DROP); its re-post is received `later`."""
        self._faults[message_id] = (answer, later)

    @property
    def host(self) -> str:
        return f'http://127.0.0.1:{self._server.server_address[1]}'

    def __enter__(self) -> 'SegmentTrackingApi':
        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def receive(self, body: dict, retry_count: int) -> str:
        """Archives one batch; -> the answer to give ('200', ERROR_500, DROP)."""
        ids = tuple(message['messageId'] for message in body['batch'])
        with self._lock:
            received = datetime.datetime.now(datetime.timezone.utc) + self._delays.pop(
                ids, datetime.timedelta(0))
            answer = '200'
            for message_id in ids:
                fault = self._faults.pop(message_id, None)
                if fault is not None:
                    answer = fault[0]
                    self._delays[ids] = fault[1]
            self._write([archived(m, body['sentAt'], received) for m in body['batch']],
                        received)
            self.posts.append(Post(retry_count, ids, answer))
        return answer

    def _write(self, events: list, received: datetime.datetime) -> None:
        received_ms = int(received.timestamp() * 1000)
        folder = os.path.join(self.root, 'segment-logs', self.source,
                              str(received_ms - received_ms % DAY_MS))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f'{received_ms}.{len(self.files):04x}.{uuid.uuid4()}.gz')
        with gzip.open(path, 'wt', encoding='utf-8') as out:
            out.write(''.join(json.dumps(event) + '\n' for event in events))
        self.files.append(path)

    def _handler(self):
        api = self
        expected_auth = 'Basic ' + base64.b64encode(f'{self.write_key}:'.encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers['Content-Length']))
                if self.headers.get('Content-Encoding') == 'gzip':
                    data = gzip.decompress(data)
                if self.path != '/v1/batch':
                    return self._answer(404, {'success': False})
                if self.headers.get('Authorization') != expected_auth:
                    return self._answer(401, {'success': False})
                answer = api.receive(json.loads(data),
                                     int(self.headers.get('X-Retry-Count', '0')))
                if answer == DROP:
                    self.close_connection = True   # closed with no answer at all
                elif answer == ERROR_500:
                    self._answer(500, {'success': False, 'code': 'internal'})
                else:
                    self._answer(200, {'success': True})

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler
