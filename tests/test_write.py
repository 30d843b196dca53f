"""WriteToLoops and WriteInPhases in real pipelines against a real LoopsSandbox:
the named result, parts in order, phases in order, the recorder hook, the
counters, a rejected key; and the checks made when the transforms are built."""
import functools
import json
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from pipeline.local.sandbox import LoopsSandbox
from transforms.core.metrics import NAMESPACE
from transforms.core.records import NO_STAMP, ContactSequence, Stamp, contact_upsert, event_send
from transforms.delivery.write import (LoopsWriteResult, WriteInPhases, WriteToLoops, phase_name,
                                       raise_if_key_rejected)
from transforms.loops.caller import LoopsCaller
from transforms.loops.client import AuthError, LoopsClient
from transforms.loops.connection import LoopsConnection
from transforms.loops.credentials import ApiKey
from transforms.loops.rate_limit import HEADROOM, TokenBucket
from transforms.loops.retry import RetryPolicy

KEY = 'sk-write-test-key-77'


def upsert(user: str, **extra):
    body = {'email': f'{user}@example.com', 'userId': user, **extra}
    return contact_upsert(body, f'user:{user}', NO_STAMP, 'test')


def event(user: str, number: int, with_email: bool = True):
    """An event send; without an email Loops needs the contact to exist."""
    message_id = f'{user}-{number}'
    body = {'eventName': f'step{number}', 'userId': user}
    if with_email:
        body['email'] = f'{user}@example.com'
    return event_send(body, f'user:{user}', Stamp(number, 0, message_id), message_id,
                      f'segment-{message_id}')


def connection(sandbox, key: str = KEY, **settings) -> LoopsConnection:
    return LoopsConnection(sandbox.base_url, ApiKey(key), **{'rate_limit': 200, **settings})


def counters_of(result) -> dict:
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals = Counter()
    for counter in query['counters']:
        totals[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return dict(totals)


def run(build) -> dict:
    p = beam.Pipeline(runner='FnApiRunner')
    build(p)
    result = p.run()
    result.wait_until_finish()
    return counters_of(result)


def test_the_result_names_its_failures_and_done():
    sequences = [ContactSequence('user:a', (upsert('a'), upsert('a', email='bad'))),
                 ContactSequence('user:b', (upsert('b', id='x'),))]

    def build(p):
        result = (p | beam.Create(sequences)
                  | WriteToLoops(connection(sandbox, write_shards=2), label='test'))
        assert isinstance(result, LoopsWriteResult)
        reasons = result.failures | beam.Map(lambda r: (r['stage'], r['reason'],
                                                        json.loads(r['request'])['body']))
        assert_that(reasons, equal_to([
            ('deliver', 'http_400', {'email': 'bad', 'userId': 'a'}),
            ('deliver', 'http_400', {'userId': 'b', 'email': 'b@example.com', 'id': 'x'})]),
            label='Failures')
        assert_that(result.done | beam.Map(lambda done: done[1]) | beam.CombineGlobally(sum),
                    equal_to([3]), label='Done')

    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        counters = run(build)
        contacts = {c['userId'] for c in sandbox.state()['contacts']}
    assert contacts == {'a', 'b'}
    assert (counters['deliver/delivered'], counters['deliver/failed'],
            counters['deliver/refused_parts'], counters['deliver/failed_http_400']) == (2, 1, 1, 1)


def test_a_contacts_parts_go_strictly_in_order():
    hot = [ContactSequence('user:hot', tuple(event('hot', 3 * part + n) for n in range(3)), part)
           for part in range(4)]
    others = [ContactSequence(f'user:c{n}', (event(f'c{n}', 0),), n % 2) for n in range(6)]
    given = [hot[3], others[0], hot[1], others[1], hot[0], others[2], hot[2], *others[3:]]
    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.005, 0.02), seed=2) as sandbox:
        run(lambda p: p | beam.Create(given) | WriteToLoops(connection(sandbox)))
        events = sandbox.state()['events']
    assert [e['eventName'] for e in events if e['userId'] == 'hot'] == [
        f'step{n}' for n in range(12)]
    # Every part-0 sequence of the shard went before any part-1 sequence.
    arrival = [(e['userId'], e['eventName']) for e in events]
    part_one_starts = min(arrival.index((f'c{n}', 'step0')) for n in (1, 3, 5))
    assert all(arrival.index((f'c{n}', 'step0')) < part_one_starts for n in (0, 2, 4))


