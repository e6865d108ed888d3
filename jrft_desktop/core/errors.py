"""Errors a user can fix. The CLI prints their message in one line (exit 2); the GUI shows it in a dialog."""


class UserError(Exception):
    """Bad input or an impossible request, explained in one sentence the user can act on."""


class DataError(UserError):
    """The training or evaluation data cannot be read or does not fit the task."""


class ModelError(UserError):
    """The model cannot be found, loaded or used with the chosen method."""


class ArtifactError(UserError):
    """A vector file, checkpoint or run folder is missing, foreign, tampered with or unusable."""


class PrivacyError(UserError):
    """A privacy request that cannot be honoured (said before training starts)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
