"""The node's end of the link to a template (`aether_node.runtime._slice_host`) against a real template of
the sample echo slice, host protocol version 3: the template answers no FORK it carries out, so the node
names a child by its FORK until the child's answer to LOAD brings its pid; a child is killed by its FORK
before that, a refusal is how the child "ended", and an answer to LOAD of version 2 is refused."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from aether_node.core._coordinates import Coordinates
from aether_node.core._errors import SliceHostError
from aether_node.runtime._installer import InstalledSlice
from aether_node.runtime._slice_host import SliceHost, SliceTemplate
from aether_slice.protocol import Kind
from support import slice_venv

ECHO = Coordinates.parse("org.aether:echo:1.0.0")
CONFIG: dict[str, Any] = {"greeting": "hi"}


class Link:
    """A template of echo (imported with CONFIG) run by the node's code, and its instances."""

    def __init__(self, nursery: trio.Nursery, template: SliceTemplate, directory: Path) -> None:
        self.nursery = nursery
        self.template = template
        self.directory = directory
        self.hosts: list[SliceHost] = []

    async def spawn(self, config: dict[str, Any] = CONFIG) -> SliceHost:
        number = len(self.hosts)
        read_end, write_end = os.pipe()  # the instance's output (the read end kept open: never full here)
        self.nursery.start_soon(trio.to_thread.run_sync, _drain, read_end)

        async def no_calls(*_: Any) -> Any:
            raise AssertionError("echo makes no calls")

        try:
            host = await SliceHost.spawn(
                self.nursery,
                self.template,
                label=f"echo#{number}",
                name=f"echo#{number}",
                config=config,
                output=write_end,
                log_path=self.directory / f"{number}.log",
                on_call=no_calls,
            )
        finally:
            os.close(write_end)
        self.hosts.append(host)
        return host


def _drain(fd: int) -> None:
    with open(fd, "rb") as output:
        while output.read(65536):
            pass


@pytest.fixture(scope="module")
def slice_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv with aether-slice and the echo slice, as the node's installer makes one."""
    return slice_venv(tmp_path_factory.mktemp("echo-venv"), ["echo"])


@pytest.fixture
async def link(slice_python: str, tmp_path: Path) -> AsyncIterator[Link]:
    python = Path(slice_python)
    installed = InstalledSlice(coordinates=ECHO, venv=python.parent.parent, python=python)
    async with trio.open_nursery() as nursery:
        template = SliceTemplate(installed, tmp_path / "template.log", CONFIG)
        await template.start(nursery)
        made = Link(nursery, template, tmp_path)
        try:
            yield made
        finally:
            with trio.CancelScope(shield=True):
                for host in made.hosts:
                    await host.close(grace=0)
                await template.stop()
            nursery.cancel_scope.cancel()


async def load(host: SliceHost, config: dict[str, Any] = CONFIG) -> Any:
    loading = host.send_ahead(
        Kind.LOAD, entry_point=ECHO.artifact_id, coordinates=str(ECHO), instance=0, config=config
    )
    return await host.result_of(loading, 10)


async def test_an_instance_is_named_by_its_fork_until_its_answer_to_load_brings_its_pid(link: Link) -> None:
    host = await link.spawn()
    assert host.pid is None and host.fork_id == 1
    answer = await load(host)
    host.loaded(answer)
    assert host.pid == answer["pid"] and host.pid > 0
    assert Path(f"/proc/{host.pid}/comm").read_text().strip() == "echo#0"
    host.kill()
    with trio.fail_after(10):
        await host.exited.wait()
    assert host.exit_reason == "killed by SIGKILL"  # the template's EXIT, found by the FORK's id


async def test_an_instance_whose_pid_is_not_known_yet_is_killed_through_its_template(link: Link) -> None:
    host = await link.spawn()
    host.kill(because="it hung")  # no LOAD sent: only the template knows its pid
    with trio.fail_after(10):
        await host.exited.wait()
    assert host.exit_reason == "it hung; killed by SIGKILL"
    second = await link.spawn()  # the template serves on
    second.loaded(await load(second))
    assert second.pid is not None and second.fork_id == 2


async def test_a_fork_the_template_refuses_fails_the_load_saying_why(link: Link) -> None:
    host = await link.spawn({"greeting": "another"})
    with pytest.raises(SliceHostError) as failed:
        await load(host, {"greeting": "another"})
    assert "the slice template refused to fork: this template imported the slice with another config" in (
        failed.value.message
    )
    assert host.pid is None


async def test_an_answer_to_load_of_version_2_is_refused_naming_both_versions(link: Link) -> None:
    host = await link.spawn()
    answer = await load(host)
    with pytest.raises(SliceHostError) as refused:
        host.loaded({"entry_points": answer["entry_points"], "pid": answer["pid"]})  # as version 2 said it
    assert refused.value.kind == "protocol"
    assert "speaks host protocol version 2 and this side version 3" in refused.value.message
    assert host.pid is None
