"""Errors as napari notifications: the plugin's widgets show what went wrong and napari keeps
running."""

from __future__ import annotations

from napari.utils import notifications

from vstain.errors import VstainError


def notify_error(error: BaseException) -> None:
    """Show an error as a napari notification: a vstain error or a file-system error as its
    message, anything else through napari's error handler (with details on demand)."""
    if isinstance(error, VstainError):
        notifications.show_error(str(error))
    elif isinstance(error, OSError):
        notifications.show_error(
            f"{error}. Check the output folder, its permissions and free space."
        )
    else:
        notifications.notification_manager.receive_error(type(error), error, error.__traceback__)
