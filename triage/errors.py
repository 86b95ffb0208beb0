"""Domain errors. Adapters map them to their own vocabulary (``api/errors.py`` to HTTP).

Every error carries a message a user can act on.
"""

from __future__ import annotations


class TriageError(Exception):
    """Base class for every error the core raises on purpose."""


class InvalidInput(TriageError):
    """Input that can never succeed as given (empty text, too long, wrong type)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class NotFound(TriageError):
    """The referenced message, case, model version or user does not exist."""


class Conflict(TriageError):
    """The request clashes with current state (a second reviewer, an illegal transition)."""


class Unauthorized(TriageError):
    """Missing or wrong credentials."""


class Forbidden(TriageError):
    """Valid credentials without the needed scope or role."""


class ModelError(TriageError):
    """A model cannot be trained, loaded or used (missing, foreign or corrupt files)."""


class PolicyError(TriageError):
    """The SLA/escalation policy file is malformed."""


class Unavailable(TriageError):
    """A dependency (database) is down; the request may be retried safely."""


class TooManyAttempts(Unauthorized):
    """Too many failed log-ins for this user name or address: wait ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after
