"""`segment-loops replay` against the real sandbox: a backfill through faults
leaves delivery failures; replaying them recovers them, delivers no event
twice, and leaves permanent failures alone unless asked."""
import collections
import datetime
import gzip
import json
import os
import threading
import time

import apache_beam as beam
import pytest
import requests

from pipeline import backfill, replay
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from pipeline.options import UsageError
from transforms.core.records import (NO_STAMP, Stamp, contact_key, contact_upsert, derived_key,
                                     event_send, failure_record, idempotency_key_for)
from transforms.core.sinks import WriteFailures, read_failure_records

API_KEY = 'replay-test-key'
REQUEST = event_send({'eventName': 'Signed Up', 'userId': 'u1'}, 'user:u1', Stamp(1, 0, 'm1'),
                     'm1', 'segment-abc')
UPSERT = contact_upsert({'userId': 'u1', 'plan': 'pro'}, 'user:u1', NO_STAMP, 'm0')
FAILED_AT = 1_700_000_000_123


# Requests Loops must refuse (400), whatever the faults: upserts of users
# with no email (a new contact needs one) and events of users Loops can't
# find by the userId alone.
GHOSTS = [{'type': 'identify', 'messageId': f'ghost-id-{n}', 'userId': f'ghost-{n}',
           'timestamp': '2026-11-01T08:00:00Z', 'traits': {'plan': 'pro', 'n': n}}
          for n in range(4)] + [
          {'type': 'track', 'messageId': f'ghost-tr-{n}', 'userId': f'lost-{n}',
           'event': 'Clicked', 'timestamp': '2026-11-01T08:00:00Z', 'properties': {'n': n}}
          for n in range(4)]


@pytest.fixture
def faulty_backfill(tmp_path):
    """A backfill with one attempt per request against a sandbox that fails a
    third of them (half of those after storing the change): many
    retries_exhausted failures, some of them delivered all the same, and
    requests Loops refuses for good. -> (sandbox, Expected, backfill summary,
    the Loops options, tmp_path)."""
    from tests.test_faults import Expected
    manifest = write_archive(str(tmp_path / 'archive'), users=12, days=2, seed=41)
    day_folder = os.path.dirname(manifest.files[0])
    with gzip.open(os.path.join(day_folder, 'ghosts.json.gz'), 'wt') as f:
        f.write(''.join(json.dumps(event) + '\n' for event in GHOSTS))
    key_file = tmp_path / 'key'
    key_file.write_text(API_KEY)
    with LoopsSandbox(API_KEY, rate_limit=60, latency=(0.002, 0.01), seed=3) as sandbox:
        loops_args = ['--loops_base_url', sandbox.base_url, '--loops_api_key_file',
                      str(key_file), '--rate_limit', '60']
        faults_once_sending(sandbox, fail_before=0.15, fail_after=0.15, drop_after=0.05)
        summary = backfill.run([
            '--input', os.path.join(manifest.root, 'segment-logs', '*', '*', '*'),
            '--types', 'identify,track', '--max_event_age', 'none',
            '--dead_letter', str(tmp_path / 'dead-letter') + '/',
            '--max_attempts', '1', *loops_args], out=open(os.devnull, 'w'))
        sandbox.configure(fail_before=0, fail_after=0, drop_after=0)
        yield sandbox, Expected(manifest.events + GHOSTS), summary, loops_args, tmp_path


def faults_once_sending(sandbox, **faults) -> None:
    """Turns the faults on when the next job sends its first request, after
    its preflight reads (which, with one attempt, a fault would end)."""
    seen = len(sandbox.state()['requests'])

    def wait_then_configure():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                r['method'] != 'GET' for r in sandbox.state()['requests'][seen:]):
            time.sleep(0.005)
        sandbox.configure(**faults)
    threading.Thread(target=wait_then_configure, daemon=True).start()


