"""The configuration file and the operations options, applied to ryu-manager's
configuration (thin: kp_app.config_file reads and checks the file).

The command line wins: a setting of the file is taken only for an option the command
line did not give (oslo.config tells where each value came from). Called from the Ryu
app's constructor, which ryu-manager runs before any listener binds (OpenFlow's and the
REST API's read their addresses after every app is made), so the file's addresses are
the ones bound. A file that does not check out stops the start: SystemExit with the
file, the field and the reason, before anything changed.
"""
from typing import Optional, Tuple

from kp_app import config_file
from kp_app.config_file import ConfigError, KpConfig

Address = Tuple[str, int]


def _from_command_line(conf, name: str) -> bool:
    from oslo_config import cfg
    return conf.get_location(name).location == cfg.Locations.command_line


def load(conf) -> Optional[KpConfig]:
    """The file of --kp-config, its options set where the command line has none."""
    path = getattr(conf, "kp_config", None)
    if not path:
        return None
    try:
        config = config_file.read(path)
        if "kubeconfig" in config.options and "kubeconfig" not in conf:
            raise ConfigError("clientConnection.kubeconfig",
                              "this kp_app has no Kubernetes watch (no --kubeconfig option)")
    except ConfigError as error:
        raise SystemExit(f"kp_app: configuration file {path}: {error}") from None
    for name, value in config.options.items():
        if not _from_command_line(conf, name):
            conf.set_override(name, value)
    return config


def bind_address(conf, name: str, default_port: int) -> Optional[Address]:
    """--healthz-bind-address / --metrics-bind-address (from the command line or the
    file), parsed: None when "" turns it off."""
    try:
        return config_file.parse_bind_address(getattr(conf, name), "--" + name.replace(
            "_", "-"), default_port)
    except ConfigError as error:
        raise SystemExit(f"kp_app: {error}") from None
