"""Deterministic, realistic Clarky data with every quirk the spec warns about.

One seed gives the same records on every machine: both ``emails`` shapes, prefixed and UUID
ids, seconds and millisecond timestamps, unicode and emoji, quotes, backslashes and newlines,
very long notes, hostile ``custom_fields`` keys with mixed value types, sparse records and
occasional unknown extra fields.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Records are created within the three years before this instant.
EPOCH_END = datetime(2026, 11, 1, tzinfo=timezone.utc)
HISTORY = timedelta(days=3 * 365)

FIRST_NAMES = [
    "Ada",
    "Grace",
    "José",
    "Zoë",
    "Ørjan",
    "Łukasz",
    "美咲",
    "Özlem",
    "Siobhán",
    "Nguyễn",
    "O'Brien",
]
LAST_NAMES = ["Lovelace", "Hopper", "Muñoz", 'Smith "Smitty"', "Back\\slash", "Ångström", "Θεοδωρίδης", "Ng"]
COMPANY_WORDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Ünïcorn", "Café"]
INDUSTRIES = ["software", "retail", "health", "finance", "education", None]
TAGS = ["vip", "newsletter", "trial", "enterprise", "émoji-🎉", "churn-risk"]
LEAD_SOURCES = ["website", "referral", "ads", "event", None]
HOSTILE_KEYS = [
    "Favourite colour",
    "plan.tier",
    'quote"key',
    "'; DROP TABLE contacts; --",
    '"; DROP TABLE contacts; --',
    "x" * 70,
    "ünïcödé 🎉",
    "back\\slash",
    "",
]
ACTIVITY_TYPES = ["note", "call", "meeting", "video_call", "task", "todo", "reminder"]
STAGE_NAMES = ["Lead", "Qualified", "Proposal", "Negotiation", "Closed Won", "Closed Lost"]


def format_api_timestamp(
    value: datetime, rng: random.Random | None = None, *, millis: bool | None = None
) -> str:
    """Render a timestamp the way Clarky does: seconds-only ``Z`` or milliseconds ``.000Z``."""
    if millis is None:
        millis = rng.random() < 0.5 if rng else True
    if millis:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RecordFactory:
    """Makes records of every resource from one seeded random stream."""

    seed: int = 42
    workspace_id: str = "w_01HWORKSPACE0000000000000"

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.contacts_made = 0

    def make_id(self, prefix: str | None, uuid_share: float = 0.0) -> str:
        rng = self.rng
        if rng.random() < uuid_share:
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        body = "01H" + "".join(rng.choice(CROCKFORD) for _ in range(23))
        return f"{prefix}_{body}" if prefix else body

    def timestamp_between(self, start: datetime, end: datetime) -> datetime:
        span = max(0.0, (end - start).total_seconds())
        moment = start + timedelta(seconds=self.rng.uniform(0, span))
        # keep the API's precision: whole milliseconds
        return moment.replace(microsecond=(moment.microsecond // 1000) * 1000)

    def text(self, low: int = 5, high: int = 40) -> str:
        rng = self.rng
        words = [
            "lorem",
            "ipsum",
            "naïve",
            "café",
            "🎉",
            "日本語",
            'say "hi"',
            "it's",
            "tab\there",
            "line\nbreak",
            "C:\\path\\to",
            "\x01\x02\x1b[31mbinary-looking\x1b[0m\x7f\u00ff",
        ]
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    def hostile_custom_fields(self) -> dict[str, Any]:
        rng = self.rng
        values: list[Any] = [
            rng.randint(-(10**12), 10**12),
            round(rng.uniform(-1e6, 1e6), rng.randint(0, 9)),
            rng.random() < 0.5,
            None,
            ["a", 1, None, {"nested": True}],
            {"deep": {"deeper": ["x", 2.5]}},
            "2026-03-01",
            "multi\nline \"quoted\" 'text' \\ 🎉",
        ]
        return {key: rng.choice(values) for key in rng.sample(HOSTILE_KEYS, rng.randint(0, 4))}

    def emails(self, first: str) -> list[Any]:
        rng = self.rng
        count = rng.choice([0, 1, 1, 1, 2, 3])
        addresses = [f"{first.lower()}.{rng.randint(1, 10**6)}@example{i}.com" for i in range(count)]
        if rng.random() < 0.3:
            return addresses  # quickstart shape: plain strings
        primary = rng.randrange(count) if count and rng.random() < 0.8 else None
        return [{"email": a, "is_primary": i == primary} for i, a in enumerate(addresses)]

    def phone_numbers(self) -> list[Any]:
        rng = self.rng
        numbers = [f"+1555{rng.randint(1000000, 9999999)}" for _ in range(rng.choice([0, 1, 1, 2]))]
        if numbers and rng.random() < 0.1:
            return numbers
        return [{"phone_number": n, "is_primary": i == 0} for i, n in enumerate(numbers)]

    def contact(self, *, bot_ids: list[str], company_ids: list[str], stage_ids: list[str]) -> dict[str, Any]:
        rng = self.rng
        created = self.timestamp_between(EPOCH_END - HISTORY, EPOCH_END)
        updated = self.timestamp_between(created, EPOCH_END)
        first = rng.choice(FIRST_NAMES)
        notes: str | None = None
        roll = rng.random()
        if roll < 0.002:
            notes = "long note 📝 " + "x" * 100_000
        elif roll < 0.5:
            notes = self.text()
        record: dict[str, Any] = {
            "id": self.make_id("c", uuid_share=0.15),
            "workspace_id": self.workspace_id,
            "bot_id": rng.choice(bot_ids),
            "first_name": first if rng.random() < 0.95 else None,
            "last_name": rng.choice(LAST_NAMES),
            "emails": self.emails(first),
            "phone_numbers": self.phone_numbers(),
            "company": rng.choice(COMPANY_WORDS) if rng.random() < 0.7 else None,
            "company_id": rng.choice(company_ids) if company_ids and rng.random() < 0.6 else None,
            "job_title": rng.choice(["CEO", "Engineer", 'Head of "Growth"', None]),
            "lead_source": rng.choice(LEAD_SOURCES),
            "tags": rng.sample(TAGS, rng.randint(0, 3)),
            "deal_value": rng.choice([None, round(rng.uniform(0, 1e6), 2), 0.1 + 0.2, 1e15 + 0.5, -0.0001]),
            "pipeline_stage_id": rng.choice(stage_ids) if stage_ids and rng.random() < 0.5 else None,
            "contact_type": rng.choice(["lead", "customer", None]),
            "address_line1": "1 Main St" if rng.random() < 0.5 else None,
            "address_line2": None,
            "city": rng.choice(["Zürich", "São Paulo", "Kraków", None]),
            "state": None,
            "postal_code": rng.choice(["8001", "01310-100", None]),
            "country": rng.choice(["CH", "BR", "PL", "US", None]),
            "linkedin_url": None,
            "notes": notes,
            "custom_fields": self.hostile_custom_fields(),
            "last_contacted_at": format_api_timestamp(updated, rng) if rng.random() < 0.5 else None,
            "created_at": format_api_timestamp(created, rng),
            "updated_at": format_api_timestamp(updated, rng),
        }
        if rng.random() < 0.05:  # sparse, like the quickstart example
            for name in ("workspace_id", "phone_numbers", "custom_fields", "address_line2", "state"):
                record.pop(name, None)
        if rng.random() < 0.02:  # the API grows fields without notice
            record["x_engagement_score"] = round(rng.random(), 4)
        if self.contacts_made % 100 == 0:  # numbers no 64-bit integer or double holds exactly
            record.setdefault("custom_fields", {})["huge"] = [
                123456789012345678901234567890,
                0.1234567890123456789,
            ]
        self.contacts_made += 1
        return record

    def updated_copy(self, record: dict[str, Any], now: datetime) -> dict[str, Any]:
        """The same contact after an edit in the CRM: new values and a fresh ``updated_at``."""
        changed = dict(record)
        changed["job_title"] = self.rng.choice(["CTO", "VP Sales", "Ünïcorn wrangler 🦄"])
        changed["tags"] = self.rng.sample(TAGS, self.rng.randint(0, 3))
        changed["updated_at"] = format_api_timestamp(now, millis=True)
        return changed

    def company(self, bot_ids: list[str]) -> dict[str, Any]:
        rng = self.rng
        created = self.timestamp_between(EPOCH_END - HISTORY, EPOCH_END)
        name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(['Inc', 'GmbH', 'S.A.', 'Ltd'])}"
        return {
            "id": self.make_id("co"),
            "workspace_id": self.workspace_id,
            "bot_id": rng.choice(bot_ids),
            "name": name,
            "domain": f"{name.split()[0].lower()}{rng.randint(1, 999)}.com",
            "website": None,
            "industry": rng.choice(INDUSTRIES),
            "company_size": rng.choice(["1-10", "50-200", None]),
            "company_type": None,
            "employee_count": rng.choice([None, rng.randint(1, 100000)]),
            "annual_revenue": rng.choice([None, round(rng.uniform(0, 1e9), 2)]),
            "description": self.text() if rng.random() < 0.3 else None,
            "emails": self.emails("info"),
            "phone_numbers": self.phone_numbers(),
            "tags": rng.sample(TAGS, rng.randint(0, 2)),
            "total_deal_value": rng.choice([None, round(rng.uniform(0, 1e6), 2)]),
            "pipeline_stage_id": None,
            "address_line1": None,
            "address_line2": None,
            "city": rng.choice(["Zürich", "Austin", None]),
            "state": None,
            "postal_code": None,
            "country": "US",
            "linkedin_url": None,
            "notes": None,
            "custom_fields": self.hostile_custom_fields(),
            "last_activity_at": None,
            "created_at": format_api_timestamp(created, rng),
            "updated_at": format_api_timestamp(self.timestamp_between(created, EPOCH_END), rng),
        }

    def agent(self, number: int) -> dict[str, Any]:
        agent_id = self.make_id("b")
        return {
            "id": agent_id,
            "workspace_id": self.workspace_id,
            "name": f"Agent {number} 🤖",
            "slug": f"agent-{number}",
            "summary": None,
            "is_agent": number % 2 == 0,
            "enabled": True,
            "public": number == 0,
            "agent_role": self.rng.choice(["sales", "support"]),
            "agent_type": self.rng.choice(["internal", "external", "both"]),
            "agent_status": None,
            "agent_color": "#0586ff",
            "agent_email": f"{agent_id}@inbound.clarky.ai",
            "agent_phone": None,
            "chat_greeting": "Hi! How can I help?",
            "chat_avatar_intro": None,
            "chat_avatar_image_url": None,
            "phone_greeting": None,
        }

    def pipeline(self, bot_id: str, number: int) -> dict[str, Any]:
        created = self.timestamp_between(EPOCH_END - HISTORY, EPOCH_END)
        return {
            "id": self.make_id("p"),
            "workspace_id": self.workspace_id,
            "bot_id": bot_id,
            "name": f"Pipeline {number}",
            "is_default": number == 0,
            "is_private": number == 2,
            "created_at": format_api_timestamp(created, millis=True),
            "updated_at": format_api_timestamp(created, millis=True),
        }

    def stage(self, pipeline: dict[str, Any], index: int) -> dict[str, Any]:
        return {
            "id": self.make_id("ps"),
            "bot_id": pipeline["bot_id"],
            "pipeline_id": pipeline["id"],
            "name": STAGE_NAMES[index % len(STAGE_NAMES)],
            "color": "#0586ff",
            "order_index": index,
            "created_at": pipeline["created_at"],
            "updated_at": pipeline["updated_at"],
        }

    def form(self, bot_id: str, number: int) -> dict[str, Any]:
        created = self.timestamp_between(EPOCH_END - HISTORY, EPOCH_END)
        return {
            "id": self.make_id("f"),
            "workspace_id": self.workspace_id,
            "bot_id": bot_id,
            "name": f"Form {number}",
            "description": None,
            "standard_fields": {"first_name": {"enabled": True, "required": True}},
            "custom_fields": self.hostile_custom_fields(),
            "survey_questions": {"q1": {"label": "How did you hear about us?"}},
            "created_at": format_api_timestamp(created, millis=True),
            "updated_at": format_api_timestamp(created, millis=True),
        }

    def submission(self, form_id: str, contact_ids: list[str]) -> dict[str, Any]:
        rng = self.rng
        return {
            "id": self.make_id(None, uuid_share=1.0),
            "form_id": form_id,
            "contact_id": rng.choice(contact_ids) if contact_ids and rng.random() < 0.8 else None,
            "custom_field_responses": self.hostile_custom_fields(),
            "is_internal": False,
            "submitted_at": format_api_timestamp(self.timestamp_between(EPOCH_END - HISTORY, EPOCH_END), rng),
        }

    def activity(self, contact: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        kind = rng.choice(ACTIVITY_TYPES)
        return {
            "id": self.make_id(None, uuid_share=1.0),
            "contact_id": contact["id"],
            "company_id": contact.get("company_id"),
            "activity_type": kind,
            "title": self.text(1, 5),
            "description": self.text() if rng.random() < 0.5 else None,
            "due_date": format_api_timestamp(EPOCH_END, rng)
            if kind in ("task", "todo", "reminder")
            else None,
            "duration_minutes": rng.choice([15, 30, 45.5])
            if kind in ("call", "meeting", "video_call")
            else None,
            "completed_at": None,
            "metadata": {"attendees": ["a@example.com"], "recording": None},
            "created_at": format_api_timestamp(self.timestamp_between(EPOCH_END - HISTORY, EPOCH_END), rng),
        }

    def conversation(self, bot_id: str, contact_ids: list[str], number: int) -> dict[str, Any]:
        """A conversation made some time in the history; its message times are the store's to set."""
        rng = self.rng
        deleted = number % 10 == 3  # one in ten soft-deleted, hidden from default lists
        created = self.timestamp_between(EPOCH_END - HISTORY, EPOCH_END)
        return {
            "id": self.make_id(None, uuid_share=1.0),
            "bot_id": bot_id,
            "contact_id": rng.choice(contact_ids) if contact_ids and rng.random() < 0.7 else None,
            "type": rng.choice([1, 2, 3, 4, 5]),
            "email": None,
            "phone_number": "+15550001111" if rng.random() < 0.3 else None,
            "human": rng.choice([*FIRST_NAMES, None]),
            "human_takeover": rng.random() < 0.1,
            "assigned_to": None,
            "assigned_at": None,
            "active": rng.random() < 0.2,
            "archived": rng.choice([True, False, None]),
            "archived_at": None,
            "deleted": True if deleted else rng.choice([False, None]),
            "created_at": format_api_timestamp(created, millis=True),
        }

    def message(self, conversation_id: str, index: int, started: datetime = EPOCH_END) -> dict[str, Any]:
        """The ``index``-th message of a conversation that started at ``started`` (7 minutes apart)."""
        return {
            "id": self.make_id(None, uuid_share=1.0),
            "conversation_id": conversation_id,
            "role": "assistant" if index % 2 else "user",
            "content": self.text(1, 12),
            "created_at": format_api_timestamp(started + timedelta(minutes=7 * index), millis=True),
        }
