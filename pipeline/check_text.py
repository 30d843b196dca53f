"""`check`'s report (pipeline/check_report.py) as text for a person.

What a backfill would hold back by default and what would be lost come
last, where a reader looks for the verdict.
"""
import json

from pipeline import summary as run_summary
from pipeline.check_report import (COERCED, COLON_IN_EVENT_NAME, EXAMPLE_CHARS, MISSING,
                                   NOT_SETTABLE_STATUS, TYPE_CONFLICT)
from transforms.core.text import format_duration

TOP_TRACK_NAMES = 20


def format_report(report: dict) -> str:
    """The report as text for a person."""
    lines = _read(report)
    for section in (_events, _requests, _contacts, _properties, _mailing_lists,
                    _adjustments_and_failures, _refused, _held_back):
        lines += section(report)
    lines.append('')
    if report['findings']:
        lines.append(f'Data would be lost ({len(report["findings"])} findings):')
        lines += [f'  - {finding["message"]}' for finding in report['findings']]
    else:
        lines.append('No data would be lost to the Loops account.')
    return '\n'.join(lines)


def _read(report: dict) -> list:
    source, account = report['input'], report['account']
    read = f'{source["lines"]:,} lines from {source["files_read"]:,} of {source["files"]:,} files'
    if not source['complete']:
        read += f' (--sample {source["sample"]:,}: the figures cover these lines only)'
    lines = [f'Read {read}.',
             f'Loops account: {account["team"]} ({account["custom_properties"]} custom '
             f'properties, mailing lists: {", ".join(account["mailing_lists"]) or "none"}).']
    lines += [f'Unreadable: {item["path"]}: {item["message"]}'
              for item in source['unreadable_files']]
    return lines


def _events(report: dict) -> list:
    events = report['events']
    selected = set(events['selected_types'])
    lines = ['', 'Events by type']
    lines += _table([(kind, f'{n:,}', '' if kind in selected else 'not selected')
                     for kind, n in events['by_type'].items()])
    names = list(events['track_by_name'].items())
    if names:
        lines += ['', 'Track events by name']
        lines += _table([(name, f'{n:,}') for name, n in names[:TOP_TRACK_NAMES]])
        if len(names) > TOP_TRACK_NAMES:
            lines.append(f'  ... and {len(names) - TOP_TRACK_NAMES:,} more names')
    return lines


def _requests(report: dict) -> list:
    summary, requests = report['summary'], report['requests']
    return ['', 'A backfill would send'] + _table([
        ('contact upserts', f'{requests["contact_upserts"]:,}',
         f'(one per contact; {summary["merged"]:,} updates merged into them)'),
        ('event sends', f'{requests["event_sends"]:,}',
         f'({summary["duplicates"]:,} repeats dropped)'),
        ('requests', f'{requests["total"]:,}',
         f'about {format_duration(requests["estimated_seconds"])} at '
         f'{requests["rate_limit"]:g} requests/s')])


def _contacts(report: dict) -> list:
    contacts = report['contacts']
    rows = [('leads created (email-only contacts)', f'{contacts["leads_created"]:,}'),
            ('leads merged into their userId contact', f'{contacts["leads_merged"]:,}'),
            ('unsubscribed (subscribed: false sent)', f'{contacts["unsubscribes"]:,}')]
    if contacts['ambiguous_leads']:
        rows.append(('leads whose email two userIds have (not merged)',
                     f'{contacts["ambiguous_leads"]:,}'))
    if contacts['resubscribes_sent']:
        rows.append(('re-subscribed (subscribed: true sent, --resubscribe)',
                     f'{contacts["resubscribes_sent"]:,}'))
    return ['', 'Contacts'] + _table(rows)


def _properties(report: dict) -> list:
    if not report['properties']:
        return []
    return ['', 'Contact properties'] + _table(
        [('property', 'count', 'inferred', 'in Loops', 'status', 'example')]
        + [(key, f'{item["count"]:,}', item['inferred_type'], item['account_type'] or '-',
            _status_text(item), _short(json.dumps(item['example'], ensure_ascii=False)))
           for key, item in report['properties'].items()])


def _mailing_lists(report: dict) -> list:
    if not report['mailing_lists']:
        return []
    return ['', 'Mailing lists'] + _table(
        [(list_id, f'{item["count"]:,}', 'ok' if item['exists'] else 'NOT IN THE ACCOUNT')
         for list_id, item in report['mailing_lists'].items()])


def _adjustments_and_failures(report: dict) -> list:
    lines = []
    if report['adjustments']:
        lines += ['', 'Values reshaped']
        lines += _table([(name, f'{n:,}') for name, n in report['adjustments'].items()])
    if report['failures']:
        lines += ['', 'Failures by step and reason (whole events or files, not sent)']
        lines += _table([(name, f'{n:,}') for name, n in report['failures'].items()])
    return lines


def _refused(report: dict) -> list:
    refused = report['refused']
    rows = [(f'mailing list {list_id!r}', f'{n:,}', 'parts: not in the account')
            for list_id, n in refused['unknown_mailing_list'].items()]
    rows += [(f'property {key!r}', f'{n:,}', 'parts: values its Loops type cannot hold')
             for key, n in refused['type_mismatch'].items()]
    rows += [(f'property {key!r}', f'{n:,}',
              'parts: not in the account (--unknown_properties fail)')
             for key, n in refused['unknown_property'].items()]
    rows += [(f'field {key!r}', f'{n:,}', 'parts: Loops cannot set it through its API')
             for key, n in refused['not_settable'].items()]
    if refused['invalid_property_name']:
        rows.append(('property names Loops cannot hold', f'{refused["invalid_property_name"]:,}',
                     'parts: dropped when mapped'))
    if refused['invalid_email']:
        rows.append(('invalid emails', f'{refused["invalid_email"]:,}',
                     'parts: the rest is sent by the userId'))
    rows += [(f'event {name!r}', f'{n:,}', 'whole events: a colon in the name '
              '(set colon_replacement in the mapping)')
             for name, n in refused[COLON_IN_EVENT_NAME].items()]
    if not rows:
        return []
    return ['', 'Left out (a part costs only itself: the rest of its request is sent)'] + _table(
        rows)


def _held_back(report: dict) -> list:
    note = run_summary.held_back_note(report['summary'],
                                      report['held_back']['old_events']['max_event_age'])
    if not note:
        return []
    return (['', 'HELD BACK by default (not lost, not sent: the option sends it)']
            + [f'  {line}' for line in note.splitlines()])


def _status_text(item: dict) -> str:
    if item['status'] == TYPE_CONFLICT:
        return f'TYPE CONFLICT ({item["type_conflicts"]:,})'
    if item['status'] == MISSING:
        return 'NOT IN THE ACCOUNT'
    if item['status'] == NOT_SETTABLE_STATUS:
        return 'NOT SETTABLE'
    if item['status'] == COERCED:
        return f'coerced ({item["coerced"]:,})'
    return item['status'].replace('_', '-')


def _short(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS // 2 else text[:EXAMPLE_CHARS // 2 - 3] + '...'


def _table(rows: list) -> list:
    widths = [max(len(row[i]) for row in rows if i < len(row))
              for i in range(max(len(row) for row in rows))]
    return ['  ' + '  '.join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
            for row in rows]
