"""The real Google Pub/Sub emulator, started and stopped by the tests that need it."""
import os
import shutil
import signal
import socket
import subprocess
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


@pytest.fixture(scope='session')
def pubsub_emulator(tmp_path_factory):
    """'127.0.0.1:PORT' of a running emulator, with PUBSUB_EMULATOR_HOST set
    for this process (the Pub/Sub clients and Beam's Pub/Sub IO honour it)."""
    port = free_port()
    command = emulator_command(port)
    if command is None:
        message = 'the Google Pub/Sub emulator (gcloud component pubsub-emulator) is not installed'
        if REQUIRED:
            pytest.fail(message + ' and REQUIRE_PUBSUB_EMULATOR=1')
        pytest.skip(message)
    log = open(tmp_path_factory.mktemp('pubsub') / 'emulator.log', 'wb')
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for_port(port, process)
        host = f'127.0.0.1:{port}'
        previous = os.environ.get('PUBSUB_EMULATOR_HOST')
        os.environ['PUBSUB_EMULATOR_HOST'] = host
        yield host
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()
        if 'previous' in locals():
            if previous is None:
                os.environ.pop('PUBSUB_EMULATOR_HOST', None)
            else:
                os.environ['PUBSUB_EMULATOR_HOST'] = previous
