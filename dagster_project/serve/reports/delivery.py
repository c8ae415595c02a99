"""E-mail delivery of rendered reports over SMTP, to per-organization recipient lists, never twice.

Settings (environment; nothing secret in the repo):
- BOTFLOW_SMTP_HOST (unset: reports are saved, not sent), BOTFLOW_SMTP_PORT (587),
  BOTFLOW_SMTP_SECURITY (starttls | ssl | none; default starttls), BOTFLOW_SMTP_USER,
  BOTFLOW_SMTP_PASSWORD, BOTFLOW_REPORT_SENDER (From:, default reports@botflow.local);
- BOTFLOW_REPORT_RECIPIENTS: a TOML file (default $BOTFLOW_HOME/report_recipients.toml), e.g.
      platform = ["ops@example.com"]
      [organizations]
      "Acme Corp" = ["ceo@acme.example"]        # by organization name or id
"""

from __future__ import annotations

import smtplib
import ssl
import tomllib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import psycopg

from dagster_project.core.settings import ConfigError, botflow_home, setting

SECURITY = ("starttls", "ssl", "none")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    user: str | None
    password: str | None
    sender: str

    @classmethod
    def from_env(cls) -> SmtpSettings | None:
        host = setting("BOTFLOW_SMTP_HOST").strip()
        if not host:
            return None
        port_text = setting("BOTFLOW_SMTP_PORT")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"BOTFLOW_SMTP_PORT={port_text!r} is not a TCP port")
        security = setting("BOTFLOW_SMTP_SECURITY").lower()
        if security not in SECURITY:
            raise ConfigError(f"BOTFLOW_SMTP_SECURITY={security!r}: choose one of {', '.join(SECURITY)}")
        return cls(host, int(port_text), security, setting("BOTFLOW_SMTP_USER") or None,
                   setting("BOTFLOW_SMTP_PASSWORD") or None, setting("BOTFLOW_REPORT_SENDER"))

    def send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp_class = smtplib.SMTP_SSL if self.security == "ssl" else smtplib.SMTP
        kwargs = {"context": context} if self.security == "ssl" else {}
        try:
            with smtp_class(self.host, self.port, timeout=30, **kwargs) as smtp:
                if self.security == "starttls":
                    smtp.starttls(context=context)
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {self.host}:{self.port} ({self.security}) failed: {exc!r}; "
                                "check BOTFLOW_SMTP_HOST / _PORT / _SECURITY / _USER / _PASSWORD") from exc


class DeliveryError(Exception):
    """Sending failed; the message names the SMTP settings to check. The step retries."""


@dataclass(frozen=True)
class Recipients:
    platform: list[str] = field(default_factory=list)
    organizations: dict[str, list[str]] = field(default_factory=dict)  # name or id -> addresses

    @classmethod
    def load(cls, path: Path | None = None) -> Recipients:
        if path is None:
            path = Path(setting("BOTFLOW_REPORT_RECIPIENTS") or botflow_home() / "report_recipients.toml")
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"BOTFLOW_REPORT_RECIPIENTS={path}: not valid TOML ({exc})") from exc
        platform, orgs = data.get("platform", []), data.get("organizations", {})
        if not _addresses(platform) or not isinstance(orgs, dict) or not all(_addresses(v) for v in orgs.values()):
            raise ConfigError(f"BOTFLOW_REPORT_RECIPIENTS={path}: expected platform = [addresses] and "
                              "[organizations] \"name or id\" = [addresses]")
        return cls(list(platform), {str(k): list(v) for k, v in orgs.items()})

    def for_report(self, name: str, organization_id: str | None) -> list[str]:
        if organization_id is None:
            return self.platform
        return self.organizations.get(organization_id) or self.organizations.get(name) or []


def _addresses(value) -> bool:
    return isinstance(value, list) and all(isinstance(a, str) and "@" in a for a in value)


def build_message(sender: str, recipients: list[str], subject: str, html: Path, pdf: Path) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, ", ".join(recipients), subject
    message["Message-ID"] = make_msgid(domain="botflow.local")
    message.set_content(f"{subject}\n\nThe report is attached as PDF; the HTML version is the alternative part.\n")
    message.add_alternative(html.read_text(encoding="utf-8"), subtype="html")
    message.add_attachment(pdf.read_bytes(), maintype="application", subtype="pdf", filename=pdf.name)
    return message


@dataclass(frozen=True)
class Delivery:
    scope_key: str
    status: str  # sent | already sent | no recipients | smtp not configured
    recipients: tuple[str, ...] = ()


def deliver_once(conn: psycopg.Connection, smtp: SmtpSettings, kind: str, period_start, scope_key: str,
                 recipients: list[str], subject: str, html: Path, pdf: Path) -> Delivery:
    """Send unless reports.deliveries says it was sent; record it in the same transaction as the lock."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"report:{kind}:{period_start}:{scope_key}",))
        if conn.execute("select 1 from reports.deliveries where report_kind = %s and period_start = %s "
                        "and scope_key = %s", (kind, period_start, scope_key)).fetchone():
            return Delivery(scope_key, "already sent", tuple(recipients))
        message = build_message(smtp.sender, recipients, subject, html, pdf)
        smtp.send(message)
        conn.execute("insert into reports.deliveries (report_kind, period_start, scope_key, recipients, message_id) "
                     "values (%s, %s, %s, %s, %s)", (kind, period_start, scope_key, recipients, message["Message-ID"]))
    return Delivery(scope_key, "sent", tuple(recipients))
