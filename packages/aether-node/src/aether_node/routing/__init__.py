"""Routing: the endpoint registry and balancing (pure `choose`), node-to-node calls, routing one call with
its retry rule, and the one module that serves HTTP in the node (the app ingress); the fast ingress
(`--ingress-server fast`): its worker process (`_ingress_worker`, HTTP on uvloop + httptools) and the
node's end of the link to it (`_fast_ingress`).

May import: core, observe, the slice runtime (a local call goes straight to the SliceStore); `aether_kv`
(frames, handshake: the peer protocol; `TLSSocketStream`: HTTPS), `aether_slice.protocol` (the fast
ingress's link), hypercorn, starlette; uvloop and httptools (the worker only). Never the control plane
or the APIs. Exports the ingress app and the peer protocol's two ends, which the benchmarks run on their
own, the request body limits, and the one parser of request bodies (`parse_json`, which a benchmark
times).
"""

from ._http import MAX_BODY as MAX_BODY
from ._http import MAX_MANAGEMENT_BODY as MAX_MANAGEMENT_BODY
from ._http import ingress_app as ingress_app
from ._http import parse_json as parse_json
from ._http import serve_http as serve_http
from ._peers import NotSentError as NotSentError
from ._peers import PeerClients as PeerClients
from ._peers import serve_peers as serve_peers
