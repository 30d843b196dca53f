"""The first load by CSV (--contacts_csv): files Loops' audience import
takes, as few as --csv_rows allows, that leave the account as the upserts
would have, and a sync state that, once the import is confirmed, makes the
next run send only what the files could not carry (and before that, sends
the contacts as usual)."""
import collections
import csv
import dataclasses
import glob
import io
import json
import math
import os

import pytest

from pipeline import backfill, state_commands
from pipeline.local.samples import write_archive
from pipeline.local.sandbox import LoopsSandbox
from pipeline.options import UsageError
from pipeline.summary import unaccounted
from transforms.contacts.merge import upsert_from_state
from transforms.contacts.model import state_of
from transforms.core.records import Stamp
from transforms.state.contacts_csv import csv_cell, csv_text, in_a_cell, split_upsert

KEY = 'contacts-csv-test-key'


def upsert(body):
    return upsert_from_state('user:u1', state_of(body, Stamp(1, 1, 'm1')), False,
                             collections.Counter())


@pytest.mark.parametrize('key, value, cell', [
    ('plan', 'pro', 'pro'), ('seats', 3, '3'), ('score', 2.5, '2.5'), ('beta', True, 'true'),
    ('beta', False, 'false'), ('phone', None, 'null'), ('subscribed', False, 'false'),
    ('subscribed', True, None), ('plan', 'null', None), ('plan', '', None),
    ('plan', ' padded', None), ('email', None, None)])
def test_a_cell_sets_the_value_or_none_can(key, value, cell):
    assert csv_cell(key, value) == cell


def test_what_no_cell_can_carry_is_left_for_the_api_with_the_contacts_ids():
    request = upsert({'userId': 'u1', 'email': 'a@x.io', 'plan': 'pro', 'address_city': 'Oslo',
                      'mailingLists': {'list_news': True}, 'nick': 'null'})
    row, rest = split_upsert(request)
    assert row == {'userId': 'u1', 'email': 'a@x.io', 'plan': 'pro'}
    assert rest == {'userId': 'u1', 'email': 'a@x.io', 'address_city': 'Oslo',
                    'mailingLists': {'list_news': True}, 'nick': 'null'}
    assert split_upsert(upsert({'userId': 'u1', 'plan': 'pro'}))[1] is None


def test_a_file_has_loops_columns_first_then_the_properties_its_rows_use():
    text = csv_text([{'userId': 'u1', 'plan': 'pro', 'email': 'a@x.io'},
                     {'email': 'b@x.io', 'seats': 2, 'subscribed': False, 'firstName': 'B, Jr'}])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [['Email', 'First Name', 'User ID', 'Subscribed', 'plan', 'seats'],
                    ['a@x.io', '', 'u1', '', 'pro', ''],
                    ['b@x.io', 'B, Jr', '', 'false', '', '2']]


def property_type(values) -> str:
    if all(isinstance(v, bool) for v in values):
        return 'boolean'
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return 'number'
    return 'string'


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp('archive')), users=40, days=2, seed=51)


@pytest.fixture(scope='module')
def custom_properties(archive, tmp_path_factory):
    """The account's custom properties: every camelCase property the archive
    has, typed by its values (what `check` tells the owner to create)."""
    out = tmp_path_factory.mktemp('dry')
    backfill.run(['--input', glob_of(archive), '--dry_run', str(out) + '/',
                  '--dead_letter', str(out / 'dl') + '/'], out=io.StringIO())
    values = collections.defaultdict(list)
    for path in glob.glob(str(out / '*.jsonl')):
        for line in open(path, encoding='utf-8'):
            for key, value in json.loads(line)['body'].items():
                values[key].append(value)
    defaults = {'email', 'firstName', 'lastName', 'userGroup', 'source', 'userId', 'subscribed',
                'mailingLists'}
    return [{'key': key, 'label': key, 'type': property_type([v for v in found if v is not None])}
            for key, found in values.items()
            if key not in defaults and key.isascii() and key.isalnum() and key[0].islower()]


def glob_of(archive) -> str:
    return os.path.join(archive.root, 'segment-logs', '*', '*', '*.gz')


