"""byeline: hand Five9 calls to a voice AI agent over SIP and back with routing data on the BYE."""

__version__ = "0.1.0"
