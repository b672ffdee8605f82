"""The management API's client and its typed models: what the `aether` CLI and the MCP service import.

Imports nothing server-side (no trio, no KV, no slice runtime): httpx, attrs and cattrs only, so the CLI
starts fast and runs anywhere. `ApiClient` fails over across several node URLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
import cattrs
import httpx

T = TypeVar("T")


# ---------------------------------------------------------------- models


@attrs.frozen(kw_only=True)
class ApplyResult:
    name: str
    created: bool
    revision: int
    slices: int


@attrs.frozen(kw_only=True)
class SliceSummary:
    artifact: str
    instances: int
    strategy: str


@attrs.frozen(kw_only=True)
class BlueprintInfo:
    name: str
    slices: tuple[SliceSummary, ...]
    timestamp: float
    source: str = ""


@attrs.frozen(kw_only=True)
class InstanceInfo:
    node_id: str
    artifact: str
    instance: int
    state: str
    reason: str = ""
    timestamp: float = 0.0


@attrs.frozen(kw_only=True)
class SliceStatus:
    artifact: str  # group:artifact:version wanted by the blueprint
    desired: int
    active: int
    instances: tuple[InstanceInfo, ...]
    problem: str = ""

    @property
    def converged(self) -> bool:
        return self.active == self.desired and all(
            i.artifact == self.artifact for i in self.instances if i.state == "ACTIVE"
        )


@attrs.frozen(kw_only=True)
class BlueprintStatus:
    name: str
    slices: tuple[SliceStatus, ...]

    @property
    def converged(self) -> bool:
        return all(s.converged for s in self.slices)

    @property
    def failures(self) -> list[str]:
        found = [f"{s.artifact}: {s.problem}" for s in self.slices if s.problem]
        for status in self.slices:
            found += [
                f"{i.artifact}#{i.instance} on {i.node_id}: {i.reason}"
                for i in status.instances
                if i.state == "FAILED"
            ]
        return found


@attrs.frozen(kw_only=True)
class NodeInfo:
    node_id: str
    ingress: str
    management: str
    peer: str
    cpu: float
    memory_mib: int
    role: str
    started_at: float
    instances: int
    active: int
    leader: bool


@attrs.frozen(kw_only=True)
class ClusterStatus:
    leader: str | None  # node id whose KV replica leads Raft
    term: int
    revision: int
    has_quorum: bool
    healthy: bool
    nodes: tuple[NodeInfo, ...]
    blueprints: int
    instances: int
    active: int
    failed: int


@attrs.frozen(kw_only=True)
class ClusterEvent:
    revision: int
    timestamp: float
    kind: str  # node_joined, node_left, blueprint_applied, blueprint_deleted, instance_state, leader_elected
    subject: str
    message: str
    node_id: str = ""
    state: str = ""
    reason: str = ""


converter = cattrs.Converter()


def to_json(record: object) -> Any:
    return converter.unstructure(record)


def from_json(data: object, cls: type[T]) -> T:
    return converter.structure(data, cls)


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """The cluster answered with an error. `kind` is the API's error kind; `status` the HTTP status."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message

    @property
    def is_bad_input(self) -> bool:
        return self.status in (400, 404, 409, 422)


class ClusterUnreachableError(Exception):
    """No node of the cluster could be reached."""


# ---------------------------------------------------------------- the client


class ApiClient:
    """Synchronous client of the management API, failing over across `urls` in order."""

    def __init__(self, urls: Sequence[str], *, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout)
        self._good = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        errors = []
        order = self.urls[self._good :] + self.urls[: self._good]
        for url in order:
            try:
                response = self._http.request(method, url + path, **kwargs)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
                raise ValueError(f"{url}: not a usable cluster URL ({error})") from None
            except httpx.TransportError as error:
                errors.append(f"{url}: {error or type(error).__name__}")
                continue
            self._good = self.urls.index(url)
            if response.status_code >= 400:
                try:
                    body = response.json()["error"]
                    kind, message = str(body.get("kind", "error")), str(body.get("message", response.text))
                except (ValueError, KeyError, TypeError):
                    kind, message = "error", response.text or response.reason_phrase
                raise ApiError(response.status_code, kind, message)
            return response.json() if response.content else None
        raise ClusterUnreachableError("cannot reach the cluster: " + "; ".join(errors))

    # blueprints
    def apply_blueprint(self, toml_text: str, source: str = "blueprint.toml") -> ApplyResult:
        data = self._request(
            "POST", "/api/v1/blueprints", content=toml_text.encode(), params={"source": source}
        )
        return from_json(data, ApplyResult)

    def validate_blueprint(self, toml_text: str, source: str = "blueprint.toml") -> BlueprintInfo:
        data = self._request(
            "POST", "/api/v1/blueprints/validate", content=toml_text.encode(), params={"source": source}
        )
        return from_json(data, BlueprintInfo)

    def list_blueprints(self) -> list[BlueprintInfo]:
        return [from_json(item, BlueprintInfo) for item in self._request("GET", "/api/v1/blueprints")]

    def get_blueprint(self, name: str) -> BlueprintInfo:
        return from_json(self._request("GET", f"/api/v1/blueprints/{_segment(name)}"), BlueprintInfo)

    def delete_blueprint(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/blueprints/{_segment(name)}")

    def blueprint_status(self, name: str) -> BlueprintStatus:
        return from_json(self._request("GET", f"/api/v1/blueprints/{_segment(name)}/status"), BlueprintStatus)

    # slices
    def list_slices(self) -> list[InstanceInfo]:
        return [from_json(item, InstanceInfo) for item in self._request("GET", "/api/v1/slices")]

    def slice_status(self, artifact: str) -> SliceStatus:
        return from_json(self._request("GET", f"/api/v1/slices/{_segment(artifact)}"), SliceStatus)

    def invoke(self, artifact: str, entry: str, payload: Any = None) -> Any:
        return self._request(
            "POST", f"/api/v1/slices/{_segment(artifact)}/invoke/{_segment(entry)}", json=payload
        )

    # cluster
    def cluster_status(self) -> ClusterStatus:
        return from_json(self._request("GET", "/api/v1/cluster"), ClusterStatus)

    def nodes(self) -> list[NodeInfo]:
        return [from_json(item, NodeInfo) for item in self._request("GET", "/api/v1/nodes")]

    def events(self, limit: int = 50) -> list[ClusterEvent]:
        data = self._request("GET", "/api/v1/events", params={"limit": limit})
        return [from_json(item, ClusterEvent) for item in data]

    def follow_events(self, limit: int = 20) -> Iterator[ClusterEvent]:
        """Recent events, then every new one as it happens (server-sent events); until interrupted."""
        errors = []
        for url in self.urls:
            try:
                with self._http.stream(
                    "GET", url + "/api/v1/events/stream", params={"limit": limit}, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        body = response.json().get("error", {})
                        raise ApiError(
                            response.status_code, body.get("kind", "error"), body.get("message", "")
                        )
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            yield from_json(json.loads(line[6:]), ClusterEvent)
                    return
            except httpx.TransportError as error:
                errors.append(f"{url}: {error}")
        raise ClusterUnreachableError("cannot reach the cluster: " + "; ".join(errors))


def _segment(value: str) -> str:
    """One URL path segment: a name can never reach another route ("demo?x", "../cluster", "")."""
    if not value:
        raise ValueError("a name must not be empty")
    return quote(value, safe="")


def parse_urls(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = []
    for item in (i.strip() for i in items):
        if item:
            urls.append(item if "://" in item else f"http://{item}")
    return urls
