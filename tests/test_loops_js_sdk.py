"""The sandbox checked against Loops' official JS SDK: npm `loops` (pinned
below) drives the sandbox over HTTP (tests/loops_js_sdk/drive.mjs, our own
script), and every answer must be what the SDK expects to read, errors
included, in each error body shape.

The SDK is installed once into a cache directory ($XDG_CACHE_HOME or
~/.cache, segment-loops/npm-loops-<version>) and kept there; the test is
skipped, saying why, where node or npm is missing or the npm registry can't
be reached.
"""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from pipeline.local.sandbox import LoopsSandbox

SDK_VERSION = '7.3.0'
KEY = 'js-sdk-test-key'
HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, 'loops_js_sdk', 'drive.mjs')
MIN_NODE_MAJOR = 18   # the SDK's "engines": {"node": ">=18"}
WORKFLOWS = [{'id': f'wf{n:02}', 'name': f'Workflow {n}', 'status': 'Sending',
              'updatedAt': f'2026-01-{n:02}T00:00:00.000Z',
              'trigger': {'typeName': 'EventTrigger', 'eventName': 'signup'}}
             for n in range(1, 13)]
PATTERNS = [{'eventName': 'Order Paid / EU',
             'eventProperties': [{'name': 'total', 'type': 'number'}]}]


def sdk_cache_dir() -> str:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'segment-loops', f'npm-loops-{SDK_VERSION}')


@pytest.fixture(scope='session')
def sdk_entry() -> str:
    """The installed SDK's ESM entry point, installed on first use."""
    node, npm = shutil.which('node'), shutil.which('npm')
    if node is None or npm is None:
        pytest.skip('node and npm are needed to run the official Loops JS SDK')
    version = subprocess.run([node, '--version'], capture_output=True, text=True).stdout
    if int(version.lstrip('v').split('.')[0]) < MIN_NODE_MAJOR:
        pytest.skip(f'the Loops JS SDK needs node >= {MIN_NODE_MAJOR}, found {version.strip()}')
    target = sdk_cache_dir()
    entry = os.path.join(target, 'node_modules', 'loops', 'dist', 'index.esm.js')
    if not os.path.exists(entry):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = tempfile.mkdtemp(dir=os.path.dirname(target))
        installed = subprocess.run(
            [npm, 'install', '--prefix', staging, '--no-save', '--no-audit', '--no-fund',
             '--ignore-scripts', f'loops@{SDK_VERSION}'],
            capture_output=True, text=True, timeout=300)
        if installed.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.skip(f'npm could not install loops@{SDK_VERSION}: '
                        f'{installed.stderr.strip()[-300:]}')
        try:
            os.rename(staging, target)
        except OSError:   # installed meanwhile by another session
            shutil.rmtree(staging, ignore_errors=True)
    return entry


