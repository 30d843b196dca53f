"""Whether Segment would have given a call to Loops, by the call's `integrations` object.

A call's `integrations` maps destination names to true/false (or to an
object of options for that destination); `"All": false` turns off every
destination the object does not turn on by name. Names are case
sensitive (Segment's docs, guides/filtering-data.md). Segment's archives
keep every call whatever its integrations say, so a reader of archives has
to apply them itself.

The destination's name is "Loops (Actions)" (segmentio/action-destinations,
destinations/loops/index.ts); "Loops", its name before a rename on the day
it was created, is honoured too, as Segment honours an Actions
destination's creation name beside its current one. The rule is the one
analytics.js applies to Actions destinations (segmentio/analytics-next,
packages/browser/src/plugins/remote-loader/index.ts, isPluginDisabled),
with JavaScript's truthiness:
  - either name set to false turns the call off for Loops;
  - else "All": false turns it off unless either name is truthy (true, an
    object of options, a non-empty text, a non-zero number).
Anything that is not an object (absent, null, the array of a deletion
message) selects no destination and turns nothing off.
"""
from typing import Any

from transforms.core.javascript import is_truthy

LOOPS_NAMES = ('Loops (Actions)', 'Loops')


def gives_to_loops(integrations: Any) -> bool:
    """Whether a call with this `integrations` value reaches the Loops destination."""
    if not integrations or type(integrations) is not dict:
        return True
    named = [integrations[name] for name in LOOPS_NAMES if name in integrations]
    if any(value is False for value in named):
        return False
    if integrations.get('All') is False:
        return any(is_truthy(value) for value in named)
    return True
