"""aether-cli: the `aether` operator command line. See `aether --help`."""

__version__ = "0.1.0"
