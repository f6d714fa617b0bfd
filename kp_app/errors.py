"""The errors the service interface raises; each maps to one HTTP status.

They are raised before any state changes, so a caller that gets one knows nothing moved.
"""
from typing import Optional


class KpError(Exception):
    status = 500

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        body = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidInput(KpError):
    status = 400


class NotFound(KpError):
    status = 404


class Conflict(KpError):
    status = 409
