"""What every backend's check() returns: None (supported) or a Reason."""
from __future__ import annotations


class Reason(str):
    """Why a backend cannot run a problem; a str that also knows which exception to raise.

    dtype problems are TypeErrors, device/shape problems ValueErrors, missing kernels
    NotImplementedErrors, so an explicit backend= choice fails like any other bad argument.
    """

    exc: type = NotImplementedError

    def __new__(cls, text: str, exc: type = NotImplementedError):
        self = super().__new__(cls, text)
        self.exc = exc
        return self

    def error(self, backend: str) -> Exception:
        return self.exc(f"backend={backend!r} cannot run this call: {self}")
