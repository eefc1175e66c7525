"""byeline: hand Five9 calls to a voice AI agent over SIP and back with routing data on the BYE."""

from byeline import _native

__version__ = "0.1.0"

_native.check()  # never run a compiled module older than its source
