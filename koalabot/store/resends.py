"""A resend that is a retry: the same words again, after the answer to them failed.

When the model server is down the person is told their message is kept and may be retried;
many simply send it again. Stored as a second user turn, the thread (and so the next prompt and
every export) would hold ``USER: hello? USER: hello? GPT:``. So a message is taken as a retry
of the person's previous message in the thread when it has the same words (whitespace at the
ends aside) and every answer to that message failed or was interrupted, the latest one
included. Nothing new is stored for it: the earlier message gets another answer, as 🔄 would.

Trade-off: only the person's own latest message counts, and only once it has a failed answer.
A resend while the first answer is still on its way (or before it was tried) is a second turn:
telling "sent twice by mistake" from "asked again on purpose" is not something the words say.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from koalabot.store.models import Message

#: Answer statuses after which the same words again mean "try again".
RETRYABLE = frozenset({"failed", "interrupted"})


def resent_message(conn: Connection, conversation_id: int, author: str, text: str) -> int | None:
    """The id of ``author``'s latest message in the conversation, if ``text`` repeats it and
    its answers all failed (or were interrupted); None when ``text`` is a new turn."""
    m = Message
    latest = conn.execute(
        select(m.id, m.text)
        .where(m.conversation_id == conversation_id, m.role == "user", m.author == author)
        .order_by(m.id.desc())
        .limit(1)
    ).first()
    if latest is None or latest[1].strip() != text.strip():
        return None
    answers = conn.execute(
        select(m.status).where(m.parent_id == latest[0]).order_by(m.id.desc())
    ).scalars()
    statuses = list(answers)
    if statuses and RETRYABLE.issuperset(statuses):
        return int(latest[0])
    return None


__all__ = ["RETRYABLE", "resent_message"]
