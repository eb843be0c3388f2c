"""Business rules of the auth service. Functions take a database session and
never commit; the servicer owns the transaction."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from libs.config import RateLimit, Settings
from libs.db import Executor
from libs.errors import (
    AccountDisabled,
    Conflict,
    DomainError,
    EmailTaken,
    FieldViolation,
    InvalidArgument,
    InvalidCredentials,
    InvalidToken,
    NicknameTaken,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from libs.logs import get_logger
from libs.revocation import RevocationList
from libs.tokens import Audience, TokenSigner
from services.auth import repository
from services.auth.google import GoogleTokenVerifier
from services.auth.models import Admin, Session, User
from services.auth.outbox import USER_REGISTERED
from services.auth.passwords import PasswordHashing
from services.auth.repository import UserRecord

log = get_logger(__name__)

EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[A-Za-z]{2,63}$")
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 6
MAX_PASSWORD_LENGTH = 100
MAX_NAME_LENGTH = 100
MIN_ADMIN_PASSWORD_LENGTH = 12
MAX_LOOKUP_USERS = 500
REVOCATION_OVERLAP = timedelta(seconds=10)
ENDED_SESSION_RETENTION = timedelta(days=30)
NICKNAME_ATTEMPTS = 8
# What sign-in, refresh and every account read answer while an operator's
# status shuts the user out (services/auth/operators.py sets it).
DISABLED_MESSAGES = {
    "suspended": "This account is suspended. Contact support.",
    "banned": "This account is banned. Contact support.",
    "deleted": "This account was deleted.",
}
MIN_NICKNAME_LENGTH = 3
MAX_NICKNAME_LENGTH = 30
# ASCII only: a nickname is typed into URLs, and letters of other scripts
# that look like Latin ones would let one member pass as another.
NICKNAME_PATTERN = re.compile(
    rf"[A-Za-z0-9_-]{{{MIN_NICKNAME_LENGTH},{MAX_NICKNAME_LENGTH}}}"
)
# Names a member could use to pass as staff in the community.
RESERVED_NICKNAMES = frozenset(
    {"admin", "administrator", "moderator", "omnihub", "staff", "support", "system"}
)
MAX_BIO_LENGTH = 500
MAX_AVATAR_URL_LENGTH = 2048
# Line breaks and tabs are how a bio is laid out; other control characters
# (NUL above all, which PostgreSQL text cannot hold) have no place in one.
BIO_LAYOUT_CHARACTERS = frozenset("\n\r\t")
ADJECTIVES = (
    "Cosmic",
    "Stellar",
    "Neon",
    "Cyber",
    "Pixel",
    "Quantum",
    "Digital",
    "Electric",
    "Atomic",
    "Mystic",
    "Shadow",
    "Crystal",
    "Golden",
    "Silver",
)
NOUNS = (
    "Phoenix",
    "Dragon",
    "Wolf",
    "Falcon",
    "Tiger",
    "Raven",
    "Serpent",
    "Lion",
    "Eagle",
    "Panther",
    "Hawk",
    "Fox",
    "Bear",
    "Owl",
)


@dataclass(frozen=True)
class ClientInfo:
    ip_address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    session_id: uuid.UUID


@dataclass(frozen=True)
class SignedIn:
    tokens: IssuedTokens
    user: User
    created: bool = False
    # The outbox event a new account set off, to deliver right after commit.
    outbox_event_id: int | None = None


@dataclass(frozen=True)
class AdminSignedIn:
    access_token: str
    expires_in: int
    admin: Admin
    session_id: uuid.UUID


@dataclass(frozen=True)
class RefreshOutcome:
    """Either new tokens, or an error to report after the transaction commits
    (a reused token revokes its session, and that must stick)."""

    tokens: IssuedTokens | None = None
    error: DomainError | None = None


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _validate_registration(email: str, password: str, name: str) -> None:
    violations = []
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.match(email):
        violations.append(FieldViolation("email", "Enter a valid e-mail address."))
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        violations.append(
            FieldViolation(
                "password",
                f"The password must be {MIN_PASSWORD_LENGTH} to "
                f"{MAX_PASSWORD_LENGTH} characters long.",
            )
        )
    if not name.strip() or len(name) > MAX_NAME_LENGTH:
        violations.append(
            FieldViolation(
                "name", f"Enter a name of 1 to {MAX_NAME_LENGTH} characters."
            )
        )
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))


@dataclass(frozen=True)
class ProfileUpdate:
    """What a user asked to change about themselves. None leaves a field as
    it is; an empty bio or avatar URL removes it."""

    name: str | None = None
    nickname: str | None = None
    bio: str | None = None
    avatar_url: str | None = None
    is_public_profile: bool | None = None


def _has_control_characters(text: str, allowed: frozenset[str] = frozenset()) -> bool:
    return any(
        unicodedata.category(char) == "Cc" and char not in allowed for char in text
    )


def _name_violation(name: str) -> FieldViolation | None:
    if not name or len(name) > MAX_NAME_LENGTH:
        return FieldViolation(
            "name", f"Enter a name of 1 to {MAX_NAME_LENGTH} characters."
        )
    if _has_control_characters(name):
        return FieldViolation("name", "A name cannot contain control characters.")
    return None


def _nickname_violation(nickname: str) -> FieldViolation | None:
    if NICKNAME_PATTERN.fullmatch(nickname):
        return None
    return FieldViolation(
        "nickname",
        f"A nickname has {MIN_NICKNAME_LENGTH} to {MAX_NICKNAME_LENGTH} "
        "characters: letters A-Z, digits, '_' or '-'.",
    )


def _bio_violation(bio: str) -> FieldViolation | None:
    if len(bio) > MAX_BIO_LENGTH:
        return FieldViolation("bio", f"A bio has at most {MAX_BIO_LENGTH} characters.")
    if _has_control_characters(bio, BIO_LAYOUT_CHARACTERS):
        return FieldViolation(
            "bio", "A bio cannot contain control characters other than line breaks."
        )
    return None


def _avatar_url_violation(url: str) -> FieldViolation | None:
    """Only https: the URL is shown to other members' browsers, which must not
    be sent to plain http, javascript: or data: addresses."""
    message = (
        f"The avatar must be an https:// URL of at most "
        f"{MAX_AVATAR_URL_LENGTH} characters."
    )
    if len(url) > MAX_AVATAR_URL_LENGTH or any(
        char.isspace() or unicodedata.category(char) == "Cc" for char in url
    ):
        return FieldViolation("avatar_url", message)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed [IPv6] host
        return FieldViolation("avatar_url", message)
    if parts.scheme != "https" or not host:
        return FieldViolation("avatar_url", message)
    if parts.username is not None or parts.password is not None:
        return FieldViolation(
            "avatar_url", "The avatar URL must not contain a user name or password."
        )
    return None


def _profile_columns(update: ProfileUpdate) -> repository.ProfileColumns:
    """The columns to write for `update`, or InvalidArgument naming every
    field that is not acceptable. Text is trimmed first."""
    columns: repository.ProfileColumns = {}
    violations: list[FieldViolation | None] = []
    if update.name is not None:
        columns["name"] = update.name.strip()
        violations.append(_name_violation(columns["name"]))
    if update.nickname is not None:
        columns["nickname"] = update.nickname.strip()
        violations.append(_nickname_violation(columns["nickname"]))
    if update.bio is not None:
        bio = update.bio.strip()
        violations.append(_bio_violation(bio))
        columns["bio"] = bio or None
    if update.avatar_url is not None:
        url = update.avatar_url.strip()
        violations.append(_avatar_url_violation(url) if url else None)
        columns["avatar_url"] = url or None
    if update.is_public_profile is not None:
        columns["is_public_profile"] = update.is_public_profile
    found = tuple(v for v in violations if v is not None)
    if found:
        raise InvalidArgument(found[0].message, violations=found)
    return columns


def _random_nickname() -> str:
    return (
        secrets.choice(ADJECTIVES)
        + secrets.choice(NOUNS)
        + str(secrets.randbelow(10000))
    )


class AuthService:
    def __init__(
        self,
        settings: Settings,
        signer: TokenSigner,
        passwords: PasswordHashing,
        google: GoogleTokenVerifier,
        revocations: RevocationList,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._passwords = passwords
        self._google = google
        self._revocations = revocations

    # Throttling runs in its own transaction, before the attempt, so that
    # failed attempts count too.

    async def throttle(
        self, db: AsyncSession, action: str, **subjects: str | None
    ) -> None:
        limits = {
            "address": self._settings.auth_rate_limit_address,
            "account": self._settings.auth_rate_limit_account,
        }
        for kind, subject in subjects.items():
            if subject:
                await self._take(db, f"{action}:{kind}:{subject}", limits[kind])

    async def _take(self, db: AsyncSession, key: str, limit: RateLimit) -> None:
        wait = await repository.take_rate_token(
            db,
            key[:320],
            timedelta(seconds=limit.interval_seconds),
            timedelta(seconds=limit.period_seconds),
        )
        if wait is not None:
            log.info("auth.rate_limited", bucket=key.split(":", 2)[:2])
            raise RateLimited(retry_after=max(wait, 1.0))

    # Accounts

    async def register(
        self, db: AsyncSession, email: str, password: str, name: str, client: ClientInfo
    ) -> SignedIn:
        email = normalize_email(email)
        _validate_registration(email, password, name)
        password_hash = await self._passwords.hash(password)
        user = await self._insert_user(
            db, email=email, name=name.strip(), password_hash=password_hash
        )
        event_id = await repository.add_outbox_event(
            db, USER_REGISTERED, {"user_id": str(user.id)}
        )
        tokens = await self._open_user_session(db, user, client)
        log.info("user.registered", user_id=str(user.id), provider="email")
        return SignedIn(tokens, user, created=True, outbox_event_id=event_id)

    async def _insert_user(
        self,
        db: AsyncSession,
        *,
        email: str,
        name: str,
        password_hash: str | None,
        google_id: str | None = None,
        avatar_url: str | None = None,
    ) -> User:
        for _ in range(NICKNAME_ATTEMPTS):
            user = await repository.insert_user(
                db,
                email=email,
                name=name,
                nickname=_random_nickname(),
                password_hash=password_hash,
                google_id=google_id,
                avatar_url=avatar_url,
                auth_provider="google" if google_id else "email",
            )
            if user is not None:
                return user
            if await repository.email_exists(db, email):
                raise EmailTaken()
        raise Conflict("Could not create the account. Try again.")

    async def login(
        self, db: AsyncSession, email: str, password: str, client: ClientInfo
    ) -> SignedIn:
        user = await repository.user_by_email(db, normalize_email(email))
        if user is None:
            await self._passwords.burn_time(password)
            raise InvalidCredentials()
        verification = await self._passwords.verify(user.password_hash, password)
        if not verification.ok:
            raise InvalidCredentials()
        self._require_active(user)
        if verification.upgraded_hash:
            await repository.set_password_hash(db, user.id, verification.upgraded_hash)
        tokens = await self._open_user_session(db, user, client)
        return SignedIn(tokens, user)

    async def google_sign_in(
        self, db: AsyncSession, credential: str, client: ClientInfo
    ) -> SignedIn:
        identity = await self._google.verify(credential)
        if not identity.email_verified:
            raise InvalidToken("Google has not verified this e-mail address.")
        created = False
        event_id = None
        user = await repository.user_by_google_id(db, identity.subject)
        if user is None:
            email = normalize_email(identity.email)
            existing = await repository.user_by_email(db, email)
            if existing is not None:
                user = await repository.link_google(
                    db, existing.id, identity.subject, identity.picture
                )
                log.info("user.google_linked", user_id=str(user.id))
            else:
                name = (identity.name or email.split("@")[0] or "User")[
                    :MAX_NAME_LENGTH
                ]
                user = await self._insert_user(
                    db,
                    email=email,
                    name=name,
                    password_hash=None,
                    google_id=identity.subject,
                    avatar_url=identity.picture,
                )
                created = True
                event_id = await repository.add_outbox_event(
                    db, USER_REGISTERED, {"user_id": str(user.id)}
                )
                log.info("user.registered", user_id=str(user.id), provider="google")
        self._require_active(user)
        tokens = await self._open_user_session(db, user, client)
        return SignedIn(tokens, user, created, event_id)

    async def me(self, db: AsyncSession, user_id: str) -> User:
        parsed = parse_uuid(user_id)
        user = await repository.user_by_id(db, parsed) if parsed else None
        if user is None:
            raise Unauthenticated("This account no longer exists.")
        self._require_active(user)
        return user

    async def me_record(self, db: Executor, user_id: str) -> UserRecord:
        """The same as `me`, read without the ORM for the every-page GetMe."""
        parsed = parse_uuid(user_id)
        user = await repository.user_record(db, parsed) if parsed else None
        if user is None:
            raise Unauthenticated("This account no longer exists.")
        self._require_active(user)
        return user

    async def lookup_users(
        self, db: AsyncSession, user_ids: list[str], email: str
    ) -> list[User]:
        if len(user_ids) > MAX_LOOKUP_USERS:
            raise InvalidArgument.for_field(
                "user_ids", f"Ask for at most {MAX_LOOKUP_USERS} users at a time."
            )
        found: list[User] = []
        parsed = [uid for uid in map(parse_uuid, user_ids) if uid is not None]
        if parsed:
            found.extend(await repository.users_by_ids(db, parsed))
        if email:
            user = await repository.user_by_email(db, normalize_email(email))
            if user is not None and user not in found:
                found.append(user)
        return found

    # Profiles: always the caller's own account.

    async def update_profile(
        self, db: AsyncSession, user_id: str, update: ProfileUpdate
    ) -> User:
        user = await self.me(db, user_id)
        columns = _profile_columns(update)
        if not columns:
            return user
        nickname = columns.get("nickname")
        if nickname is not None and nickname.lower() in RESERVED_NICKNAMES:
            raise NicknameTaken()
        updated = await repository.update_profile(db, user.id, columns)
        if updated is None:
            raise NicknameTaken()
        log.info("profile.updated", user_id=str(user.id), fields=sorted(columns))
        return updated

    async def regenerate_nickname(self, db: AsyncSession, user_id: str) -> User:
        user = await self.me(db, user_id)
        for _ in range(NICKNAME_ATTEMPTS):
            nickname = _random_nickname()
            if nickname.lower() == user.nickname.lower():
                continue
            updated = await repository.update_profile(
                db, user.id, {"nickname": nickname}
            )
            if updated is not None:
                log.info("profile.nickname_regenerated", user_id=str(user.id))
                return updated
        raise Conflict("Could not find a free nickname. Try again.")

    @staticmethod
    def _require_active(user: User | UserRecord) -> None:
        if user.status != "active":
            raise AccountDisabled(
                DISABLED_MESSAGES.get(user.status, AccountDisabled.default_message)
            )

    # Sessions

    async def _open_user_session(
        self, db: AsyncSession, user: User, client: ClientInfo
    ) -> IssuedTokens:
        session = await repository.insert_session(
            db,
            lifetime=timedelta(seconds=self._settings.refresh_token_expiry),
            user_id=user.id,
            user_agent=client.user_agent,
            ip_address=client.ip_address,
        )
        refresh_token = secrets.token_urlsafe(32)
        await repository.insert_refresh_token(
            db, session.id, hash_refresh_token(refresh_token)
        )
        return self._tokens(
            user.id, user.email, session, refresh_token, session.created_at
        )

    def _tokens(
        self,
        user_id: uuid.UUID,
        email: str,
        session: Session,
        refresh_token: str,
        now: datetime,
    ) -> IssuedTokens:
        lifetime = self._settings.access_token_expiry
        access_token = self._signer.issue(
            Audience.USER,
            str(user_id),
            lifetime,
            session_id=str(session.id),
            email=email,
        )
        return IssuedTokens(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=lifetime,
            refresh_expires_in=max(0, int((session.expires_at - now).total_seconds())),
            session_id=session.id,
        )

    async def refresh(
        self, db: AsyncSession, refresh_token: str, client: ClientInfo
    ) -> RefreshOutcome:
        token_hash = hash_refresh_token(refresh_token)
        claimed = await repository.claim_refresh_token(db, token_hash)
        if claimed is not None:
            return await self._rotate(db, claimed.session_id, claimed.token_id, client)
        spent = await repository.spent_refresh_token(db, token_hash)
        if spent is None:
            return RefreshOutcome(
                error=InvalidToken("This refresh token is not valid.")
            )
        now = await repository.database_now(db)
        grace = timedelta(seconds=self._settings.refresh_reuse_grace)
        if not spent.successor_used and now - spent.used_at <= grace:
            # Two tabs refreshing with one token at the same moment.
            return await self._rotate(db, spent.session_id, spent.token_id, client)
        revoked = await repository.revoke_sessions(
            db, "refresh_token_reuse", session_id=spent.session_id
        )
        self._remember_revoked(revoked)
        log.warning("session.refresh_token_reused", session_id=str(spent.session_id))
        return RefreshOutcome(
            error=InvalidToken("This refresh token was already used. Sign in again.")
        )

    async def _rotate(
        self,
        db: AsyncSession,
        session_id: uuid.UUID,
        parent_id: uuid.UUID,
        client: ClientInfo,
    ) -> RefreshOutcome:
        session = await repository.live_session(db, session_id)
        if session is None or session.user_id is None:
            return RefreshOutcome(error=await self._ended_session_error(db, session_id))
        user = await repository.user_by_id(db, session.user_id)
        if user is None:
            return RefreshOutcome(error=InvalidToken("This account no longer exists."))
        try:
            self._require_active(user)
        except AccountDisabled as error:
            return RefreshOutcome(error=error)
        refresh_token = secrets.token_urlsafe(32)
        await repository.insert_refresh_token(
            db, session_id, hash_refresh_token(refresh_token), parent_id=parent_id
        )
        await repository.touch_session(
            db, session_id, client.user_agent, client.ip_address
        )
        now = await repository.database_now(db)
        return RefreshOutcome(
            tokens=self._tokens(user.id, user.email, session, refresh_token, now)
        )

    async def _ended_session_error(
        self, db: AsyncSession, session_id: uuid.UUID
    ) -> DomainError:
        """Why a session cannot be refreshed: the account's status when an
        operator shut the user out (which also ended the session), else that
        it has ended."""
        session = await db.get(Session, session_id)
        user = (
            await repository.user_by_id(db, session.user_id)
            if session is not None and session.user_id is not None
            else None
        )
        if user is not None and user.status in ("suspended", "banned"):
            return AccountDisabled(DISABLED_MESSAGES[user.status])
        return InvalidToken("Your session has ended. Sign in again.")

    async def logout(self, db: AsyncSession, refresh_token: str) -> None:
        session_id = await repository.session_for_token(
            db, hash_refresh_token(refresh_token)
        )
        if session_id is not None:
            self._remember_revoked(
                await repository.revoke_sessions(db, "logout", session_id=session_id)
            )

    async def logout_all(self, db: AsyncSession, user_id: str) -> int:
        parsed = parse_uuid(user_id)
        if parsed is None:
            return 0
        revoked = await repository.revoke_sessions(db, "logout_all", user_id=parsed)
        self._remember_revoked(revoked)
        return len(revoked)

    async def list_sessions(self, db: AsyncSession, user_id: str) -> list[Session]:
        parsed = parse_uuid(user_id)
        return await repository.active_user_sessions(db, parsed) if parsed else []

    async def revoke_session(
        self, db: AsyncSession, user_id: str, session_id: str
    ) -> None:
        owner, target = parse_uuid(user_id), parse_uuid(session_id)
        revoked = []
        if owner is not None and target is not None:
            revoked = await repository.revoke_sessions(
                db, "revoked_by_user", session_id=target, user_id=owner
            )
        if not revoked:
            raise NotFound("No such session.")
        self._remember_revoked(revoked)

    def _remember_revoked(self, session_ids: list[uuid.UUID]) -> None:
        # This process learns at once; the others through the feed.
        for session_id in session_ids:
            self._revocations.add(str(session_id))

    async def revoked_since(
        self, db: AsyncSession, since: datetime | None
    ) -> tuple[list[uuid.UUID], datetime]:
        if since is None:
            now = await repository.database_now(db)
            longest = max(
                self._settings.access_token_expiry, self._settings.admin_token_expiry
            )
            since = now - timedelta(seconds=longest + 60)
        return await repository.revoked_since(db, since, REVOCATION_OVERLAP)

    async def purge_ended_sessions(self, db: AsyncSession) -> int:
        purged = await repository.purge_ended_sessions(db, ENDED_SESSION_RETENTION)
        await repository.purge_idle_rate_buckets(db)
        return purged

    # Operators

    async def admin_login(
        self, db: AsyncSession, username: str, password: str, client: ClientInfo
    ) -> AdminSignedIn:
        admin = await repository.admin_by_username(db, username.strip().lower())
        if admin is None:
            await self._passwords.burn_time(password)
            raise InvalidCredentials("The username or password is not correct.")
        verification = await self._passwords.verify(admin.password_hash, password)
        if not verification.ok:
            raise InvalidCredentials("The username or password is not correct.")
        if admin.disabled:
            raise AccountDisabled("This operator account is disabled.")
        if verification.upgraded_hash:
            await repository.set_admin_password_hash(
                db, admin.id, verification.upgraded_hash
            )
        lifetime = self._settings.admin_token_expiry
        session = await repository.insert_session(
            db,
            lifetime=timedelta(seconds=lifetime),
            admin_id=admin.id,
            user_agent=client.user_agent,
            ip_address=client.ip_address,
        )
        token = self._signer.issue(
            Audience.ADMIN,
            str(admin.id),
            lifetime,
            session_id=str(session.id),
            role=admin.role,
        )
        log.info("admin.signed_in", admin_id=str(admin.id))
        return AdminSignedIn(token, lifetime, admin, session.id)


async def ensure_admin(
    db: AsyncSession,
    passwords: PasswordHashing,
    username: str,
    password: str,
    role: str = "superadmin",
) -> bool:
    """Create an operator account if the username is free; True if created."""
    if len(password) < MIN_ADMIN_PASSWORD_LENGTH:
        raise InvalidArgument.for_field(
            "ADMIN_PASSWORD",
            f"The admin password needs {MIN_ADMIN_PASSWORD_LENGTH}+ characters.",
        )
    password_hash = await passwords.hash(password)
    return await repository.insert_admin(
        db, username.strip().lower(), password_hash, role
    )


async def admin_count(db: AsyncSession) -> int:
    return await repository.admin_count(db)
