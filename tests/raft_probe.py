"""A client of the Raft port for tests: a pysyncobj frame, and what the port answers to one (over TLS or in
plain text). pysyncobj's `status` utility request (`raft_frame(["status"])`) is answered with the
replica's status by a port that accepted the client."""

from __future__ import annotations

import socket
import ssl
import struct
import zlib

import pysyncobj.pickle as syncobj_pickle


def raft_frame(message: object) -> bytes:
    data = zlib.compress(syncobj_pickle.dumps(message), 3)
    return struct.pack("i", len(data)) + data


def _receive_exactly(stream: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def raft_answer(address: str, context: ssl.SSLContext | None, frame: bytes) -> object:
    """What the Raft port answers to `frame` (pysyncobj's `status` utility request), over TLS with
    `context` or in plain text: the unpickled answer, or the name of the error that ended the exchange."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            stream = context.wrap_socket(raw, server_hostname=host) if context is not None else raw
            stream.sendall(frame)
            (size,) = struct.unpack("i", _receive_exactly(stream, 4))
            return syncobj_pickle.loads(zlib.decompress(_receive_exactly(stream, size)))
    except (OSError, ConnectionError, struct.error, zlib.error) as error:
        return type(error).__name__
