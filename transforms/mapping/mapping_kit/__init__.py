"""Segment's Mapping Kit: the directive language of a Segment Actions field
mapping ({"@path": "$.traits.email"}, @if, @template, ...), as Segment's
packages/core/src/mapping-kit evaluates it.

- transform.py: `transform(mapping, payload)`, every directive;
- validate.py: `validate_mapping`, Segment's validation and its messages;
- liquid.py: `@liquid` on python-liquid with Segment's restrictions;
- paths.py: Segment's path lookup and {{templates}}; keys.py: the fields a
  mapping reads; js.py: the JavaScript rules the port keeps (undefined,
  truthiness, printing).
"""
from transforms.mapping.mapping_kit.transform import transform, transform_batch
from transforms.mapping.mapping_kit.validate import MappingKitError, validate_mapping

__all__ = ['MappingKitError', 'transform', 'transform_batch', 'validate_mapping']
