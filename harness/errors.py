"""The errors a user can cause and fix. Each names the problem and the fix; on the command line it prints as one
``error: …`` line and exits with status 2 (``harness.logs.cli``; ``--verbose`` shows the traceback)."""


class UserError(Exception):
    """A problem in what the user asked for (an option, data, a model name, a remote setting, a results folder), not
    in the harness: its message names it and how to fix it."""


class ConfigError(UserError, ValueError):
    """An option value that cannot be used (named in the message); raised before any work is done."""


class RunMismatch(ConfigError, RuntimeError):
    """A results folder holds a run of another configuration (the changed fields named): refused, not mixed."""


class ModelError(UserError, ValueError):
    """A model name that names no model the harness can load here (the registry's names, an HF id, a local folder)."""