def test_phases_are_written_in_order_under_stable_labels():
    contacts = [ContactSequence(f'user:u{n}', (upsert(f'u{n}'),)) for n in range(8)]
    # Known by their userId alone: these events need the contacts of phase 0.
    events = [ContactSequence(f'user:u{n}', (event(f'u{n}', 0, with_email=False),))
              for n in range(8)]
    events.append(ContactSequence('user:nobody', (event('nobody', 0, with_email=False),)))
    labels = []

    def build(p):
        by_phase = {0: (p | 'Contacts' >> beam.Create(contacts[:5]),
                        p | 'MoreContacts' >> beam.Create(contacts[5:])),
                    1: p | 'Events' >> beam.Create(events)}
        result = by_phase | 'WriteToLoops' >> WriteInPhases(connection(sandbox))
        assert_that(result.failures | beam.Map(lambda r: (r['reason'], r['source'])),
                    equal_to([('http_400', 'nobody-0')]))
        labels.extend(t.unique_name for t in p.to_runner_api().components.transforms.values())

    with LoopsSandbox(api_key=KEY, rate_limit=None, latency=(0.0, 0.01)) as sandbox:
        run(build)
        logged = sandbox.state()['requests']
    sends = [r['t'] for r in logged if r['path'] == '/v1/events/send']
    upserts = [r['t'] for r in logged if r['path'] == '/v1/contacts/update']
    assert len(upserts) == 8 and len(sends) == 9 and min(sends) > max(upserts)
    assert {'WriteToLoops/AllContacts', 'WriteToLoops/WriteContacts',
            'WriteToLoops/WaitForContacts',
            'WriteToLoops/WriteEvents', 'WriteToLoops/DeliveryFailures',
            'WriteToLoops/WriteEvents/SendToLoops'} <= set(labels)
    assert (phase_name(0), phase_name(1)) == ('Contacts', 'Events')


class FileRecorder:
    """A recorder that appends what it is told to a file (the DoFn holds a copy)."""

    def __init__(self, path: str):
        self.path = path

    def _note(self, *what) -> None:
        with open(self.path, 'a', encoding='utf-8') as out:
            out.write(json.dumps(what) + '\n')

    def open(self):
        self._note('open')

    def record(self, request, outcome):
        self._note('record', request.body['userId'], sorted(request.body), outcome.status)

    def maybe_flush(self):
        self._note('maybe_flush')

    def flush(self):
        self._note('flush')

    def close(self):
        self._note('close')


def test_the_recorder_sees_every_final_outcome(tmp_path):
    path = str(tmp_path / 'recorded.jsonl')
    sequences = [ContactSequence('user:a', (upsert('a', bio=[1]),)),
                 ContactSequence('user:b', (upsert('b'), upsert('b', plan='pro')))]
    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        run(lambda p: p | beam.Create(sequences)
            | WriteToLoops(connection(sandbox), recorder=FileRecorder(path)))
    notes = [tuple(json.loads(line)) for line in open(path, encoding='utf-8')]
    records = sorted((user, tuple(keys), status)
                     for kind, user, keys, status in (n for n in notes if n[0] == 'record'))
    assert records == [
        ('a', ('bio', 'email', 'userId'), 'failed'), ('a', ('email', 'userId'), 'delivered'),
        ('b', ('email', 'plan', 'userId'), 'delivered'), ('b', ('email', 'userId'), 'delivered')]
    assert notes[0] == ('open',) and notes[-2:] == [('flush',), ('close',)]
    assert notes.count(('open',)) == notes.count(('close',)) == notes.count(('flush',))
    for index, note in enumerate(notes):
        if note[0] == 'record':
            assert notes[index + 1] == ('maybe_flush',)


