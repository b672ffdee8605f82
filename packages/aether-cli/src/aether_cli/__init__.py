"""aether_cli — not built yet; see the open issues."""

__version__ = "0.1.0"