def run_replay(tmp_path, loops_args, dead_letter, new_dead_letter, *extra):
    summary_path = tmp_path / f'{new_dead_letter}.json'
    summary = replay.run([
        '--dead_letter', str(tmp_path / dead_letter) + '/',
        '--replay_dead_letter', str(tmp_path / new_dead_letter) + '/',
        '--summary', str(summary_path), *loops_args, *extra], out=open(os.devnull, 'w'))
    assert json.load(open(summary_path)) == summary
    return summary, read_failure_records(str(tmp_path / new_dead_letter) + '/')


def reasons(records):
    return collections.Counter((r['stage'], r['reason']) for r in records)


def first_failures(tmp_path) -> tuple:
    """The backfill's failure records: (all, retries_exhausted, refused by Loops)."""
    records = read_failure_records(str(tmp_path / 'dead-letter') + '/')
    exhausted = [r for r in records if r['reason'] == 'retries_exhausted']
    refused = [r for r in records if r['stage'] == 'deliver' and r['reason'] != 'retries_exhausted']
    return records, exhausted, refused


def assert_loops_holds(expected, state, deliver_failures, rekeyed=None) -> None:
    """The fault tests' oracle (imported when used: it needs the stream job too)."""
    from tests.test_faults import assert_loops_holds as holds
    holds(expected, state, deliver_failures, rekeyed)


def test_replay_recovers_what_ran_out_of_retries_and_delivers_nothing_twice(faulty_backfill):
    sandbox, expected, backfill_summary, loops_args, tmp_path = faulty_backfill
    first, exhausted, refused = first_failures(tmp_path)
    assert len(exhausted) >= 10
    assert backfill_summary['delivery_failed'] == len(exhausted) + len(refused)
    keys_before = {e['idempotency_key'] for e in sandbox.state()['events']}

    summary, again = run_replay(tmp_path, loops_args, 'dead-letter', 'replay-1')

    assert (summary['read'], summary['skipped'], summary['replayed']) == (
        len(first), len(first) - len(exhausted), len(exhausted))
    # What fails again is what Loops refuses whatever the faults (it ran out
    # of retries the first time): a 400, in the new dead letter.
    assert summary['delivery_failed'] == len(again)
    assert summary['recovered'] == summary['replayed'] - len(again)
    assert len(refused) + len(again) == (len(expected.unsendable_upserts)
                                         + len(expected.unsendable_events))
    skipped = {key[len('replay/skipped_'):]: n for key, n in summary.items()
               if key.startswith('replay/skipped_')}
    assert skipped == {f'{stage}_{reason}': n for (stage, reason), n in reasons(
        r for r in first if r['reason'] != 'retries_exhausted').items()}
    # Loops now holds exactly what the archive says, and the only failures
    # left are the requests it refuses, each with its reason.
    state = sandbox.state()
    assert_loops_holds(expected, state, refused + again)
    # Events whose first answer was lost had reached Loops: replayed with the
    # same Idempotency-Key, they were answered 409 and not stored again.
    replayed_keys = {json.loads(r['request'])['headers']['Idempotency-Key']
                     for r in exhausted if '/v1/events/send' in r['request']}
    assert replayed_keys & keys_before
    refused_keys = {json.loads(r['request'])['headers'].get('Idempotency-Key') for r in again}
    assert len(state['events']) == len(keys_before | (replayed_keys - refused_keys))


def rekeyed_events(records) -> dict:
    """The keys a replay sends refused events under -> their own keys."""
    return {replay.request_of(record).idempotency_key:
            json.loads(record['request'])['headers']['Idempotency-Key']
            for record in records if '/v1/events/send' in record['request']}


