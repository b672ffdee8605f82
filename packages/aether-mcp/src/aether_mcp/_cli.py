"""aether-mcp command line (being built)."""


def main() -> None:
    raise SystemExit("aether-mcp: not built yet")
