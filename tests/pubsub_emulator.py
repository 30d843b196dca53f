"""The real Google Pub/Sub emulator, started and stopped by the tests (and
benchmarks) that need it, and helpers for the streaming tests."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

REQUIRED = os.environ.get('REQUIRE_PUBSUB_EMULATOR') == '1'


def emulator_command(port: int):
    """The emulator's launcher, or None when it is not installed here."""
    gcloud = shutil.which('gcloud')
    if gcloud is None:
        return None
    sdk_root = os.path.dirname(os.path.dirname(os.path.realpath(gcloud)))
    launcher = os.path.join(sdk_root, 'platform', 'pubsub-emulator', 'bin', 'cloud-pubsub-emulator')
    if not os.path.exists(launcher):
        return None
    return [launcher, '--host=127.0.0.1', f'--port={port}']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f'the Pub/Sub emulator exited with status {process.returncode}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError('the Pub/Sub emulator did not start in time')


class PubsubEmulator:
    """Starts the emulator on a free port and sets PUBSUB_EMULATOR_HOST for
    this process (the Pub/Sub clients and Beam's Pub/Sub IO honour it);
    stops it and restores the variable on exit."""

    def __init__(self, log_path=None):
        self.port = free_port()
        self.host = f'127.0.0.1:{self.port}'
        self._log_path = log_path or os.path.join(tempfile.gettempdir(),
                                                  f'pubsub-emulator-{self.port}.log')

    def __enter__(self) -> 'PubsubEmulator':
        command = emulator_command(self.port)
        if command is None:
            raise FileNotFoundError(
                'the Google Pub/Sub emulator (gcloud component pubsub-emulator) is not installed')
        self._log = open(self._log_path, 'wb')
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._previous = os.environ.get('PUBSUB_EMULATOR_HOST')
        try:
            wait_for_port(self.port, self._process)
        except Exception:
            self.__exit__(None, None, None)
            raise
        os.environ['PUBSUB_EMULATOR_HOST'] = self.host
        return self

    def __exit__(self, *exc_info):
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._log.close()
        if self._previous is None:
            os.environ.pop('PUBSUB_EMULATOR_HOST', None)
        else:
            os.environ['PUBSUB_EMULATOR_HOST'] = self._previous


@pytest.fixture(scope='session')
def pubsub_emulator(tmp_path_factory):
    """'127.0.0.1:PORT' of a running emulator (skips the test where the
    emulator is missing, fails it when REQUIRE_PUBSUB_EMULATOR=1)."""
    if emulator_command(0) is None:
        message = 'the Google Pub/Sub emulator (gcloud component pubsub-emulator) is not installed'
        if REQUIRED:
            pytest.fail(message + ' and REQUIRE_PUBSUB_EMULATOR=1')
        pytest.skip(message)
    with PubsubEmulator(str(tmp_path_factory.mktemp('pubsub') / 'emulator.log')) as emulator:
        yield emulator.host


def wait_until(condition, timeout: float, interval: float = 0.5) -> bool:
    """Polls `condition` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@contextlib.contextmanager
def runner_kept_pulling(publisher, topic):
    """Publishes a `page` event (filtered out by the job) every 0.2 s while
    the block runs. The local runner releases a batch it pulled only once its
    next pull returns, and the emulator holds an empty pull open for 30 s: a
    steady trickle keeps every pull answered at once."""
    stop = threading.Event()

    def trickle():
        n = 0
        while not stop.is_set():
            publisher.publish(topic, json.dumps({'type': 'page', 'messageId': f'filler-{n}'})
                              .encode())
            n += 1
            stop.wait(0.2)
    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def pull(subscriber, subscription, expected: int, timeout: float = 60) -> list:
    """The messages of a subscription, acknowledged, once `expected` have come
    or `timeout` has passed. Short pulls: the emulator holds a pull open for
    its whole deadline unless it has a full batch."""
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=2)
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in response.received_messages])
            messages += [m.message for m in response.received_messages]
    return messages
