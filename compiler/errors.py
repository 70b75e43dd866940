"""Define the errors the back end raises for models it cannot compile for a configuration."""

from __future__ import annotations

from ..errors import AccelError

__all__ = ["CompileError", "DoesNotFitError"]


class CompileError(AccelError):
    """Report a model the back end cannot compile, naming the node, its op and what the accelerator runs."""


class DoesNotFitError(CompileError):
    """Report a model whose program, weights or activations exceed the configuration's buffers.

    ``needs`` maps each buffer (``imem``, ``abuf``, ``wbuf``, ``pbuf``, ``accbuf``) to
    ``(bytes needed, bytes available)``.
    """

    def __init__(self, message: str, needs: dict[str, tuple[int, int]]):
        super().__init__(message)
        self.needs = needs
