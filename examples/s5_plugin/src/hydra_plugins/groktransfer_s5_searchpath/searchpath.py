"""Adds this package's configs to Hydra's search path, so `task=s5_compose` composes.

Hydra discovers search-path plugins in the `hydra_plugins` namespace package; this one
appends `pkg://groktransfer_s5.conf`, whose `task/` and `experiment/` folders then sit
beside groktransfer's own.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class GroktransferS5SearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="groktransfer-s5", path="pkg://groktransfer_s5.conf")
