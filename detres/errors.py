"""The one exception type for mistakes a user can make (bad config, missing file, corrupt data).

Tools catch `UserError` and print its message without a traceback; anything else is a bug.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the file, key or value and the fix."""


class ConfigError(UserError):
    """A bad config file, key, type or override."""


class DataError(UserError):
    """A missing, malformed or unusable dataset file."""


class CheckpointError(UserError):
    """A checkpoint or weight file that cannot be read, or is unsafe to load."""
