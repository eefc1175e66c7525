"""LiveKit access tokens: the JWTs that authorise calls to LiveKit's server API.

A token is an HS256 JWT whose issuer (``iss``) is the API key and whose signature is made with
the API secret, as :class:`livekit.api.AccessToken` mints it. byeline verifies it with
:class:`livekit.api.TokenVerifier` (PyJWT underneath): signature, issuer, ``exp`` required,
``nbf``, one minute of leeway, exactly as LiveKit's server does. The grants each method needs
are LiveKit's (``livekit-server`` ``pkg/service/auth.go``):

* ``ListRooms``: ``video.roomList``; ``DeleteRoom``: ``video.roomCreate``;
* the participant methods: ``video.roomAdmin`` for the request's ``room``;
* every ``livekit.SIP`` method byeline serves: ``sip.admin``.

A request without a token, or with an expired, unsigned, wrongly signed or foreign-key token is
``unauthenticated`` (HTTP 401); a valid token without the grant is ``permission_denied`` (403).
LiveKit answers a request without any token with ``permission_denied``; byeline says
``unauthenticated``, which names the actual problem. Both are refusals.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from livekit.api.access_token import Claims, TokenVerifier

from .twirp import TwirpError

__all__ = [
    "ApiKeys",
    "TokenCheck",
    "require_room_admin",
    "require_room_create",
    "require_room_list",
    "require_sip_admin",
]

log = logging.getLogger("byeline.livekit")

#: LiveKit's server warns about secrets shorter than this.
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class ApiKeys:
    """One LiveKit API key and its secret."""

    key: str
    secret: str = ""

    def __repr__(self) -> str:  # never print the secret
        return f"ApiKeys(key={self.key!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiKeys | None:
        """``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET``, or ``None`` when either is unset."""
        env = os.environ if environ is None else environ
        key = env.get("LIVEKIT_API_KEY", "").strip()
        secret = env.get("LIVEKIT_API_SECRET", "").strip()
        if not key or not secret:
            return None
        return cls(key, secret)


class TokenCheck:
    """Verifies the ``Authorization: Bearer <jwt>`` of a request; ``None`` keys refuse all."""

    def __init__(self, keys: ApiKeys | None) -> None:
        self.keys = keys
        self._verifier = TokenVerifier(keys.key, keys.secret) if keys is not None else None
        if keys is not None and len(keys.secret) < MIN_SECRET_LENGTH:
            log.warning(
                "LIVEKIT_API_SECRET is shorter than %d characters: tokens signed with it can "
                "be brute-forced (LiveKit's server warns the same)",
                MIN_SECRET_LENGTH,
            )

    def claims(self, authorization: str | None) -> Claims:
        """The verified claims of the request's token; TwirpError ``unauthenticated`` if none."""
        if self._verifier is None:
            raise TwirpError(
                "unauthenticated",
                "byeline has no LiveKit API key: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
            )
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TwirpError("unauthenticated", "missing authorization header (Bearer token)")
        try:
            return self._verifier.verify(token)
        except jwt.ExpiredSignatureError:
            raise TwirpError("unauthenticated", "invalid token: token has expired") from None
        except jwt.InvalidIssuerError:
            raise TwirpError("unauthenticated", "invalid token: unknown API key") from None
        except jwt.InvalidTokenError as exc:
            raise TwirpError("unauthenticated", f"invalid token: {exc}") from None
        except (TypeError, ValueError) as exc:  # grants of the wrong shape
            raise TwirpError("unauthenticated", f"invalid token: bad claims ({exc})") from None


def _denied(what: str) -> TwirpError:
    return TwirpError("permission_denied", f"permissions denied: token needs {what}")


def require_room_list(claims: Claims) -> None:
    """``ListRooms`` needs ``video.roomList``."""
    if not (claims.video and claims.video.room_list):
        raise _denied("video grant roomList")


def require_room_create(claims: Claims) -> None:
    """``DeleteRoom`` (and ``CreateRoom``) need ``video.roomCreate``."""
    if not (claims.video and claims.video.room_create):
        raise _denied("video grant roomCreate")


def require_room_admin(claims: Claims, room: str) -> None:
    """Participant methods need ``video.roomAdmin`` for exactly this room."""
    video = claims.video
    if not (video and video.room_admin):
        raise _denied("video grant roomAdmin")
    if video.room != room:
        raise _denied(f"video grant roomAdmin for room {room!r} (token is for {video.room!r})")


def require_sip_admin(claims: Claims) -> None:
    """Trunk and dispatch rule methods need ``sip.admin``."""
    if not (claims.sip and claims.sip.admin):
        raise _denied("sip grant admin")