def test_a_rejected_key_fails_every_request_without_sending_and_the_job_raises():
    sequences = [ContactSequence(f'user:u{n}', (upsert(f'u{n}'), upsert(f'u{n}', plan='x')))
                 for n in range(20)]

    def build(p):
        result = (p | beam.Create(sequences)
                  | WriteToLoops(connection(sandbox, key='sk-wrong', max_in_flight=2)))
        assert_that(result.failures | beam.Map(lambda r: r['reason']),
                    equal_to(['key_rejected'] * 40))

    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        counters = run(build)
        logged = sandbox.state()['requests']
    assert counters['deliver/failed_key_rejected'] == counters['deliver/failed'] == 40
    assert 1 <= len(logged) <= 2
    with pytest.raises(AuthError, match='40 requests were not delivered'):
        raise_if_key_rejected(counters)
    raise_if_key_rejected({'deliver/failed_http_400': 3})


def one_attempt_client(base_url: str) -> LoopsClient:
    return LoopsClient.from_parts(LoopsCaller(base_url, KEY), RetryPolicy(max_attempts=1),
                                  TokenBucket(200))


@pytest.mark.parametrize('options, attempts', [
    ({'client_factory': None}, 3),
    ({'retry_policy': RetryPolicy(2, 0.01)}, 2),
    ('factory', 1),
])
def test_the_client_comes_from_the_factory_or_the_policy(options, attempts):
    with LoopsSandbox(api_key=KEY, rate_limit=None, fail_before=1.0) as sandbox:
        if options == 'factory':
            options = {'client_factory': functools.partial(one_attempt_client, sandbox.base_url)}
        counters = run(lambda p: p | beam.Create([ContactSequence('user:a', (upsert('a'),))])
                       | WriteToLoops(connection(sandbox, max_attempts=3), **options))
        logged = sandbox.state()['requests']
    assert len(logged) == attempts
    assert counters['deliver/failed_retries_exhausted'] == 1
    assert counters['deliver/retries'] == attempts - 1


def test_throttled_time_is_counted():
    sequences = [ContactSequence(f'user:u{n}', (upsert(f'u{n}'),)) for n in range(12)]
    with LoopsSandbox(api_key=KEY, rate_limit=None) as sandbox:
        counters = run(lambda p: p | beam.Create(sequences)
                       | WriteToLoops(connection(sandbox, rate_limit=20)))
    # 12 requests evenly spaced at 97% of 20/s, all ready at once: request k
    # waited k slots, and at least the last one waited 11 of them.
    assert counters['deliver/throttled_ms'] >= 11 / (20 * HEADROOM) * 1000 * 0.9


@pytest.mark.parametrize('arguments, error, says', [
    ({'connection': 'http://x'}, TypeError, 'LoopsConnection'),
    ({'label': ''}, ValueError, 'label'),
    ({'client_factory': 'a client'}, TypeError, 'client_factory'),
    ({'retry_policy': 3}, TypeError, 'RetryPolicy'),
    ({'retry_policy': RetryPolicy(), 'client_factory': lambda: None}, ValueError, 'not both'),
    ({'recorder': object()}, TypeError, 'maybe_flush'),
    ({'max_buffering_seconds': 0}, ValueError, 'max_buffering_seconds'),
    ({'batch_size': 0}, ValueError, 'batch_size'),
    ({'clock': 5}, TypeError, 'clock'),
])
def test_write_to_loops_checks_its_arguments_when_built(arguments, error, says):
    settings = {'connection': LoopsConnection('http://127.0.0.1:9/api', ApiKey(KEY)),
                **arguments}
    with pytest.raises(error, match=says):
        WriteToLoops(settings.pop('connection'), **settings)


@pytest.mark.parametrize('by_phase, error', [
    ({7: None}, ValueError), ({}, ValueError), ((None,), ValueError), ('abc', TypeError),
])
def test_write_phases_checks_its_input(by_phase, error):
    write = WriteInPhases(LoopsConnection('http://127.0.0.1:9/api', ApiKey(KEY)))
    with pytest.raises(error):
        write.expand(by_phase)


@pytest.mark.parametrize('settings, says', [
    ({'rate_limit': 0}, 'rate_limit'), ({'write_shards': 0}, 'write_shards'),
    ({'max_attempts': 0}, 'max_attempts'), ({'max_in_flight': 0}, 'max_in_flight'),
    ({'read_timeout': 0}, 'read_timeout'), ({'base_url': 'http://example.com/api'}, 'https'),
])
def test_a_connection_that_cannot_work_is_refused(settings, says):
    with pytest.raises(ValueError, match=says):
        LoopsConnection(**{'base_url': 'http://127.0.0.1:9/api', 'api_key': ApiKey(KEY),
                           **settings})