def fix_in_loops(sandbox, expected) -> None:
    """What a user does about the refusals: give those users an email in Loops."""
    contacts = expected.unsendable_upserts | {contact_key(expected.sends[key]['userId'], None)
                                              for key in expected.unsendable_events}
    for contact in contacts:
        user = contact[len('user:'):]
        email = f'{user}@fixed.example.com'
        response = requests.put(sandbox.base_url + '/v1/contacts/update',
                                json={'userId': user, 'email': email},
                                headers={'Authorization': f'Bearer {API_KEY}'}, timeout=5)
        assert response.status_code == 200
        expected.contacts[contact] = {**expected.contacts.get(contact, {'userId': user}),
                                      'email': email}


def test_permanent_failures_are_replayed_only_when_asked(faulty_backfill):
    sandbox, expected, _, loops_args, tmp_path = faulty_backfill
    _, exhausted, refused = first_failures(tmp_path)
    assert refused
    fix_in_loops(sandbox, expected)

    without, _ = run_replay(tmp_path, loops_args, 'dead-letter', 'replay-1')
    assert without['replay/skipped_deliver_http_400'] == len(refused)
    assert without['replayed'] == without['recovered'] == len(exhausted)

    included, again = run_replay(tmp_path, loops_args, 'dead-letter', 'replay-2',
                                 '--include_permanent')
    assert 'replay/skipped_deliver_http_400' not in included
    assert included['replayed'] == included['recovered'] == len(exhausted) + len(refused)
    assert again == []
    # Two replays of the same records: still every event once (a refused one
    # under its derived key), every contact as the merged identify calls say.
    assert_loops_holds(expected, sandbox.state(), [], rekeyed=rekeyed_events(refused))


def test_a_refusal_that_is_not_fixed_fails_again_into_the_new_dead_letter(faulty_backfill):
    sandbox, expected, _, loops_args, tmp_path = faulty_backfill
    _, exhausted, refused = first_failures(tmp_path)

    summary, again = run_replay(tmp_path, loops_args, 'dead-letter', 'replay-1',
                                '--include_permanent')

    assert summary['replayed'] == len(exhausted) + len(refused)
    assert summary['delivery_failed'] == len(again) == (len(expected.unsendable_upserts)
                                                        + len(expected.unsendable_events))
    assert_loops_holds(expected, sandbox.state(), again)


@pytest.mark.parametrize('record, include_permanent, reason', [
    (failure_record('parse', 'invalid_json', 'm', event='{'), True, 'parse_invalid_json'),
    (failure_record('map', 'missing_user_id', 'm', event='{}'), True, 'map_missing_user_id'),
    (failure_record('deliver', 'retries_exhausted', 'm', request=REQUEST), False, None),
    (failure_record('deliver', 'key_rejected', 'm', request=REQUEST), False, None),
    (failure_record('deliver', 'http_400', 'm', request=REQUEST), False, 'deliver_http_400'),
    (failure_record('deliver', 'http_400', 'm', request=REQUEST), True, None),
    (failure_record('deliver', 'http_413', 'm', request=REQUEST), True, None),
    (failure_record('deliver', 'retries_exhausted', 'm'), False, 'deliver_no_request'),
    ({**failure_record('deliver', 'retries_exhausted', 'm'), 'request': '{"body": 1'}, False,
     'deliver_invalid_request'),
    ({**failure_record('deliver', 'retries_exhausted', 'm'), 'request': '{"path": "/x"}'}, False,
     'deliver_invalid_request'),
    ({**failure_record('deliver', 'retries_exhausted', 'm'), 'request': '[1, 2]'}, False,
     'deliver_invalid_request'),
    ({**failure_record('deliver', 'retries_exhausted', 'm'),
      'request': json.dumps({**REQUEST.to_dict(), 'method': 'DELETE'})}, False,
     'deliver_foreign_request'),
    ({**failure_record('deliver', 'retries_exhausted', 'm'),
      'request': json.dumps({**REQUEST.to_dict(), 'path': '/v1/contacts/create'})}, False,
     'deliver_foreign_request'),
    ({**failure_record('deliver', 'retries_exhausted', 'm'),
      'request': json.dumps({**REQUEST.to_dict(), 'path': '/v1/contacts/delete',
                             'body': {'userId': 'u1'}})}, True, 'deliver_deletion'),
    ({'name': 'not a failure record'}, True, 'not_a_failure_record'),
])
def test_which_records_are_replayed(record, include_permanent, reason):
    request, skipped = replay.replayable(record, include_permanent)
    assert skipped == reason
    assert (request is None) == (reason is not None)
    if request is not None:
        assert request.body == REQUEST.body and request.kind == REQUEST.kind


