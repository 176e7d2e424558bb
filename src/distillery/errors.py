"""The one error tree of distillery.

Every error carries what OpenAI's error envelope needs (HTTP status, ``type``, ``code``, ``param``),
so the HTTP edge maps any of them to ``{"error": {...}}`` in one place and the CLI prints the message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DistilleryError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(DistilleryError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class AuthenticationError(DistilleryError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(DistilleryError):
    status = 403
    type = "invalid_request_error"
    default_code = "insufficient_permissions"


class NotFoundError(DistilleryError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ConflictError(DistilleryError):
    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(DistilleryError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaTypeError(DistilleryError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class UnprocessableError(DistilleryError):
    status = 422
    type = "invalid_request_error"


class RateLimitError(DistilleryError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(DistilleryError):
    """The provider could not be reached or failed (502)."""

    status = 502
    type = "upstream_error"
    default_code = "bad_gateway"


class UpstreamTimeoutError(DistilleryError):
    status = 504
    type = "upstream_error"
    default_code = "gateway_timeout"


class UpstreamStatusError(DistilleryError):
    """An upstream 4xx passed through with its own status, type and message."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self._status = status
        self._type = type or "invalid_request_error"

    @property  # type: ignore[override]
    def status(self) -> int:  # type: ignore[override]
        return self._status

    @property  # type: ignore[override]
    def type(self) -> str:  # type: ignore[override]
        return self._type


class ServiceUnavailableError(DistilleryError):
    status = 503
    type = "server_error"
    default_code = "service_unavailable"


class ConfigError(DistilleryError):
    """The configuration is invalid; raised at start-up or by the CLI."""

    status = 500
    type = "server_error"
    default_code = "config_error"
