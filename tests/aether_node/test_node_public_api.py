"""aether_node's public surface, and that its API client imports nothing server-side."""

from __future__ import annotations

import subprocess
import sys

import aether_node


def test_every_exported_name_resolves() -> None:
    for name in aether_node.__all__:
        assert getattr(aether_node, name) is not None, name


def test_the_api_client_imports_nothing_server_side() -> None:
    code = (
        "import sys, aether_node.client\n"
        "server = ('trio', 'aether_kv', 'pysyncobj', 'starlette', 'hypercorn', 'aether_slice')\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in server]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
