"""Browser security headers on every response, and the API docs page served without a CDN.

The Content-Security-Policy allows scripts, styles, images and connections from the studio
itself only: no inline script, no inline style attribute, no eval, no framing. Pages keep to
that: behaviour lives in static/js, sizes set from data-* attributes by studio.js, and htmx is
told not to inject its indicator styles (see templates/base.html).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import get_settings

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # data: for the small SVG icons Swagger UI's stylesheet embeds; blob: for downloads.
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
        "interest-cohort",
    )
)
#: One year; no includeSubDomains, since other hosts of the same domain are not the studio's.
HSTS = "max-age=31536000"


def security_headers(https: bool) -> list[tuple[bytes, bytes]]:
    """The headers every response carries; HSTS only when the studio's public URL is https."""
    headers = [
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"permissions-policy", PERMISSIONS_POLICY.encode()),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if https:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


class SecurityHeadersMiddleware:
    """Adds `security_headers` to every HTTP response (a route's own value is replaced)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        public = get_settings().PUBLIC_URL or ""
        extra = security_headers(public.lower().startswith("https://"))
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = kept + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from /static/vendor (installed from npm at setup), started by a
    static script instead of FastAPI's inline one, so the page runs under the CSP."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} · API",
            swagger_js_url="/static/vendor/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui.css",
            swagger_favicon_url="/static/vendor/swagger-favicon-32x32.png",
        )
        body = bytes(page.body).decode()
        start = body.rfind("<script>")
        end = body.find("</script>", start)
        if start == -1 or end == -1:
            raise RuntimeError("FastAPI's Swagger UI page changed shape; see app/headers.py")
        starter = '<script src="/static/js/swagger-init.js"></script>'
        return HTMLResponse(body[:start] + starter + body[end + len("</script>") :])
