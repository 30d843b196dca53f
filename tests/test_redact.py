"""Email addresses never reach a log line unmasked."""
import io
import logging
import subprocess
import sys

import pytest

from transforms.core.redact import MaskEmails, mask_emails


@pytest.mark.parametrize('text, masked', [
    ('jane@example.com', 'j***@example.com'),
    ('sent to jane.doe+tag@mail.example.co.uk, then', 'sent to j***@mail.example.co.uk, then'),
    ('<a@b.io>', '<a***@b.io>'),
    ('{"email": "Zoë.Müller@exämple.de"}', '{"email": "Z***@exämple.de"}'),
    ("'email': 'x1@y.org'", "'email': 'x***@y.org'"),
    ('two: a1@x.com b2@y.org', 'two: a***@x.com b***@y.org'),
    # As an HTTP library logs a query string.
    ('GET /api/v1/contacts/find?email=jane%40example.com HTTP/1.1',
     'GET /api/v1/contacts/find?email=j***%40example.com HTTP/1.1'),
    ('mailto:jane@example.com', 'mailto:j***@example.com'),
    # Not addresses: left alone.
    ('no address @ all', 'no address @ all'),
    ('user@localhost', 'user@localhost'),
    ('@example.com', '@example.com'),
    ('sent 1,200 requests', 'sent 1,200 requests'),
    ('', ''),
])
def test_mask_emails(text, masked):
    assert mask_emails(text) == masked


def test_masking_a_huge_line_stays_fast():
    line = 'x' * 2_000_000 + '@example.com ' + '@' * 100_000
    assert mask_emails(line) == 'x***@example.com ' + '@' * 100_000


def logged(*args, exc_info=None, stack_info=False) -> str:
    """What a handler with MaskEmails writes for logger.warning(*args)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(MaskEmails())
    logger = logging.getLogger('test_redact')
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(*args, exc_info=exc_info, stack_info=stack_info)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


@pytest.mark.parametrize('args, line', [
    (('contact %s updated', 'jane@example.com'), 'contact j***@example.com updated'),
    (('%s -> %s', 'a@b.co', 'c@d.co'), 'a***@b.co -> c***@d.co'),
    (('body %r', {'email': 'jane@example.com', 'n': 1}),
     "body {'email': 'j***@example.com', 'n': 1}"),
    (('%(who)s failed', {'who': 'jane@example.com'}), 'j***@example.com failed'),
    (('plain jane@example.com',), 'plain j***@example.com'),
    (('100%% of %d', 3), '100% of 3'),
])
def test_the_filter_masks_the_message_and_its_args(args, line):
    assert logged(*args) == line + '\n'


def test_the_filter_masks_exception_text():
    try:
        raise ValueError('bad address jane@example.com')
    except ValueError:
        text = logged('failed for %s', 'bob@example.com', exc_info=True)
    assert 'jane@' not in text and 'bob@' not in text
    assert 'failed for b***@example.com' in text
    assert 'ValueError: bad address j***@example.com' in text


def test_a_malformed_call_is_still_logged_and_masked():
    record = logging.LogRecord('x', logging.WARNING, __file__, 1, '%s and %s', ('a@b.co',), None)
    assert MaskEmails().filter(record) is True
    assert record.getMessage() == "%s and %s (arguments that do not fit it: ('a***@b.co',))"


def test_the_command_masks_emails_in_every_logger():
    code = ('import logging, sys; from pipeline.cli import configure_logging; '
            'configure_logging(); '
            'logging.getLogger("segment_loops.x").info("upserted %s", "jane@example.com"); '
            'logging.getLogger("urllib3").warning("url ?email=jane%40example.com"); '
            'logging.getLogger().error("root ann@example.org")')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'upserted j***@example.com' in result.stderr
    assert 'url ?email=j***%40example.com' in result.stderr
    assert 'root a***@example.org' in result.stderr
    assert 'jane@' not in result.stderr and 'ann@' not in result.stderr