def drive(sdk_entry: str, sandbox: LoopsSandbox) -> dict:
    """Runs the driver against `sandbox`: {step: {value} or {error}}."""
    env = dict(os.environ, LOOPS_SDK_ENTRY=sdk_entry, LOOPS_API_ROOT=sandbox.base_url + '/',
               LOOPS_API_KEY=KEY, WORKFLOW_ID='wf12')
    ran = subprocess.run(['node', DRIVER], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def sandbox_for(error_shape: str) -> LoopsSandbox:
    return LoopsSandbox(KEY, rate_limit=None, workflows=WORKFLOWS, event_patterns=PATTERNS,
                        error_shape=error_shape)


def value(results: dict, step: str):
    assert 'value' in results[step], results[step]
    return results[step]['value']


def error(results: dict, step: str) -> tuple:
    """(the SDK's error class, HTTP status, its message) of a failed step."""
    failed = results[step].get('error')
    assert failed, results[step]
    return failed['name'], failed['statusCode'], failed['message']


def test_the_sdk_reads_every_answer_of_the_sandbox(sdk_entry):
    with sandbox_for('documented') as sandbox:
        results = drive(sdk_entry, sandbox)
        state, base_url = sandbox.state(), sandbox.base_url

    assert value(results, 'testApiKey') == {'success': True, 'teamName': 'Sandbox team'}
    created = value(results, 'createContact')
    assert created['success'] is True and isinstance(created['id'], str)
    assert value(results, 'updateContact') == {'success': True, 'id': created['id']}
    # findContact: the README's example shape, every default property there.
    assert value(results, 'findContact') == [{
        'id': created['id'], 'email': 'ada@example.com', 'firstName': 'Ada',
        'lastName': 'Lovelace', 'source': 'API', 'subscribed': True, 'userGroup': '',
        'userId': 'u1', 'mailingLists': {'list_news': True, 'list_product': True},
        'optInStatus': None, 'planTier': 'pro'}]
    assert value(results, 'findNobody') == []
    assert value(results, 'sendEvent') == {'success': True}
    [event] = state['events']
    assert (event['eventName'], event['eventProperties'], event['idempotency_key']) == (
        'signup', {'plan': 'pro', 'seats': 3}, 'sdk-key-1')
    assert value(results, 'createContactProperty') == {'success': True}
    properties = value(results, 'listContactProperties')
    assert [p['key'] for p in properties][:9] == [
        'firstName', 'lastName', 'email', 'notes', 'source', 'userGroup', 'userId',
        'subscribed', 'createdAt']
    assert value(results, 'listCustomProperties') == [
        {'key': 'planTier', 'label': 'Plan Tier', 'type': 'string'}]
    assert [m['id'] for m in value(results, 'listMailingLists')] == ['list_news', 'list_product']

    first = value(results, 'listWorkflows')
    assert first['pagination'] == {
        'totalResults': 12, 'returnedResults': 10, 'perPage': 10, 'totalPages': 2,
        'nextCursor': 'wf02', 'nextPage': f'{base_url}/v1/workflows?cursor=wf02&perPage=10'}
    assert [w['id'] for w in first['data']] == [f'wf{n:02}' for n in range(12, 2, -1)]
    assert [w['id'] for w in value(results, 'listWorkflowsNext')['data']] == ['wf02', 'wf01']
    workflow = value(results, 'getWorkflow')
    assert (workflow['id'], workflow['status'], workflow['url']) == (
        'wf12', 'Sending', 'https://app.loops.so/workflows/wf12')
    assert workflow['nodes'][workflow['rootNodeId']] == {
        'typeName': 'EventTrigger', 'nextNodeIds': ['wf12-email'], 'eventName': 'signup',
        'reEligible': False}
    # The fixture's pattern, and the one the event above created.
    assert [p['eventName'] for p in value(results, 'listEventPatterns')['data']] == [
        'Order Paid / EU', 'signup']
    assert value(results, 'getEventPatternByName')['eventProperties'] == [
        {'name': 'total', 'type': 'number'}]
    assert value(results, 'getEventPattern')['eventProperties'] == [
        {'name': 'plan', 'type': 'string'}, {'name': 'seats', 'type': 'number'}]
    assert value(results, 'deleteContact') == {'success': True, 'message': 'Contact deleted.'}
    assert len(state['triggers']) == 12   # the event set off every live EventTrigger


# The SDK's APIError text is "<status> - <Loops' words>" (npm loops 7.3.0,
# dist/index.cjs:39-63): the same words whichever shape the body has.
EXPECTED_ERRORS = {
    'createContactAgain': (409, 'Email or userId is already on list.'),
    'sendEventAgain': (409, 'Idempotency key has already been used'),
    'sendEventNoContact': (400, 'Contact not found.'),
    'sendEventInvalid': (400, 'Event names cannot contain colons (:).'),
    'createContactPropertyAgain': (400, 'Property already exists.'),
    'getWorkflowMissing': (404, 'Workflow not found.'),
    'deleteContactAgain': (404, 'Contact not found.'),
    'badKey': (401, 'Invalid API key'),
}


@pytest.mark.parametrize('error_shape', ['documented', 'error', 'nested'])
def test_the_sdk_surfaces_the_sandboxs_error_text_in_each_shape(sdk_entry, error_shape):
    with sandbox_for(error_shape) as sandbox:
        results = drive(sdk_entry, sandbox)
    for step, (status, words) in EXPECTED_ERRORS.items():
        assert error(results, step) == ('APIError', status, f'{status} - {words}'), step


def test_a_body_that_is_not_json_is_the_sdks_raw_body(sdk_entry):
    with sandbox_for('text') as sandbox:
        results = drive(sdk_entry, sandbox)
    failed = results['sendEventNoContact']['error']
    assert (failed['message'], failed['json'], failed['rawBody']) == (
        '400', None, 'Contact not found.')
