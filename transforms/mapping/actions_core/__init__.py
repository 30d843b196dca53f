"""Segment's actions-core, the part between a subscription's resolved mapping
and an action's `perform`: the action's fields, and the payload Segment
passes on or refuses (packages/core/src/destination-kit).

- payload.py: `ActionField`, `PayloadSchema.prepare` (removeEmptyValues, then
  AJV's validation with its coercion and ajv-human-errors' messages),
  `PayloadValidationError`;
- formats.py: the `email`, `date-like` and `text` formats;
- js_date.py: whether JavaScript's `new Date(text)` is a date, which
  `date-like` falls back on.
"""
from transforms.mapping.actions_core.payload import (ActionField, PayloadSchema,
                                                     PayloadValidationError)

__all__ = ['ActionField', 'PayloadSchema', 'PayloadValidationError']
