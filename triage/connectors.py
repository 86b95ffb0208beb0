"""Inbound helpdesk connectors: signature checks and payload mapping, as pure functions.

Chatwoot and Zammad send their own webhooks (signed their own way); this module checks the
signature and turns one delivery into either a message for :meth:`TriageService.ingest`
plus the helpdesk references write-back needs (account, conversation or ticket, contact),
or an :class:`Ignored` with the reason (an agent's reply, a private note, another event).
Any other helpdesk is mapped by a declarative :class:`FieldMap` of JSON pointers.

No web framework here: the routes in ``api/routes_connectors.py`` parse, call, render.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from triage.errors import InvalidInput, Unauthorized

CONNECTORS = ("chatwoot", "zammad")


@dataclass(frozen=True)
class Mapped:
    """A delivery to triage: ``message`` is a MessageIn body, ``refs`` what write-back needs."""

    message: dict[str, Any]
    thread: str | None = None  # the conversation / ticket the helpdesk labels
    refs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ignored:
    """A valid delivery that is not a customer's complaint (answered 200, nothing stored)."""

    reason: str


# ----------------------------------------------------------------------------- signatures


def _hex_signature(header: str | None, scheme: str) -> str:
    if not header:
        raise Unauthorized(f"missing signature header ({scheme}=<hex>)")
    prefix, _, digest = header.strip().partition("=")
    if prefix.lower() != scheme or not digest:
        raise Unauthorized(f"signature header must look like {scheme}=<hex>")
    return digest.strip().lower()


def verify_chatwoot(secret: str, body: bytes, signature: str | None, timestamp: str | None,
                    max_skew_s: float = 300, now: float | None = None) -> None:
    """Chatwoot signs ``<X-Chatwoot-Timestamp>.<raw body>`` with HMAC-SHA256 and the webhook's
    secret (``X-Chatwoot-Signature: sha256=<hex>``). A timestamp further than ``max_skew_s``
    from our clock is refused, so a captured delivery cannot be replayed later."""
    if not secret:
        raise Unauthorized("the chatwoot connector has no webhook secret configured")
    digest = _hex_signature(signature, "sha256")
    if not timestamp or not timestamp.strip().isdigit():
        raise Unauthorized("missing or malformed X-Chatwoot-Timestamp (unix seconds)")
    skew = abs((now if now is not None else time.time()) - int(timestamp))
    if skew > max_skew_s:
        raise Unauthorized(f"X-Chatwoot-Timestamp is {int(skew)} s away from our clock (limit {int(max_skew_s)} s)")
    expected = hmac.new(secret.encode(), timestamp.strip().encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest):
        raise Unauthorized("X-Chatwoot-Signature does not match the body and the connector's secret")


def verify_zammad(secret: str, body: bytes, signature: str | None) -> None:
    """Zammad signs the raw body with HMAC-SHA1 and the webhook's signature token
    (``X-Hub-Signature: sha1=<hex>``). It sends no timestamp: a replay is harmless because
    ingestion is idempotent on the article id."""
    if not secret:
        raise Unauthorized("the zammad connector has no webhook secret configured")
    digest = _hex_signature(signature, "sha1")
    expected = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    if not hmac.compare_digest(expected, digest):
        raise Unauthorized("X-Hub-Signature does not match the body and the connector's secret")


# ----------------------------------------------------------------------------- helpers


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object, got {type(value).__name__}", field=where)
    return value


def _ident(value: Any, where: str, required: bool = True) -> str | None:
    """An id as text: ints and non-empty strings; anything else is an error naming ``where``."""
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{where} is missing", field=where)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(f"{where} must be a number or a string, got {type(value).__name__}", field=where)
    return str(value)


