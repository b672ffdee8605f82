"""A KV replica's own problems (a full disk) reach the cluster's health verdict, named as the replica
reported them, and leave it when they clear."""

from __future__ import annotations

from shell_support import kv_status, node_info

from aether_node.api._handlers import Handlers

PROBLEM = (
    "KV replica b:1: disk full: the Raft journal could not be written in /data/kv;"
    " it refuses writes it cannot store until space is freed there"
)


NODE = node_info("n1", leader=True, instances=0, active=0)


def test_a_replica_whose_disk_is_full_makes_the_cluster_unhealthy_and_is_named() -> None:
    summary = Handlers._summary(kv_status(problems=(PROBLEM,)), [NODE], [], {}, ["n1"])
    assert not summary.healthy
    assert summary.reasons == (PROBLEM,)


def test_the_reason_goes_when_the_replica_has_room_again() -> None:
    summary = Handlers._summary(kv_status(), [NODE], [], {}, ["n1"])
    assert summary.healthy and summary.reasons == ()
