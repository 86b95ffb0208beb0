"""Helpdesk write-back at delivery time: what the webhook dispatcher
(:mod:`triage.jobs.webhooks`) needs for an outbox row with a ``connector`` (queued by
:mod:`triage.contexts.writeback`): the connector's credentials, read from the settings when
the call is sent (tokens never enter the outbox), and the body to send (Chatwoot's labels
call reads the conversation's current labels first, so an agent's own labels survive).
"""

from __future__ import annotations

from typing import Any

import httpx

from triage.connectors import CONNECTORS
from triage.jobs.webhooks import DeliveryError


class HelpdeskAccess:
    """What the dispatcher needs for a write-back row, read at delivery time from the settings:
    the connector's credentials (tokens never enter the outbox) and the body to send."""

    def __init__(self, settings):
        self.settings = settings

    def headers(self, connector: str) -> dict[str, str]:
        token = getattr(self.settings, f"{connector}_api_token", "") if connector in CONNECTORS else ""
        if not token:
            raise DeliveryError(f"connector {connector!r} has no API token configured "
                                f"(TRIAGE_{connector.upper()}_API_TOKEN)")
        if connector == "chatwoot":
            return {"api_access_token": token}
        return {"Authorization": f"Token token={token}"}

    def body(self, connector: str, url: str, payload: dict[str, Any], get) -> dict[str, Any]:
        """The stored body, except for Chatwoot's labels call, which replaces all of a
        conversation's labels: the labels it has now (read just before) that are not ours
        are kept, so an agent's own labels survive."""
        if connector != "chatwoot" or not url.endswith("/labels"):
            return payload
        try:
            response = get(url)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"reading the conversation's labels failed: {exc.__class__.__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"reading the conversation's labels failed: HTTP {response.status_code}: "
                                f"{response.text[:200]}")
        try:
            current = response.json().get("payload", [])
        except (ValueError, AttributeError):
            raise DeliveryError("reading the conversation's labels failed: not a JSON object") from None
        prefix = self.settings.chatwoot_tag_prefix
        ours = list(payload.get("labels", []))
        kept = [label for label in current if isinstance(label, str) and not label.startswith(prefix)
                and label not in ours]
        return {**payload, "labels": kept + ours}
