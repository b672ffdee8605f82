"""The Raft port: pysyncobj's TCP transport and connections, guarded, and over mutual TLS when the
replica has the cluster's TLS. Only `_raft.py` imports this module; the pysyncobj private names it uses
are listed in `_pysyncobj_patches.PRIVATE_NAMES` (pysyncobj is pinned).

Guards (every connection). Upstream buffers whatever a connection sends, before authentication, until a
whole frame has arrived: a peer without the secret announcing a 2 GB frame and trickling junk made the
tick thread copy an ever-growing buffer (replica starved, elections, memory up). Now a frame larger than
`MAX_FRAME_BYTES` (`MAX_UNAUTHENTICATED_FRAME_BYTES` before the peer has identified itself as a cluster
member) drops the connection as soon as its 4-byte header arrives, and a connection that has not
identified itself within `AUTHENTICATION_DEADLINE` seconds is dropped (checked on every read and every
tick). Links come back soon after a partition: a dial not connected within `CONNECT_DEADLINE` is dropped
and made again (after pysyncobj's retry time), and the kernel drops a link whose data has gone
unacknowledged for `_keepalive.UNACKNOWLEDGED` (10 s, `TCP_USER_TIMEOUT`, both ends), which is then
dialled again. Before, a link cut by a partition waited on TCP's backoff (a dial's SYNs, a link's
retransmissions: up to two minutes apart), and the cut replica rejoined 8-27 s after the network came
back.

Mutual TLS (when `PatchedSyncObj.raft_tls` is set: the replica runs with `--tls-dir`). Upstream can only
encrypt with a password (Fernet: AES and an HMAC per frame, keys from the cluster secret). With TLS, each
connection is wrapped in TLS 1.3 from the cluster CA as soon as TCP connects (the dialling replica checks
that the peer's certificate is the CA's and names the host of the peer's Raft address; the accepting
replica requires a valid certificate of the CA), and upstream's password encryption is off: the TLS
session authenticates and encrypts, and only a holder of the secret can get a certificate of the CA. A
stranger's handshake fails before a byte of a frame is read (so nothing it sends is unpickled); a
handshake that does not finish within `AUTHENTICATION_DEADLINE` drops the connection, on either side.
A renewed certificate is used by the next connection (`ReloadingTLS`); open ones keep theirs.

The TLS layer sits under upstream's non-blocking loop (`TcpConnection`): the handshake is driven from the
connection's read and write steps; frames queued before it ends are held apart, so upstream does not
poll for writability while the handshake waits to read; a read drains the TLS records until the socket
would block (a record's data already decrypted would get no new poll event); a write that would block is
retried with the same buffer from its start, as OpenSSL requires.

Probes (`GuardedTransport.probe`). A replica whose link to its leader closed asks whether the leader's
process is gone: one TCP dial to the leader's Raft port, apart from the link (only the higher address
dials a link, so the replica the leader dialled would otherwise never try). "refused" means the host
is up and nothing listens on the port (or the connection was reset as soon as it was accepted: the
listener closing); "answered" that a replica listens (a reset link, a restarted peer); "unanswered"
that nothing came back in time (a host gone, a partition). Nothing is sent on the dial, and it is closed
once it has its outcome (with TLS the peer logs, at INFO, a connection closed during its handshake). What the
replica does with the outcome is `_pysyncobj_patches`' item 10.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any

from pysyncobj.monotonic import monotonic as _monotonic
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection, _getAddrType
from pysyncobj.transport import TCPTransport

from ._keepalive import bound_unacknowledged
from ._tls import ReloadingTLS

log = logging.getLogger("aether_kv.raft")

# A Raft frame holds an append-entries batch (64 KiB plus at most one entry, itself under the client
# protocol's 4 MiB frame), a snapshot chunk or a forwarded command; compressed (and without TLS, encrypted:
# 4/3).
MAX_FRAME_BYTES = 64 * 1024 * 1024
# Before it has identified itself a peer sends only handshake frames (a random key, its address), a few
# hundred bytes each.
MAX_UNAUTHENTICATED_FRAME_BYTES = 64 * 1024
AUTHENTICATION_DEADLINE = 10.0
TLS_WRITE_CHUNK = 256 * 1024  # bytes handed to one TLS write
# A probe's dial unanswered this long has no verdict: a host that vanished or is partitioned away (no
# refusal comes back) keeps the election timeout.
PROBE_DEADLINE = 0.5
PROBE_HOLD = 0.3  # an accepted probe is held this long before it counts as answered (see `_Probe`)
# A dial of a link not connected this long is dropped, and made again after pysyncobj's retry time: a
# dial during a partition otherwise waited on the kernel's SYN backoff (seconds, then a minute apart,
# for two minutes), so the link came back up to a minute after the network did.
CONNECT_DEADLINE = 3.0

ProbeCallback = Callable[[str], None]  # "refused", "answered" or "unanswered"


class GuardedConnection(TcpConnection):
    """A TcpConnection that refuses oversized frames and, until authenticated, slow handshakes; with
    `start_tls`, one that speaks TLS.

    Instances are upstream connections whose class is switched right after construction (upstream builds
    them in places this package cannot reach: the TCP server's accept handler), then `guard` is called."""

    max_frame: int = MAX_FRAME_BYTES
    deadline: float | None = None  # to identify itself (incoming) or to finish the TLS handshake
    identified: bool = True
    tls_pending: bool = False  # a TLS handshake has started and not finished
    tls: bool = False
    held: bytes = b""  # frames queued while the TLS handshake runs
    dialled_at: float = 0.0  # when this (outgoing) connection last dialled

    def connect(self, host: str, port: int) -> bool:
        self.dialled_at = _monotonic()
        dialled = bool(super().connect(host, port))
        if dialled:
            bound_unacknowledged(self._TcpConnection__socket)
        return dialled

    def dial_overdue(self) -> bool:
        """Whether this connection's dial has waited longer than `CONNECT_DEADLINE` without connecting."""
        return self.state == CONNECTION_STATE.CONNECTING and _monotonic() - self.dialled_at > CONNECT_DEADLINE

    def guard(self, *, authenticated: bool) -> None:
        self.identified = authenticated
        if authenticated:
            self.max_frame = MAX_FRAME_BYTES
            self.deadline = _monotonic() + AUTHENTICATION_DEADLINE if self.tls_pending else None
        else:
            self.max_frame = MAX_UNAUTHENTICATED_FRAME_BYTES
            self.deadline = _monotonic() + AUTHENTICATION_DEADLINE

    def expired(self) -> bool:
        return self.deadline is not None and _monotonic() > self.deadline

    def refuse(self, why: str, *, level: int = logging.WARNING) -> None:
        log.log(level, "dropping a Raft connection: %s", why)
        self.disconnect()

    def _why_expired(self) -> str:
        if self.tls_pending:
            return f"the TLS handshake did not finish within {AUTHENTICATION_DEADLINE:g} s"
        return f"the peer did not authenticate within {AUTHENTICATION_DEADLINE:g} s"

    # ------------------------------------------------------------ TLS

    def start_tls(self, context: ssl.SSLContext, *, server_side: bool, hostname: str | None = None) -> None:
        """Wrap the connected socket in TLS; the handshake runs from the next read or write step."""
        raw = self._TcpConnection__socket
        self._TcpConnection__socket = context.wrap_socket(
            raw, server_side=server_side, server_hostname=hostname, do_handshake_on_connect=False
        )
        self.tls = self.tls_pending = True
        self.held = b""
        if self.deadline is None:
            self.deadline = _monotonic() + AUTHENTICATION_DEADLINE

    def disconnect(self) -> None:
        self.tls = self.tls_pending = False
        self.held = b""
        self.deadline = None  # nothing left to wait for (an outgoing link is dialled again later)
        super().disconnect()

    def _handshake(self) -> bool:
        """One step of the TLS handshake; whether it is done (False also when it failed: disconnected)."""
        try:
            self._TcpConnection__socket.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLWantWriteError:
            self._poll_for_writes()
            return False
        except (ssl.SSLEOFError, ConnectionResetError) as error:
            # closed before the handshake: a peer's probe (`_Probe`) or a peer going away, not a stranger
            self.refuse(f"closed during the TLS handshake ({error})", level=logging.INFO)
            return False
        except (ssl.SSLError, OSError) as error:
            self.refuse(f"TLS handshake failed ({error})")
            return False
        self.tls_pending = False
        if self.identified:
            self.deadline = None
        self._TcpConnection__writeBuffer = self.held + self._TcpConnection__writeBuffer
        self.held = b""
        if self._TcpConnection__writeBuffer:
            self._TcpConnection__trySendBuffer()
            if self.state != CONNECTION_STATE.DISCONNECTED and self._TcpConnection__writeBuffer:
                self._poll_for_writes()
        return self.state != CONNECTION_STATE.DISCONNECTED

    def _poll_for_writes(self) -> None:
        fileno = self.fileno()
        if fileno is not None:
            events = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR
            self._TcpConnection__poller.subscribe(fileno, self._TcpConnection__processConnection, events)

    def _tls_send(self) -> bool:
        buffer = self._TcpConnection__writeBuffer
        if not buffer:
            return False
        try:
            sent = self._TcpConnection__socket.send(buffer[:TLS_WRITE_CHUNK])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        except (ssl.SSLError, OSError) as error:
            self.refuse(f"TLS write failed ({error})")
            return False
        self._TcpConnection__writeBuffer = buffer[sent:]
        return sent > 0

    def _tls_receive(self) -> bool:
        try:
            incoming = self._TcpConnection__socket.recv(self._TcpConnection__recvBufferSize)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (ssl.SSLError, OSError) as error:
            self.refuse(f"TLS read failed ({error})")
            return False
        if not incoming:
            self.disconnect()
            return False
        self._TcpConnection__readBuffer += incoming
        return True

    # ------------------------------------------------------------ upstream's steps

    def _TcpConnection__processSend(self) -> bool:
        if not self.tls:
            return super()._TcpConnection__processSend()
        if self.tls_pending:
            self.held += self._TcpConnection__writeBuffer  # not polled for until the handshake ends
            self._TcpConnection__writeBuffer = b""
            if not self._handshake():
                return False
        return self._tls_send()

    def _frame_ok(self) -> bool:
        buffer = self._TcpConnection__readBuffer
        if len(buffer) < 4:
            return True
        (size,) = struct.unpack("i", buffer[:4])
        if not 0 <= size <= self.max_frame:
            state = "a" if self.identified else "an unauthenticated"
            self.refuse(f"{state} peer announced a frame of {size} bytes (limit {self.max_frame})")
            return False
        return True

    def _TcpConnection__processRead(self) -> bool:
        if self.expired():
            self.refuse(self._why_expired())
            return False
        if self.tls_pending and not self._handshake():
            return False
        more = self._tls_receive() if self.tls else super()._TcpConnection__processRead()
        if self.state == CONNECTION_STATE.DISCONNECTED or not self._frame_ok():
            return False
        if not self.identified and len(self._TcpConnection__readBuffer) > self.max_frame + 4:
            return False  # let the handshake frames be parsed before reading more
        return more

    def _TcpConnection__processParseMessage(self) -> Any:
        if not self._frame_ok():
            return None
        return super()._TcpConnection__processParseMessage()


def _guarded(connection: TcpConnection) -> GuardedConnection | None:
    if type(connection) is TcpConnection:
        connection.__class__ = GuardedConnection
    return connection if isinstance(connection, GuardedConnection) else None


class _Probe:
    """One dial to a peer's Raft port, on the tick thread's poller; ends once, with an outcome.

    A connection the port accepts is held open for `PROBE_HOLD` before it counts as answered: a replica
    process being killed closes its links before its listening socket at times (a SIGKILLed process's
    descriptors close one by one), so a dial right after its link closed can still be accepted, and the
    listener's close then resets it. A live replica sends nothing first and keeps it open."""

    def __init__(self, sock: socket.socket, poller: Any, ended: ProbeCallback) -> None:
        self.sock = sock
        self.poller = poller
        self.deadline = _monotonic() + PROBE_DEADLINE
        self.callbacks = [ended]
        self.accepted = False
        self.done = False
        poller.subscribe(sock.fileno(), self.on_event, POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)

    def on_event(self, _descr: int, event: int) -> None:
        if not self.accepted:
            failed = self._dial_failed()
            if failed is not None:
                self.finish(failed)
                return
            self.accepted = True
            self.deadline = _monotonic() + PROBE_HOLD
            self.poller.subscribe(
                self.sock.fileno(), self.on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
            )
            return
        outcome = self._read()
        if outcome is not None:
            self.finish(outcome)

    def expire(self, now: float | None) -> None:
        """Past its deadline (or `now` None: the transport closes): a dial unanswered, a hold over. The
        socket is read first: a tick that ran late comes here before its poll has reported the refusal
        or the reset already waiting (counted as answered, the follower waited for its election
        timeout)."""
        if now is None or now > self.deadline:
            self.finish(self._outcome_so_far())

    def _outcome_so_far(self) -> str:
        if not self.accepted:
            return self._dial_failed() or "unanswered"
        return self._read() or "answered"

    def _dial_failed(self) -> str | None:
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return _outcome(code) if code != 0 else None

    def _read(self) -> str | None:
        """What an accepted dial has had since: closed or reset (the listener went), something sent
        (a replica), or nothing yet (None)."""
        try:
            data = self.sock.recv(1)
        except BlockingIOError:
            return None
        except OSError:
            return "refused"
        return "answered" if data else "refused"

    def finish(self, outcome: str) -> None:
        if self.done:
            return
        self.done = True
        self.poller.unsubscribe(self.sock.fileno())
        self.sock.close()
        for callback in self.callbacks:
            callback(outcome)


def _outcome(code: int) -> str:
    return "refused" if code == errno.ECONNREFUSED else "unanswered"


class GuardedTransport(TCPTransport):
    """TCPTransport whose connections are `GuardedConnection`s, over TLS when the replica has it
    (`raft_tls` on the SyncObj, set before upstream builds this transport), and which can probe a
    peer's port; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._probes: dict[Any, _Probe] = {}  # by node: dials in progress
        super().__init__(*args, **kwargs)

    def probe(self, node: Any, callback: ProbeCallback) -> None:
        """Dial `node`'s Raft port once; `callback(outcome)` runs on the tick thread when the dial ends
        (see the module docstring). A probe of a node already being probed shares that dial."""
        waiting = self._probes.get(node)
        if waiting is not None:
            waiting.callbacks.append(callback)
            return
        try:
            ip = node.ip
            sock = socket.socket(_getAddrType(ip), socket.SOCK_STREAM)
        except (OSError, AttributeError):  # unresolvable, or not a TCP node
            callback("unanswered")
            return
        sock.setblocking(False)
        code = sock.connect_ex((ip, node.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            callback(_outcome(code))
            return
        self._probes[node] = _Probe(
            sock, self._syncObj._poller, lambda _outcome: self._probes.pop(node, None)
        )
        self._probes[node].callbacks.append(callback)

    def _end_probes(self, *, now: float | None) -> None:
        """End the probes past their deadline (all of them when `now` is None)."""
        for probe in list(self._probes.values()):
            probe.expire(now)

    def destroy(self) -> None:
        self._end_probes(now=None)
        super().destroy()

    @property
    def _tls(self) -> ReloadingTLS | None:
        return getattr(self._syncObj, "raft_tls", None)

    def _onNewIncomingConnection(self, conn: TcpConnection) -> None:
        guarded = _guarded(conn)
        if guarded is not None:
            bound_unacknowledged(guarded._TcpConnection__socket)
            guarded.guard(authenticated=False)
            tls = self._tls
            if tls is not None:
                try:
                    guarded.start_tls(tls.server(), server_side=True)
                except (ssl.SSLError, OSError) as error:
                    guarded.refuse(f"cannot start TLS ({error})")
                    return
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: TcpConnection, message: Any) -> None:
        super()._onIncomingMessageReceived(conn, message)
        if conn not in self._unknownConnections and conn.state != CONNECTION_STATE.DISCONNECTED:
            guarded = _guarded(conn)
            if guarded is not None:
                guarded.guard(authenticated=True)  # it proved the secret and named a cluster member

    def _onOutgoingConnected(self, conn: TcpConnection) -> None:
        tls = self._tls
        guarded = _guarded(conn)
        if tls is not None and guarded is not None:
            node = self._connToNode(conn)
            if node is None:  # (upstream dials only the nodes it holds a connection for)
                guarded.refuse("an outgoing Raft connection to no known node")
                return
            host = node.host.strip("[]")
            try:
                guarded.start_tls(tls.client(), server_side=False, hostname=host)
            except (ssl.SSLError, OSError) as error:
                guarded.refuse(f"cannot start TLS to {host} ({error})")
                return
        super()._onOutgoingConnected(conn)

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        guarded = _guarded(conn) if conn is not None else None
        if guarded is not None:
            guarded.guard(authenticated=True)  # outgoing, to a configured peer: only the frame limit

    def _onTick(self) -> None:
        for conn in [*self._unknownConnections, *self._connections.values()]:
            if isinstance(conn, GuardedConnection) and conn.expired():
                conn.refuse(conn._why_expired())
                self._unknownConnections.discard(conn)
            elif isinstance(conn, GuardedConnection) and conn.dial_overdue():
                conn.refuse(
                    f"not connected within {CONNECT_DEADLINE:g} s (dialled again)", level=logging.DEBUG
                )
        self._end_probes(now=_monotonic())
        super()._onTick()
