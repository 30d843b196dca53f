"""Keeping email addresses out of log lines.

Logs end up in terminals, CI output and log services that more people can
read than the customer data itself, so every address in a log line is masked
to its first character and its domain: `jane@example.com` -> `j***@example.com`.
The domain stays, because "every address at one domain fails" is what a
person reading the log needs to see. Failure records are not logs: they keep
the data, since fixing it is their purpose.
"""
import logging
import re

# Deliberately broad: an address is a run of non-separator characters, an @,
# and a dotted domain. Masking a few things that are not addresses is
# harmless, missing a real address is not. `%40` is an @ in a URL (a query
# such as /v1/contacts/find?email=... in an HTTP library's debug line).
SEPARATORS = frozenset(' \t\r\n\f\v@<>()[]{},;:"\'`/\\|=&?#')
_LABEL = r"""[^\s@<>()\[\]{},;:"'`/\\|=&?#.%]+"""
# Found from the @ outwards (the local part is walked back in Python), so the
# cost stays linear in the text even for a huge line with one @ at its end.
_AT_AND_DOMAIN = re.compile(rf'(@|%40)((?:{_LABEL}\.)+{_LABEL})')
MASK = '***'


def mask_emails(text: str) -> str:
    """`text` with every email address masked to its first character and
    domain ('j***@example.com'); anything else is left as it is."""
    if '@' not in text and '%40' not in text:
        return text
    pieces = []
    done = 0
    for match in _AT_AND_DOMAIN.finditer(text):
        local_start = at = match.start()
        while local_start > done and text[local_start - 1] not in SEPARATORS:
            local_start -= 1
        if local_start == at:
            continue  # an @ with nothing before it is not an address
        pieces += [text[done:local_start], text[local_start], MASK, match.group(0)]
        done = match.end()
    pieces.append(text[done:])
    return ''.join(pieces)


class MaskEmails(logging.Filter):
    """A logging filter that masks email addresses in every record it sees.

    The message is formatted with its args first (an address may be in
    either), masked, and stored back as a message without args; a formatted
    exception or stack is masked too. Install it on handlers, so that records
    of every logger that reach them are masked. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call (args that don't fit): still shown, masked
            message = f'{record.msg} (arguments that do not fit it: {record.args!r})'
        record.msg = mask_emails(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_emails(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_emails(record.stack_info)
        return True
