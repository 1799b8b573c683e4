"""Adds this package's configs to Hydra's search path, so `task=parity model=parity_mlp` compose.

Hydra discovers search-path plugins in the `hydra_plugins` namespace package; this one appends
`pkg://groktransfer_parity.conf`, whose `task/`, `model/` and `experiment/` folders then sit
beside groktransfer's own.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class GroktransferParitySearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="groktransfer-parity", path="pkg://groktransfer_parity.conf")
