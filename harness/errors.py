"""The errors a user can cause and fix: each prints as one ``error:`` line on the command line."""


class ConfigError(ValueError):
    """An option value that cannot be used (named in the message); raised before any work is done. A study run from
    the command line prints it as one ``error:`` line, without a traceback (``harness.logs.configure``)."""


class RunMismatch(ConfigError, RuntimeError):
    """A results folder holds a run of another configuration (the changed fields named): refused, not mixed."""