def backfill_argv(loops, tmp_path, archive, *extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    key_file = tmp_path / 'key'
    key_file.write_text(KEY)
    return ['--input', glob_of(archive), '--types', 'identify,track', '--max_event_age', 'none',
            '--unknown_properties', 'drop', '--loops_base_url', loops.base_url,
            '--loops_api_key_file', str(key_file), '--rate_limit', '1000',
            '--dead_letter', str(tmp_path / 'dl') + '/', *extra]


def account(loops) -> tuple:
    state = loops.state()
    contacts = sorted(json.dumps({k: v for k, v in c.items() if k != 'id'}, sort_keys=True)
                      for c in state['contacts'])
    events = sorted(json.dumps({k: v for k, v in e.items()
                                if k not in ('contact_id', 'received_at')}, sort_keys=True)
                    for e in state['events'])
    return contacts, events


def differences(expected: list, got: list) -> dict:
    """{contact: {property: expected value}} where `got` differs."""
    def by_contact(contacts):
        return {c['userId'] or c['email'].lower(): c for c in map(json.loads, contacts)}
    expected, got = by_contact(expected), by_contact(got)
    assert set(expected) == set(got)
    return {contact: {key: value for key, value in wanted.items()
                      if got[contact].get(key) != value}
            for contact, wanted in expected.items() if got[contact] != wanted}


def test_a_csv_first_load_then_one_run_leaves_loops_as_upserts_would(
        archive, custom_properties, tmp_path):
    with LoopsSandbox(api_key=KEY, rate_limit=None,
                      custom_properties=custom_properties) as loops:
        backfill.run(backfill_argv(loops, tmp_path / 'plain', archive), out=io.StringIO())
        expected = account(loops)

    state, csv_prefix = str(tmp_path / 'state'), str(tmp_path / 'csv') + '/'
    with LoopsSandbox(api_key=KEY, rate_limit=None,
                      custom_properties=custom_properties) as loops:
        out = io.StringIO()
        load = backfill.run(backfill_argv(loops, tmp_path, archive, '--state', state,
                                          '--contacts_csv', csv_prefix, '--csv_rows', '15'),
                            out=out)
        assert [r for r in loops.state()['requests'] if r['method'] != 'GET'] == []
        files = sorted(glob.glob(csv_prefix + '*.csv'))
        imported = [loops.import_csv(open(path, encoding='utf-8').read()) for path in files]
        # Only what no cell can carry is missing: mailing lists, text the import would trim.
        missing = differences(expected[0], account(loops)[0])
        assert missing and all(key == 'mailingLists' or not in_a_cell(key, value)
                               for values in missing.values() for key, value in values.items())
        confirmed = io.StringIO()
        assert state_commands.confirm_import(['--state', state], out=confirmed) == 0

        after = backfill.run(backfill_argv(loops, tmp_path, archive, '--state', state),
                             out=io.StringIO())
        assert account(loops) == expected

    assert unaccounted(load) == 0 and unaccounted(after) == 0
    assert len(files) == load['csv_files'] == math.ceil(load['csv_rows'] / 15) >= 3
    assert all(len(open(p, encoding='utf-8').read().splitlines()) <= 16 for p in files)
    assert load['csv_rows'] == load['contacts'] == sum(i['created'] + i['updated'] +
                                                      len(i['errors']) for i in imported)
    # Only contacts no Loops import can create (no email) are refused, as the API refuses them.
    assert all(e['message'] == 'An email is required to create a contact.'
               for i in imported for e in i['errors'])
    # The next run sends what the files could not carry (mailing lists) and the events.
    assert after['contacts'] == load['csv_left_for_api'] > 0
    assert after['contacts_unchanged'] == load['contacts'] - load['csv_left_for_api']
    assert after['events'] == load['events'] > 0
    text = out.getvalue()
    assert 'Next:' in text and 'without --contacts_csv' in text and csv_prefix in text
    assert f'segment-loops state confirm-import --state {state}' in text
    assert 'Confirmed the CSV load of run' in confirmed.getvalue()


def test_a_run_before_the_import_is_confirmed_sends_the_contacts_as_usual(
        archive, custom_properties, tmp_path):
    state, csv_prefix = str(tmp_path / 'state'), str(tmp_path / 'csv') + '/'
    with LoopsSandbox(api_key=KEY, rate_limit=None,
                      custom_properties=custom_properties) as loops:
        load = backfill.run(backfill_argv(loops, tmp_path, archive, '--state', state,
                                          '--contacts_csv', csv_prefix), out=io.StringIO())
        out = io.StringIO()
        before = backfill.run(backfill_argv(loops, tmp_path, archive, '--state', state),
                              out=out)
        # Forgetting the load (its files will not be imported) leaves the state as it was.
        discarded = io.StringIO()
        state_commands.confirm_import(['--state', state, '--discard'], out=discarded)
        again = backfill.run(backfill_argv(loops, tmp_path, archive, '--state', state),
                             out=io.StringIO())

    assert load['csv_files'] == 1 and load['csv_rows'] == load['contacts'] > 0
    assert before['contacts'] == load['contacts'] and before['contacts_unchanged'] == 0
    assert 'CSV loads not confirmed as imported' in out.getvalue()
    assert 'Forgot the CSV load of run' in discarded.getvalue()
    assert not os.path.exists(os.path.join(state, 'pending'))
    # Only what Loops refused is tried again: the contacts count as delivered.
    assert again['contacts'] <= before['delivery_failed']
    assert again['contacts_unchanged'] >= load['contacts'] - before['delivery_failed']


def test_contacts_csv_needs_a_state(archive, tmp_path):
    with pytest.raises(UsageError, match='--contacts_csv needs --state'):
        backfill.run(['--input', glob_of(archive), '--dry_run', str(tmp_path / 'out'),
                      '--contacts_csv', str(tmp_path / 'csv')], out=io.StringIO())


def test_every_upsert_field_is_a_row_or_left_for_the_api():
    request = upsert({'userId': 'u1', 'email': 'a@x.io', 'mailingLists': {'l': False},
                      'subscribed': True, 'n': 1})
    row, rest = split_upsert(dataclasses.replace(request, body=dict(request.body,
                                                                    subscribed=True)))
    assert set(row) | set(rest) == {'userId', 'email', 'mailingLists', 'subscribed', 'n'}
    assert 'subscribed' in rest and 'subscribed' not in row


def test_confirm_import_with_check_confirms_only_once_loops_has_the_files_contacts(
        archive, custom_properties, tmp_path):
    state, csv_prefix = str(tmp_path / 'state'), str(tmp_path / 'csv') + '/'
    with LoopsSandbox(api_key=KEY, rate_limit=None,
                      custom_properties=custom_properties) as loops:
        argv = backfill_argv(loops, tmp_path, archive)
        connection = argv[argv.index('--loops_base_url'):argv.index('--rate_limit') + 2]
        backfill.run(argv + ['--state', state, '--contacts_csv', csv_prefix, '--csv_rows', '15'],
                     out=io.StringIO())
        files = sorted(glob.glob(csv_prefix + '*.csv'))
        check = ['--state', state, '--check', '12', '--contacts_csv', csv_prefix, *connection]

        # All files but the last imported: the sample reaches the last, nothing is confirmed.
        for path in files[:-1]:
            loops.import_csv(open(path, encoding='utf-8').read())
        half = io.StringIO()
        half_status = state_commands.confirm_import(check, out=half)
        still_pending = os.path.exists(os.path.join(state, 'pending'))
        looked_up = len([r for r in loops.state()['requests']
                         if r['path'].startswith('/v1/contacts/find')])

        loops.import_csv(open(files[-1], encoding='utf-8').read())
        whole = io.StringIO()
        whole_status = state_commands.confirm_import(check, out=whole)

    assert len(files) >= 3
    assert half_status == state_commands.EXIT_NOT_IMPORTED and still_pending
    assert 'Not confirmed:' in half.getvalue() and os.path.basename(files[-1]) in half.getvalue()
    assert '@' not in half.getvalue()          # rows are named by file and line, not email
    assert 12 <= looked_up <= 24               # by User ID, else Email
    assert whole_status == 0
    assert 'Looked up 12 contacts of the' in whole.getvalue() and 'all found' in whole.getvalue()
    assert 'Confirmed the CSV load of run' in whole.getvalue()
    assert not os.path.exists(os.path.join(state, 'pending'))


@pytest.mark.parametrize('extra', [['--check', '5'], ['--check', '5', '--discard',
                                                        '--contacts_csv', 'x/']])
def test_confirm_import_check_needs_the_files_and_not_discard(tmp_path, extra):
    with pytest.raises(UsageError, match='--check N'):
        state_commands.confirm_import(['--state', str(tmp_path / 'state'), *extra],
                                      out=io.StringIO())
