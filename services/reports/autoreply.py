"""RFC 3834 automatic replies: vacation notices and other auto-responders."""

from __future__ import annotations

import re
from email.message import Message

from services.reports.fields import address_in
from services.reports.model import Recipient, Report

_VACATION_SUBJECT = re.compile(
    r"(?:\[[^\]]{0,40}\][ \t]*)?(?:out of (?:the )?office|automatic reply"
    r"|auto(?:matic)?[- ]?(?:reply|response|answer)|autoreply|autorespon|auto:"
    r"|vacation(?![a-z])|away from (?:the )?office|on leave(?![a-z])|on holiday(?![a-z])"
    r"|abwesen|automatische antwort|außer haus|ausser haus|urlaub(?![a-z])"
    r"|réponse automatique|reponse automatique|absence(?![a-z])|absent du bureau|en congé"
    r"|respuesta automática|respuesta automatica|fuera de la oficina|ausente|de vacaciones"
    r"|risposta automatica|fuori (?:sede|ufficio)|assente|in ferie"
    r"|automatisch antwoord|afwezig|niet aanwezig|op vakantie"
    r"|resposta automática|resposta automatica|ausência|fora do escritório"
    r"|autosvar|frånvaro|fravær|automaattinen vastaus|poissa"
    r"|automatyczna odpowiedź|nieobecn|automatická odpověď|nepřítomn"
    r"|otomatik yan\u0131t|ofis d\u0131\u015f\u0131"
    r"|автоответ|автоматический ответ|нет в офисе|отпуск"
    r"|自動返信|不在|自动回复|自動回覆|休假|자동 응답|부재)",
    re.IGNORECASE,
)


def auto_submitted(msg: Message) -> str | None:
    value = msg.get("Auto-Submitted")
    if value is None:
        return None
    return str(value)[:100].split(";")[0].strip().lower() or None


def is_auto_reply(msg: Message, *, subject: str | None) -> bool:
    """RFC 3834's markers, the de-facto X- headers, or a vacation subject."""
    marker = auto_submitted(msg)
    if marker and marker != "no":
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponse"):
        return True
    precedence = str(msg.get("Precedence") or "")[:40].strip().lower()
    if precedence == "auto_reply":
        return True
    # A subject alone: only at its start ("Automatic reply: ...", "Abwesenheitsnotiz: ..."),
    # where a person's "Re: vacation plans" never puts it.
    return bool(subject and _VACATION_SUBJECT.match(subject[:300].strip()))


def read(msg: Message, *, from_email: str | None, original_message_id: str | None) -> Report:
    email = address_in(from_email)
    return Report(
        kind="auto_reply",
        recipients=[Recipient(email=email)] if email else [],
        original_message_id=original_message_id,
    )
