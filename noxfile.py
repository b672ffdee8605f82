"""Developer sessions. `nox` runs lint, the tests (with the nemesis suite's ~1-minute smoke,
tests/chaos/test_chaos_smoke.py; the long multi-process scenarios, marked `long`, run in `nox -s long`:
most of their modules keep a shorter test in the default run) and the release check (`nox -s release`:
every package built, its metadata checked, the wheels installed into a fresh virtualenv outside the
repository and used there, tests/release/; about a minute); `nox -s chaos` runs the whole nemesis suite
(as root: it builds network namespaces; `nox -s chaos -- --soak 30` runs the soak instead); `nox -s
bench` runs the benchmarks.

Every session installs the whole uv workspace (locked) into its own virtualenv with uv.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "release"]
nox.options.reuse_existing_virtualenvs = True


def _sync(session: nox.Session) -> None:
    session.run_install(
        "uv",
        "sync",
        "--frozen",
        "--group",
        "dev",
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, property and multi-process integration tests, but the long scenarios (`nox -s long`)."""
    _sync(session)
    # Two workers (pytest-xdist), each test module on one worker: the integration tests mostly wait on
    # processes, and a module's tests share its fixtures (one cluster per module where they can).
    session.run("pytest", *(session.posargs or ["-q", "-m", "not long", "-n", "2", "--dist", "loadfile"]))


@nox.session
def long(session: nox.Session) -> None:
    """The long multi-process scenarios (marked `long`) that the default run leaves out."""
    _sync(session)
    session.run("pytest", "-m", "long", *(session.posargs or ["-q"]))


@nox.session
def release(session: nox.Session) -> None:
    """Build every package (sdist and wheel), check the metadata (twine check --strict), install the
    wheels into a fresh virtualenv in a temporary directory and smoke-test them from there: every console
    script starts, `aether dev up --example`, a call, `aether-mcp`'s tools, `aether dev down`."""
    _sync(session)
    session.run("pytest", "tests/release", "--release", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting check."""
    _sync(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks that print figures and ratios (see benchmarks/README.md)."""
    _sync(session)
    session.run("python", "benchmarks/kv_bench.py", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The nemesis suite: every nemesis alone and combined at random, with every invariant checked
    (docs/RELIABILITY.md). Options after `--`: --soak MINUTES, --chaos-seed N, --chaos-rounds N,
    --chaos-nemesis a,b, --chaos-dir DIR (keeps the reports and results.jsonl)."""
    _sync(session)
    session.run("pytest", "tests/chaos", "--chaos", "-q", "-s", *session.posargs)
