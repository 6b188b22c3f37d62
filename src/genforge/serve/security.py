"""What keeps a studio safe to run: a token on every request when it listens beyond this machine, bounded
request bodies, and images decoded only when they are what they claim and of a sane size.

The token is checked on every HTTP request (the page, static files, the API, event streams) as
``Authorization: Bearer TOKEN``, or a ``?token=TOKEN`` query (which also sets an HttpOnly cookie, so the
page's images and event streams carry it without putting it in every URL), or that cookie.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from PIL import Image

from genforge.errors import ConfigError, DataError

COOKIE = "genforge_token"
MAX_BODY = 16 * 1024 * 1024  # bytes of one request: uploads and masks included
MAX_UPLOAD = 8 * 1024 * 1024  # bytes of one image file
MAX_PIXELS = 16_000_000  # width x height of an image the studio decodes (a 4000 x 4000 photo)
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF"}
MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"BM", b"GIF87a", b"GIF89a")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Listening beyond this machine needs a token (anyone on the network could train and read otherwise)."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"--host {host} makes the studio reachable from other machines; add --token SECRET "
                          f"(every request must then carry it), or keep the default --host 127.0.0.1")
    if token is not None and len(token) < 8:
        raise ConfigError("--token must be at least 8 characters")


async def _reply(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class TokenGate:
    """ASGI middleware: every HTTP request carries the token, or gets 401."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        bearer = headers.get("authorization", "")
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookie = SimpleCookie()
        given = [bearer[7:] if bearer.lower().startswith("bearer ") else None, query,
                 cookie[COOKIE].value if COOKIE in cookie else None]
        if not any(g is not None and secrets.compare_digest(g.encode(), self.token.encode()) for g in given):
            return await _reply(send, 401, "this studio needs its token: open the page as /?token=TOKEN, or send "
                                           "'Authorization: Bearer TOKEN'")
        if query is None:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):  # a token in the URL becomes a cookie for what the page loads next
            if message["type"] == "http.response.start":
                value = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", value.encode())]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, announced or not."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    return await _reply(send, 400, "Content-Length is not a number")
                if too_big:
                    return await _reply(send, 413, f"the request is larger than {self.limit // 2**20} MiB")
        seen, over, started = 0, False, False

        async def counted():  # a body without a length: counted as it comes, cut off once over the limit
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading; the 413 is sent below
            return message

        async def watched(message):
            nonlocal started
            if over:
                return  # whatever the app makes of a cut-off body, the answer is the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _reply(send, 413, f"the request is larger than {self.limit // 2**20} MiB")


def decode_image(data: bytes, what: str = "the image") -> Image.Image:
    """An uploaded image, decoded safely: a known format by its first bytes, at most ``MAX_UPLOAD`` bytes and
    ``MAX_PIXELS`` pixels (checked from the header, before any pixel is decoded), fully loaded."""
    if len(data) > MAX_UPLOAD:
        raise DataError(f"{what} is {len(data) / 2**20:.1f} MiB; at most {MAX_UPLOAD // 2**20} MiB")
    if not data.startswith(MAGIC):
        raise DataError(f"{what} is not a PNG, JPEG, WebP, BMP or GIF file")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in IMAGE_FORMATS:
            raise DataError(f"{what} is a {img.format} file; expected PNG, JPEG, WebP, BMP or GIF")
        width, height = img.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise DataError(f"{what} is {width}x{height} pixels; at most {MAX_PIXELS:,} pixels")
        img.load()
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{what} decompresses to too many pixels") from None
    except Exception as e:  # Pillow raises many kinds on a corrupt file
        raise DataError(f"{what} cannot be decoded ({type(e).__name__}); expected a valid image file") from None
    return img


def decode_data_url(text: str, what: str = "the mask") -> bytes:
    """The bytes of a ``data:image/png;base64,...`` URL (what a canvas gives) or of plain base64."""
    if not isinstance(text, str):
        raise DataError(f"{what} must be a base64 string or a data: URL")
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise DataError(f"{what} must be a base64 data: URL (data:image/png;base64,...)")
    if len(text) > MAX_UPLOAD * 4 // 3 + 4:
        raise DataError(f"{what} is larger than {MAX_UPLOAD // 2**20} MiB")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{what} is not valid base64") from None


def png_of(img: Image.Image) -> bytes:
    """An uploaded image as a plain PNG (its own metadata dropped), RGB or grayscale."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "RGBA", "PA") else img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