@pytest.mark.parametrize('request_, reason, key', [
    # Ambiguous or never processed: the same key, so nothing is delivered twice.
    (REQUEST, 'retries_exhausted', 'segment-abc'),
    (REQUEST, 'key_rejected', 'segment-abc'),
    # Refused: Loops may have spent the key; a new one, the same for the same record.
    (REQUEST, 'http_400', derived_key('segment-abc', str(FAILED_AT))),
    (REQUEST, 'http_413', derived_key('segment-abc', str(FAILED_AT))),
    (UPSERT, 'http_400', None),
])
def test_the_key_a_replay_sends(request_, reason, key):
    record = failure_record('deliver', reason, 'm', request=request_, failed_at_ms=FAILED_AT)
    request = replay.request_of(record)
    assert request.idempotency_key == key
    assert request.headers == request_.spec.headers(key)
    assert request.body == request_.body and request.stamp == Stamp(FAILED_AT, 0, '')


def test_headers_and_paths_come_from_the_kind_not_the_record():
    edited = {**REQUEST.to_dict(), 'headers': {'Idempotency-Key': 'segment-abc',
                                               'Authorization': 'Bearer stolen',
                                               'X-Forwarded-Host': 'evil.example.com'}}
    record = {**failure_record('deliver', 'retries_exhausted', 'm'),
              'request': json.dumps(edited)}
    request = replay.request_of(record)
    assert request.headers == {'Content-Type': 'application/json',
                               'Idempotency-Key': 'segment-abc'}
    assert (request.method, request.path) == ('POST', '/v1/events/send')


def write_dead_letter(records: list, prefix: str) -> None:
    with beam.Pipeline(runner='FnApiRunner') as p:
        p | beam.Create(records) | WriteFailures(prefix)


def test_an_edited_record_cannot_make_the_replay_delete_a_contact(tmp_path):
    victim = contact_upsert({'userId': 'victim', 'email': 'victim@example.com'}, 'user:victim',
                            NO_STAMP, 'm9')
    delete = {'method': 'POST', 'path': '/v1/contacts/delete', 'headers': {},
              'body': {'email': 'victim@example.com'}}
    honest = event_send({'eventName': 'Paid', 'email': 'victim@example.com'},
                        'email:victim@example.com', NO_STAMP, 'm10', idempotency_key_for('m10'))
    write_dead_letter([
        {**failure_record('deliver', 'retries_exhausted', 'm', request=victim),
         'request': json.dumps(delete)},
        failure_record('deliver', 'retries_exhausted', 'm', request=honest)],
        str(tmp_path / 'edited') + '/')
    key_file = tmp_path / 'key'
    key_file.write_text(API_KEY)
    with LoopsSandbox(API_KEY, rate_limit=None) as sandbox:
        requests.put(sandbox.base_url + '/v1/contacts/update', timeout=5,
                     json={'userId': 'victim', 'email': 'victim@example.com'},
                     headers={'Authorization': f'Bearer {API_KEY}'}).raise_for_status()
        summary, again = run_replay(tmp_path, ['--loops_base_url', sandbox.base_url,
                                               '--loops_api_key_file', str(key_file)],
                                    'edited', 'replay-1')
        state = sandbox.state()
    assert summary['replay/skipped_deliver_deletion'] == 1
    assert (summary['read'], summary['replayed'], summary['recovered']) == (2, 1, 1)
    assert again == []
    assert not [r for r in state['requests'] if r['path'] != '/v1/contacts/update'
                and r['path'] != '/v1/events/send' and r['method'] != 'GET']
    assert [c['email'] for c in state['contacts']] == ['victim@example.com']
    assert [e['eventName'] for e in state['events']] == ['Paid']


