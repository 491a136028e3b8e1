"""Domain exceptions. Each carries what the API needs (status, code) and what the worker's
retry policy needs (transient or permanent, Retry-After). Messages never contain secrets."""

from __future__ import annotations


class PostroomError(Exception):
    status_code = 500
    code = "internal_error"
    transient = False

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.retry_after = retry_after


class BadRequest(PostroomError):
    """The request could not be read."""

    status_code = 400
    code = "bad_request"


class NotificationOutOfWindow(BadRequest):
    """A signed notification whose `time` is too old (a replay) or too far in the future."""

    code = "notification_out_of_window"


class Unauthorized(PostroomError):
    """Missing or invalid credentials."""

    status_code = 401
    code = "unauthorized"


class InvalidSignature(Unauthorized):
    """The webhook signature is missing or does not match the body."""

    code = "invalid_signature"


class NotFound(PostroomError):
    """Not found."""

    status_code = 404
    code = "not_found"


class ThumbnailNotAvailable(NotFound):
    """The attachment has no thumbnail (not an image, refused, or not made yet)."""

    code = "thumbnail_not_available"


class Conflict(PostroomError):
    """The request conflicts with an earlier one."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(PostroomError):
    """The request body is over the limit."""

    status_code = 413
    code = "payload_too_large"


class ValidationFailed(PostroomError):
    """The request is not valid."""

    status_code = 422
    code = "validation_error"


class AccountLimitReached(ValidationFailed):
    """The tenant already has as many accounts as it may have."""

    code = "account_limit_reached"


class RuleLimitReached(ValidationFailed):
    """The account already has as many rules as it may have."""

    code = "rule_limit_reached"


class TemplateLimitReached(ValidationFailed):
    """The tenant already has as many templates as it may have."""

    code = "template_limit_reached"


class StorageQuotaExceeded(ValidationFailed):
    """The tenant's drafts, scheduled sends and uploads would pass its byte quota."""

    code = "storage_quota_exceeded"


class RateLimited(PostroomError):
    """Over a request or send budget; `retry_after` says when the next one fits."""

    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(PostroomError):
    """A dependency is unavailable; retry later."""

    status_code = 503
    code = "service_unavailable"
    transient = True


class PermissionDenied(PostroomError):
    """The target does not belong to the caller's tenant (a task-side check; the API says 404)."""

    status_code = 404
    code = "not_found"


class TransientError(PostroomError):
    """A temporary failure: worth retrying with backoff."""

    status_code = 503
    code = "temporary_failure"
    transient = True


class ProviderTemporaryError(TransientError):
    """The mail provider failed temporarily (rate limit, 5xx, timeout, broken answer)."""

    code = "provider_temporary_error"


class ProviderPermanentError(PostroomError):
    """The mail provider refused the request for good."""

    status_code = 502
    code = "provider_error"


class ProviderNotFound(ProviderPermanentError):
    """The provider does not know this object."""

    code = "provider_not_found"


class BadCredentials(ProviderPermanentError):
    """The provider refused the account's credentials."""

    code = "bad_credentials"


# SQLSTATE classes: 08 connection exception, 57P operator intervention (shutdown, restart).
_GONE_SQLSTATES = ("08", "57P")


def database_gone(exc: BaseException | None) -> bool:
    """The driver error (or its cause) says the database went away or is not accepting yet."""
    return _sqlstate_in(exc, _GONE_SQLSTATES)


# SQLSTATE class 40, transaction rollback: a deadlock (40P01) or serialization failure
# (40001); and a statement cancelled by statement_timeout (57014) or lock_timeout (55P03),
# e.g. a second sync of an account waiting on the account's thread lock behind a slow batch
# on a loaded host. The transaction goes back whole either way, so running it again is safe.
_ROLLED_BACK_SQLSTATES = ("40", "57014", "55P03")


def transaction_rolled_back(exc: BaseException | None) -> bool:
    """The driver error (or its cause) is a deadlock, a serialization failure or a timeout."""
    return _sqlstate_in(exc, _ROLLED_BACK_SQLSTATES)


def _sqlstate_in(exc: BaseException | None, prefixes: tuple[str, ...]) -> bool:
    seen = 0
    while exc is not None and seen < 4:
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and state.startswith(prefixes):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False
