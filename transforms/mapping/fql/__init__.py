"""Segment's filter query language (FQL): the triggers of a Segment destination's
subscriptions, read and evaluated as Segment's destination-subscriptions
package does (parser.py; its tokens from lexer.py).

    condition = parse_fql('type = "track" and event = "Signed Up"')
    matches(condition, event)
"""
from transforms.mapping.fql.lexer import FqlError
from transforms.mapping.fql.parser import Condition, generate_fql, matches, parse_fql

__all__ = ['Condition', 'FqlError', 'generate_fql', 'matches', 'parse_fql']
