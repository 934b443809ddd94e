"""portable-deploy: build, sign and deploy an app as a systemd portable service, with Invoke tasks."""

from .config import Config, load_config
from .errors import ConfigError, DeployError

__all__ = ["Config", "ConfigError", "DeployError", "load_config"]
__version__ = "0.1.0"