def _timestamp(value: Any) -> str | None:
    """An ISO 8601 time with offset (or unix seconds) as ISO text; None when absent or unusable
    (the case then counts from receipt, which is the later and safer moment)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, timezone.utc).isoformat()
        except (OverflowError, ValueError, OSError):  # beyond the representable years, or NaN
            return None
    if isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment.isoformat() if moment.tzinfo is not None else None
    return None


class _TextOnly(HTMLParser):
    BREAKS = {"br", "p", "div", "li", "tr", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    lines = (re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _snake(channel_type: str | None) -> str | None:
    """``Channel::WebWidget`` -> ``web_widget``."""
    if not channel_type:
        return None
    name = str(channel_type).split("::")[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()[:64] or None


# ----------------------------------------------------------------------------- Chatwoot


def from_chatwoot(payload: Any) -> Mapped | Ignored:
    """A Chatwoot ``message_created`` delivery: only a customer's public incoming message is
    triaged; the message id is the external id, the conversation is the thread."""
    payload = _object(payload, "body")
    event = payload.get("event")
    if event != "message_created":
        return Ignored(f"event {event!r} is not message_created")
    if payload.get("message_type") != "incoming":
        return Ignored(f"message_type {payload.get('message_type')!r} is not incoming (only customers' messages are triaged)")
    if payload.get("private"):
        return Ignored("a private note")
    sender = payload.get("sender") if isinstance(payload.get("sender"), dict) else {}
    if sender.get("type") not in (None, "contact"):
        return Ignored(f"sender type {sender.get('type')!r} is not a contact")
    message_id = _ident(payload.get("id"), "id")
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidInput(f"content must be a string, got {type(content).__name__}", field="content")
    if not content or not content.strip():
        return Ignored("no text content (an attachment or an empty message)")
    conversation = _object(payload.get("conversation"), "conversation")
    account = _object(payload.get("account"), "account")
    conversation_id = _ident(conversation.get("id"), "conversation.id")
    account_id = _ident(account.get("id"), "account.id")
    contact = payload.get("contact") if isinstance(payload.get("contact"), dict) else {}
    meta = conversation.get("meta") if isinstance(conversation.get("meta"), dict) else {}
    meta_sender = meta.get("sender") if isinstance(meta.get("sender"), dict) else {}
    contact_id = _ident(contact.get("id") or sender.get("id") or meta_sender.get("id"), "contact.id", required=False)
    inbox = payload.get("inbox") if isinstance(payload.get("inbox"), dict) else {}
    message = {
        "source": "chatwoot",
        "external_id": message_id,
        "text": content,
        "channel": _snake(conversation.get("channel")),
        "customer_ref": contact_id,
        "received_at": _timestamp(payload.get("created_at")),
    }
    refs = {
        "account_id": account_id,
        "conversation_id": conversation_id,
        "contact_id": contact_id,
        "inbox_id": _ident(inbox.get("id") or conversation.get("inbox_id"), "inbox.id", required=False),
    }
    return Mapped({k: v for k, v in message.items() if v is not None}, f"{account_id}/{conversation_id}", refs)


# ----------------------------------------------------------------------------- Zammad


def from_zammad(payload: Any) -> Mapped | Ignored:
    """A Zammad trigger webhook (``ticket`` and ``article``): only a customer's article that is
    not internal is triaged; the article id is the external id, the ticket is the thread."""
    payload = _object(payload, "body")
    ticket = _object(payload.get("ticket"), "ticket")
    article = payload.get("article")
    if not article:
        return Ignored("no article (a trigger on a ticket change without a new article)")
    article = _object(article, "article")
    sender = article.get("sender")
    if isinstance(sender, dict):
        sender = sender.get("name")
    if sender != "Customer":
        return Ignored(f"article sender {sender!r} is not Customer")
    if article.get("internal"):
        return Ignored("an internal article")
    article_id = _ident(article.get("id"), "article.id")
    ticket_id = _ident(ticket.get("id"), "ticket.id")
    body = article.get("body")
    if body is not None and not isinstance(body, str):
        raise InvalidInput(f"article.body must be a string, got {type(body).__name__}", field="article.body")
    text = html_to_text(body) if body and "html" in str(article.get("content_type") or "") else (body or "")
    if not text.strip():
        subject = article.get("subject") or ticket.get("title")
        text = subject if isinstance(subject, str) else ""
    if not text.strip():
        return Ignored("no text content (an attachment or an empty article)")
    article_type = article.get("type")
    if isinstance(article_type, dict):
        article_type = article_type.get("name")
    customer_id = _ident(ticket.get("customer_id") or article.get("created_by_id"), "ticket.customer_id", required=False)
    message = {
        "source": "zammad",
        "external_id": article_id,
        "text": text,
        "channel": str(article_type)[:64] if isinstance(article_type, str) and article_type else None,
        "customer_ref": customer_id,
        "received_at": _timestamp(article.get("created_at")),
    }
    refs = {
        "ticket_id": ticket_id,
        "ticket_number": _ident(ticket.get("number"), "ticket.number", required=False),
        "article_id": article_id,
        "customer_id": customer_id,
    }
    return Mapped({k: v for k, v in message.items() if v is not None}, ticket_id, refs)


# ----------------------------------------------------------------------------- generic


class FieldMap(BaseModel):
    """Where a helpdesk's webhook keeps each field, as JSON pointers (RFC 6901): text and
    external id are required; channel, customer, product, received_at and thread optional."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="e.g. /ticket/description")
    external_id: str = Field(description="e.g. /ticket/id")
    channel: str | None = None
    customer: str | None = None
    product: str | None = None
    received_at: str | None = None
    thread: str | None = Field(default=None, description="the conversation or ticket, kept as a reference")

    @field_validator("*")
    @classmethod
    def _is_pointer(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not value.startswith("/"):
            raise ValueError(f"{value!r} is not a JSON pointer (it must start with '/')")
        return value


_MISSING = object()


def json_pointer(document: Any, pointer: str) -> Any:
    """The value ``pointer`` names in ``document``, or ``_MISSING``; ``~1`` is ``/``, ``~0`` is ``~``."""
    if pointer == "":
        return document
    value = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            if token not in value:
                return _MISSING
            value = value[token]
        elif isinstance(value, list):
            if not token.isdigit() or int(token) >= len(value):
                return _MISSING
            value = value[int(token)]
        else:
            return _MISSING
    return value


def from_field_map(source: str, fields: FieldMap, payload: Any) -> Mapped:
    """Any helpdesk's webhook through its field map; a missing required field is a 422 that
    names the pointer."""

    def pick(name: str, required: bool = False) -> Any:
        pointer = getattr(fields, name)
        if pointer is None:
            return None
        value = json_pointer(payload, pointer)
        if value is _MISSING or value is None:
            if required:
                raise InvalidInput(f"{name}: nothing at {pointer!r} in the payload", field=name)
            return None
        return value

    text = pick("text", required=True)
    if not isinstance(text, str):
        raise InvalidInput(f"text: the value at {fields.text!r} must be a string, got {type(text).__name__}",
                           field="text")
    external_id = _ident(pick("external_id", required=True), "external_id")
    optional = {name: _ident(pick(name), name, required=False) for name in ("channel", "customer", "product", "thread")}
    message = {
        "source": source,
        "external_id": external_id,
        "text": text,
        "channel": optional["channel"],
        "customer_ref": optional["customer"],
        "received_at": _timestamp(pick("received_at")),
    }
    refs = {"product": optional["product"], "thread": optional["thread"]}
    return Mapped({k: v for k, v in message.items() if v is not None}, optional["thread"],
                  {k: v for k, v in refs.items() if v is not None})