def test_a_replayed_request_is_exactly_the_one_that_failed():
    record = failure_record('deliver', 'retries_exhausted', 'm', request=REQUEST,
                            source='m1', failed_at_ms=1_700_000_000_123)
    # As an Avro reader gives the timestamp-millis field back.
    record['failed_at'] = datetime.datetime(2023, 11, 14, 22, 13, 20, 123000,
                                            tzinfo=datetime.timezone.utc)

    request = replay.request_of(record)

    assert request.to_dict() == REQUEST.to_dict()
    assert request.idempotency_key == 'segment-abc'
    assert (request.contact, request.source) == ('user:u1', 'm1')
    assert request.stamp == Stamp(1_700_000_000_123, 0, '')


def test_an_events_fallback_email_is_in_its_record_and_replayed_with_it():
    event = event_send({'eventName': 'Signed Up', 'userId': 'u1', 'email': 'u1@example.com'},
                       'user:u1', Stamp(1, 0, 'm1'), 'm1', 'segment-abc')
    record = failure_record('deliver', 'http_400', 'm', request=event, failed_at_ms=FAILED_AT)
    assert json.loads(record['request']) == {
        'method': 'POST', 'path': '/v1/events/send', 'headers': event.headers,
        'body': {'eventName': 'Signed Up', 'userId': 'u1'}, 'fallback_email': 'u1@example.com'}
    request = replay.request_of(record)
    assert (request.body, request.fallback_email) == (event.body, 'u1@example.com')


@pytest.mark.parametrize('edited', [
    {'fallback_email': 42},
    {'fallback_email': ''},
    {'body': {'eventName': 'Signed Up', 'userId': 'u1', 'email': 'u1@example.com'}},
    {'body': {'eventName': 'Signed Up', 'email': 'u1@example.com'}},
    {'method': 'PUT', 'path': '/v1/contacts/update', 'headers': {}},
])
def test_a_fallback_email_only_rides_with_an_event_by_user_id(edited):
    as_sent = {**REQUEST.to_dict(), 'fallback_email': 'u1@example.com', **edited}
    record = {**failure_record('deliver', 'retries_exhausted', 'm'),
              'request': json.dumps(as_sent)}
    assert replay.replayable(record, False) == (None, 'deliver_invalid_request')


@pytest.mark.parametrize('value, pattern', [
    ('dead-letter/', 'dead-letter/failures*.avro'),
    ('gs://bucket/runs/7/failures', 'gs://bucket/runs/7/failures*.avro'),
    ('dl/failures-*-of-*.avro', 'dl/failures-*-of-*.avro'),
    ('dl/failures-00000-of-00001.avro', 'dl/failures-00000-of-00001.avro'),
])
def test_dead_letter_values_become_file_patterns(value, pattern):
    assert replay.failure_pattern(value) == pattern


@pytest.mark.parametrize('argv, message', [
    ([], '--dead_letter is required'),
    (['--dead_letter', '/nonexistent/dl/'], 'no failure files match'),
    (['--dead_letter', 'dl/', '--replay_dead_letter', 'dl/'], 'would match --dead_letter'),
    (['--dead_letter', 'dl/*.avro', '--replay_dead_letter', 'dl/again'],
     'would match --dead_letter'),
    (['--dead_letter', 'dl/', '--runner', 'DataflowRunner'], 'gs://'),
    (['--dead_letter', 'gs://b/dl/', '--replay_dead_letter', 'gs://b/again/',
      '--runner', 'DataflowRunner'], '--loops_api_key_secret'),
])
def test_bad_requests_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        replay.run(argv + ['--loops_base_url', 'http://127.0.0.1:9/api'],
                   out=open(os.devnull, 'w'))
