"""The review desk's log-in: user name and password (argon2, :mod:`triage.contexts.accounts`),
a session cookie, log-out, and a redirect to the log-in page for anyone without a session.

Thin: parse the form, call one accounts function, render a small page from the message
catalogue (Chinese unless the browser prefers English). The page loads nothing but itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import re

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from review_ui.messages import Translator, pick_language
from review_ui.render import esc
from triage.errors import TooManyAttempts, TriageError

COOKIE = "triage_desk"
FONT_STACK = ('"PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", '
              '"WenQuanYi Micro Hei", system-ui, sans-serif')
NOTICES = ("logged_out", "expired")
# The desk's pages may load from this server only (Gradio's page links a CDN script and
# preconnects to Google Fonts; on a mainland intranet those requests hang).
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' data: blob:; connect-src 'self'; "
       "frame-src 'self'; worker-src 'self' blob:; form-action 'self'; base-uri 'self'")
_FOREIGN = re.compile(
    r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>|<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>",
    re.IGNORECASE | re.DOTALL)


def local_only(page: str) -> str:
    """``page`` without script tags and links (preconnect, stylesheets) that point to another host."""
    return _FOREIGN.sub("", page)


def session_token(request: Any) -> str | None:
    """The desk session cookie of a Starlette or Gradio request."""
    cookies = getattr(request, "cookies", None) or {}
    return cookies.get(COOKIE)


def _page(tr: Translator, path: str, user: str = "", error: str = "", notice: str = "", status: int = 200) -> HTMLResponse:
    message = (f'<p class="error" id="login-error">{esc(error)}</p>' if error else "") + (
        f'<p class="notice" id="login-notice">{esc(notice)}</p>' if notice else "")
    body = f"""<!doctype html>
<html lang="{'zh-CN' if tr.language == 'zh' else 'en'}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(tr('login.title'))}</title>
<style>
body {{ font-family: {FONT_STACK}; background: #f3f4f6; margin: 0; }}
main {{ max-width: 360px; margin: 12vh auto; background: white; padding: 28px; border-radius: 10px;
       box-shadow: 0 1px 4px rgba(0,0,0,.1); }}
h1 {{ font-size: 1.3em; margin-top: 0; }}
label {{ display: block; margin: 14px 0 4px; }}
input {{ width: 100%; box-sizing: border-box; padding: 8px; font-size: 1em; border: 1px solid #d1d5db; border-radius: 6px; }}
button {{ margin-top: 18px; width: 100%; padding: 10px; font-size: 1em; background: #ea580c; color: white;
          border: 0; border-radius: 6px; cursor: pointer; }}
.error {{ color: #b91c1c; }} .notice {{ color: #047857; }} .hint {{ color: #6b7280; font-size: .85em; }}
nav {{ text-align: right; font-size: .85em; }}
</style></head><body><main>
<nav><a href="{esc(path)}/login?lang=zh">中文</a> · <a href="{esc(path)}/login?lang=en">English</a></nav>
<h1>{esc(tr('login.title'))}</h1>{message}
<form method="post" action="{esc(path)}/login">
<label for="username">{esc(tr('login.user'))}</label>
<input id="username" name="username" autocomplete="username" value="{esc(user)}" required autofocus>
<label for="password">{esc(tr('login.password'))}</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="lang" value="{esc(tr.language)}">
<button type="submit" id="login-btn">{esc(tr('login.submit'))}</button>
</form><p class="hint">{esc(tr('login.hint'))}</p></main></body></html>"""
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})


def install_login(app: FastAPI, get_context: Callable[[], Any], path: str = "/review") -> Callable[[Any], str | None]:
    """Add ``{path}/login`` and ``{path}/logout`` (before the UI is mounted, so they win) and a
    redirect of the UI's page to the log-in for requests without a session. Returns the
    ``auth_dependency`` Gradio calls on every request: the session's user name or None."""

    def timezone() -> str:
        return get_context().service.policy.timezone

    def translator(request: Request, lang: str | None = None) -> Translator:
        return Translator(pick_language(lang, request.headers.get("accept-language")), timezone())

    def current_user(request: Any) -> str | None:
        session = get_context().service.desk_session(session_token(request))
        return session.user if session else None

    @app.get(f"{path}/login", include_in_schema=False)
    def login_page(request: Request, lang: str | None = None, notice: str | None = None):
        tr = translator(request, lang)
        return _page(tr, path, notice=tr(f"login.{notice}") if notice in NOTICES else "")

    @app.post(f"{path}/login", include_in_schema=False)
    def login_submit(request: Request, username: str = Form(""), password: str = Form(""), lang: str = Form("")):
        tr = translator(request, lang or None)
        ip = request.client.host if request.client else "-"
        try:
            token, session = get_context().service.password_login(username, password, ip)
        except TooManyAttempts as exc:
            return _page(tr, path, username, tr("login.throttled", seconds=max(1, round(exc.retry_after))), status=429)
        except TriageError:
            return _page(tr, path, username, tr("login.failed"), status=401)
        if lang and session.language is None:  # a choice made on the log-in page sticks
            get_context().service.set_language(session.user, lang)
        response = RedirectResponse(f"{path}/", status_code=303)
        max_age = int((session.expires_at - get_context().service.core.now()).total_seconds())
        response.set_cookie(COOKIE, token, max_age=max_age, path=path, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https")
        return response

    @app.get(f"{path}/logout", include_in_schema=False)
    def logout(request: Request):
        get_context().service.logout(session_token(request))
        response = RedirectResponse(f"{path}/login?notice=logged_out", status_code=303)
        response.delete_cookie(COOKIE, path=path)
        return response

    @app.middleware("http")
    async def desk_page(request: Request, call_next):
        """The UI's page: to the log-in without a session; else Gradio's page without its
        links to other hosts, under a Content-Security-Policy that allows only this server."""
        if request.method != "GET" or request.url.path not in (path, f"{path}/"):
            return await call_next(request)
        if await run_in_threadpool(current_user, request) is None:
            notice = "?notice=expired" if session_token(request) else ""
            return RedirectResponse(f"{path}/login{notice}", status_code=303)
        response = await call_next(request)
        if not response.headers.get("content-type", "").startswith("text/html"):
            return response
        body = b"".join([chunk async for chunk in response.body_iterator]).decode("utf-8")
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        headers["Content-Security-Policy"] = CSP
        return HTMLResponse(local_only(body), status_code=response.status_code, headers=headers)

    return current_user
