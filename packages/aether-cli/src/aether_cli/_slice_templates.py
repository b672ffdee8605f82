"""The files of a new slice project (`aether slice new`), as `string.Template`s. Text only: which
values fill them is `_slice_new`'s business."""

from __future__ import annotations

from string import Template

PYPROJECT = Template("""\
[project]
name = "$distribution"
version = "0.1.0"
description = "Aether slice $artifact_id"
requires-python = ">=3.11"
readme = "README.md"
# aether-slice and pluggy are NOT dependencies: the node places them into every slice's virtualenv
# itself, at the node's own version. Add what your slice itself needs here, and publish it with the
# slice: `aether slice publish WHEEL --index DIR --with-dependencies` (a node installs from its index alone).
dependencies = []

# How a node finds the slice: one entry point in group aether.slices, named exactly group:artifact,
# naming the module that implements the hooks.
[project.entry-points."aether.slices"]
"$artifact_id" = "$module"

[dependency-groups]
# For the tests only: aether-slice brings the `slice_host` pytest fixture.
dev = ["aether-slice", "pytest>=8"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
$sources""")

# Appended when the aether-slice beside the CLI was installed from a local directory (not an index).
# Editable, so that the project's environment follows that checkout (uv would keep a stale build).
SOURCES = Template("""
[tool.uv.sources]
# aether-slice as installed beside the `aether` that wrote this project; point it elsewhere (or drop this
# table once aether-slice comes from your package index).
aether-slice = { path = "$path", editable = true }
""")

MODULE = Template('''\
"""$artifact_id — an Aether slice. Entry point `greet`: {"name": str} → {"greeting": str}, with the
greeting word from the instance's config (key `greeting`, default "hello")."""

from __future__ import annotations

from typing import Any

from aether_slice import EntryPoint, SliceContext, hookimpl


@hookimpl
def aether_entry_points(context: SliceContext) -> list[EntryPoint]:
    greeting = str(context.config.get("greeting", "hello"))

    def greet(payload: Any) -> dict[str, str]:  # JSON in, JSON out; may be async
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            raise ValueError('greet takes {"name": <string>}')
        return {"greeting": f"{greeting}, {payload['name']}"}

    # idempotent: running it twice is harmless, so the cluster may retry a call that may have run
    return [EntryPoint(name="greet", function=greet, idempotent=True)]
''')

TEST = Template('''\
"""$artifact_id in a real slice host process, the runner a node uses: the `slice_host` fixture comes
with aether-slice (a pytest plugin). No cluster needed."""

from __future__ import annotations

import pytest

from aether_slice.testing import SliceHostError

ARTIFACT = "$artifact_id"


def test_greet(slice_host) -> None:
    slice_ = slice_host(ARTIFACT)
    assert slice_.entry_points == {"greet": True}
    assert slice_.invoke("greet", {"name": "you"}) == {"greeting": "hello, you"}


def test_the_greeting_comes_from_the_config(slice_host) -> None:
    slice_ = slice_host(ARTIFACT, config={"greeting": "hi"})
    assert slice_.invoke("greet", {"name": "you"}) == {"greeting": "hi, you"}


def test_a_bad_payload_is_an_error(slice_host) -> None:
    slice_ = slice_host(ARTIFACT)
    with pytest.raises(SliceHostError) as raised:
        slice_.invoke("greet", {"nom": "you"})
    assert (raised.value.kind, raised.value.remote_type) == ("raised", "ValueError")
''')

README = Template("""\
# $distribution

The Aether slice `$artifact_id`.

| entry | idempotent | payload → result |
| --- | --- | --- |
| `greet` | yes | `{"name": "you"}` → `{"greeting": "hello, you"}` (config `greeting` replaces "hello") |

```sh
uv run pytest                      # the tests: the slice in a real slice host process, no cluster
uv build --wheel                   # → dist/${wheel_prefix}-0.1.0-py3-none-any.whl
aether slice publish dist/${wheel_prefix}-0.1.0-py3-none-any.whl --index DIR   # a node's wheel directory
# (with dependencies in pyproject.toml: add --with-dependencies, and their wheels go there first)
```

Then name it in a blueprint and apply it:

```toml
name = "$artifact"

[[slices]]
artifact = "$artifact_id:0.1.0"
instances = 2
config = { greeting = "hello" }
```

```sh
aether blueprint apply blueprint.toml --wait
aether slice invoke $artifact_id greet --data '{"name": "you"}'
```

The slice author's guide (hooks, config, calling other slices, testing, publishing, upgrading) is
docs/SLICES.md in the Aether repository.
""")

GITIGNORE = "__pycache__/\n.venv/\n.pytest_cache/\ndist/\n"
