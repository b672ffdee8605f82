"""aether-kv: Aether's consensus key-value store — a small etcd on Raft (pysyncobj).

Keys with revisions, compare-and-swap transactions, leases and prefix watches, replicated by Raft.
`open_store` runs a replica in this process (trio API); `open_client` talks to replicas over the network;
`aether-kv serve` runs a replica process. Both satisfy `KV`, the async interface, as does `MemoryStore`
(the state machine alone, with fault hooks and an injected clock: for fast deterministic tests).
"""

from ._client import ClientWatch as ClientWatch
from ._client import KVClient as KVClient
from ._client import open_client as open_client
from ._errors import AuthenticationError as AuthenticationError
from ._errors import CompactedError as CompactedError
from ._errors import ConnectionLostError as ConnectionLostError
from ._errors import DiskFullError as DiskFullError
from ._errors import InvalidRequestError as InvalidRequestError
from ._errors import JournalFormatError as JournalFormatError
from ._errors import KVError as KVError
from ._errors import LeaseNotFoundError as LeaseNotFoundError
from ._errors import NoQuorumError as NoQuorumError
from ._errors import OutcomeUnknownError as OutcomeUnknownError
from ._errors import TLSError as TLSError
from ._errors import UnavailableError as UnavailableError
from ._interface import KV as KV
from ._interface import KVWatch as KVWatch
from ._keepalive import bound_unacknowledged as bound_unacknowledged
from ._keepalive import keep_alive as keep_alive
from ._local import LocalCluster as LocalCluster
from ._local import plan_local_cluster as plan_local_cluster
from ._local import running_local_cluster as running_local_cluster
from ._local import wait_until_ready as wait_until_ready
from ._memory import MemoryStore as MemoryStore
from ._memory import MemoryWatch as MemoryWatch
from ._open_files import out_of_files_hint as out_of_files_hint
from ._open_files import raise_open_files_limit as raise_open_files_limit
from ._ports import free_port as free_port
from ._raft import RaftConfig as RaftConfig
from ._records import MAX_KEY_BYTES as MAX_KEY_BYTES
from ._records import MAX_TXN_OPS as MAX_TXN_OPS
from ._records import MAX_VALUE_BYTES as MAX_VALUE_BYTES
from ._records import Compare as Compare
from ._records import CompareOp as CompareOp
from ._records import CompareTarget as CompareTarget
from ._records import Delete as Delete
from ._records import DeletePrefix as DeletePrefix
from ._records import DeleteResult as DeleteResult
from ._records import Event as Event
from ._records import EventKind as EventKind
from ._records import Get as Get
from ._records import GetResult as GetResult
from ._records import KeyValue as KeyValue
from ._records import LeaseResult as LeaseResult
from ._records import Member as Member
from ._records import Put as Put
from ._records import PutResult as PutResult
from ._records import Range as Range
from ._records import RangeResult as RangeResult
from ._records import RevokeResult as RevokeResult
from ._records import Status as Status
from ._records import TxnResult as TxnResult
from ._records import compare_holds as compare_holds
from ._replies import Replies as Replies
from ._replies import Reply as Reply
from ._serve import ServeConfig as ServeConfig
from ._serve import serve_replica as serve_replica
from ._store import KVStore as KVStore
from ._store import Watch as Watch
from ._store import open_store as open_store
from ._store import wait_for_leader as wait_for_leader
from ._tls import CA_FILE as CA_FILE
from ._tls import CERT_FILE as CERT_FILE
from ._tls import ClusterCA as ClusterCA
from ._tls import ReloadingTLS as ReloadingTLS
from ._tls import accept_tls as accept_tls
from ._tls import client_identity as client_identity
from ._tls import cluster_ca as cluster_ca
from ._tls import connect_tls as connect_tls
from ._tls import issue as issue
from ._tls import not_valid_after as not_valid_after
from ._tls import write_identity as write_identity
from ._tls_stream import TLSSocketStream as TLSSocketStream
from ._wire import MAX_HANDSHAKE_BYTES as MAX_HANDSHAKE_BYTES
from ._wire import FramedStream as FramedStream
from ._wire import client_handshake as client_handshake
from ._wire import server_handshake as server_handshake

__version__ = "0.1.0"
