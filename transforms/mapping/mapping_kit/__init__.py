"""Segment's Mapping Kit: the directive language of a Segment Actions field
mapping ({"@path": "$.traits.email"}, @if, @template, ...), as Segment's
packages/core/src/mapping-kit evaluates it.

- transform.py: `transform(mapping, payload)`, every directive; for one
  mapping over many payloads, `prepare_mapping` once then
  `transform_validated` per payload;
- validate.py: `validate_mapping`, Segment's validation and its messages;
- liquid.py: `@liquid` on python-liquid with Segment's restrictions;
- paths.py: Segment's path lookup and {{templates}}; keys.py: the fields a
  mapping reads. The JavaScript rules the port keeps (undefined,
  truthiness, printing) are transforms/core/javascript.py, shared with FQL.
"""
from transforms.mapping.mapping_kit.transform import (prepare_mapping, transform, transform_batch,
                                                      transform_validated)
from transforms.mapping.mapping_kit.validate import MappingIssue, MappingKitError, validate_mapping

__all__ = ['MappingIssue', 'MappingKitError', 'prepare_mapping', 'transform', 'transform_batch',
           'transform_validated', 'validate_mapping']
