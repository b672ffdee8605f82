"""aether-node: the Aether node supervisor — KV replica, slice runtime (installer, slice hosts, store),
node deployment manager and HTTP ingress.
"""

from ._config import ConfigError as ConfigError
from ._config import KVSettings as KVSettings
from ._config import NodeConfig as NodeConfig
from ._config import load_config as load_config
from ._coordinates import Coordinates as Coordinates
from ._errors import InvalidCoordinatesError as InvalidCoordinatesError
from ._errors import InvocationError as InvocationError
from ._errors import NodeError as NodeError
from ._errors import ResolutionError as ResolutionError
from ._errors import SliceHostError as SliceHostError
from ._errors import StepTimeoutError as StepTimeoutError
from ._node import NodeInfo as NodeInfo
from ._node import serve_node as serve_node
from ._records import EndpointRecord as EndpointRecord
from ._records import NodeRecord as NodeRecord
from ._records import SliceRecord as SliceRecord
from ._records import SliceState as SliceState
from ._records import decode_record as decode_record
from ._records import encode_record as encode_record
from ._schema import InstanceKey as InstanceKey

__version__ = "0.1.0"
