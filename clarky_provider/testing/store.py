"""The emulator's in-memory data: every list in the API's (unsorted) order, pre-serialised.

Records are kept as dicts (the ground truth) beside their JSON bytes, so serving a page is a
byte join, not ``json.dumps`` of a hundred records. Filtered views are cached until the next
mutation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from clarky_provider.normalize import parse_timestamp
from clarky_provider.resources import RESOURCES, Resource
from clarky_provider.testing.data import RecordFactory, format_api_timestamp


def dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def epoch_of(value: Any) -> float | None:
    """Seconds since the epoch of an API timestamp (None when absent)."""
    moment = parse_timestamp(value)
    return moment.timestamp() if moment else None


@dataclass
class Collection:
    """One list endpoint's records (for child resources: one parent's records)."""

    order: list[str] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def put(self, record: dict[str, Any], position: int | None = None) -> None:
        record_id = record["id"]
        if record_id not in self.records:
            if position is None:
                self.order.append(record_id)
            else:
                self.order.insert(position, record_id)
        self.records[record_id] = record
        self.blobs[record_id] = dump(record)

    def remove(self, record_id: str) -> None:
        self.order.remove(record_id)
        del self.records[record_id]
        del self.blobs[record_id]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.records[i] for i in self.order)


@dataclass(frozen=True)
class DatasetSize:
    """How much data to generate; children scale with their parents."""

    contacts: int = 200
    companies: int | None = None
    agents: int = 3
    pipelines: int = 3
    stages_per_pipeline: int = 6
    forms: int = 4
    submissions_per_form: int | None = None
    conversations: int | None = None
    messages_per_conversation: int = 3
    activities_per_contact: float = 1.0
    #: Conversations carry the times the docs describe (the catalog's assumed fields: last
    #: message, participant's last activity, created_at, updated_at); False serves them without,
    #: as the API would if those fields are missing or named otherwise.
    message_signal: bool = True


class ClarkyStore:
    """All resources of one workspace, thread-safe, with seeded mutation."""

    def __init__(self, size: DatasetSize, seed: int = 42) -> None:
        self.size = size
        self.factory = RecordFactory(seed=seed)
        self.lock = threading.RLock()
        self.version = 0
        self._views: dict[tuple[Any, ...], list[str]] = {}
        self.lists: dict[str, dict[str | None, Collection]] = {name: {} for name in RESOURCES}
        self._generate()

    # -- generation -------------------------------------------------------------------------

    def _collection(self, resource: str, parent_id: str | None = None) -> Collection:
        return self.lists[resource].setdefault(parent_id, Collection())

    def _generate(self) -> None:
        f, size = self.factory, self.size
        agents = [f.agent(i) for i in range(size.agents)]
        for agent in agents:
            self._collection("agents").put(agent)
        bot_ids = [a["id"] for a in agents]
        stage_ids: list[str] = []
        for i in range(size.pipelines):
            pipeline = f.pipeline(bot_ids[i % len(bot_ids)], i)
            self._collection("pipelines").put(pipeline)
            stages = self._collection("pipeline_stages", pipeline["id"])
            for index in range(size.stages_per_pipeline):
                stage = f.stage(pipeline, index)
                stages.put(stage)
                stage_ids.append(stage["id"])
        n_companies = size.companies if size.companies is not None else max(1, size.contacts // 10)
        for _ in range(n_companies):
            self._collection("companies").put(f.company(bot_ids))
        company_ids = list(self.lists["companies"][None].order) if n_companies else []
        contacts = self._collection("contacts")
        for _ in range(size.contacts):
            contact = f.contact(bot_ids=bot_ids, company_ids=company_ids, stage_ids=stage_ids)
            contacts.put(contact)
            self._add_activities(contact)
        contact_ids = contacts.order
        for i in range(size.forms):
            form = f.form(bot_ids[i % len(bot_ids)], i)
            self._collection("forms").put(form)
            per_form = size.submissions_per_form
            if per_form is None:
                per_form = max(1, size.contacts // (10 * max(1, size.forms)))
            submissions = self._collection("form_submissions", form["id"])
            for _ in range(per_form):
                submissions.put(f.submission(form["id"], contact_ids))
        n_conversations = (
            size.conversations if size.conversations is not None else max(1, size.contacts // 10)
        )
        for number in range(n_conversations):
            conversation = f.conversation(f.rng.choice(bot_ids), contact_ids, number)
            started = parse_timestamp(conversation["created_at"])
            assert started is not None
            messages = self._collection("conversation_messages", conversation["id"])
            for index in range(size.messages_per_conversation):
                messages.put(f.message(conversation["id"], index, started), position=0)  # newest first
            self._collection("conversations").put(self._conversation_times(conversation))

    def _add_activities(self, contact: dict[str, Any]) -> None:
        """The contact's activities, newest first, and its ``last_contacted_at`` = the newest (as documented)."""
        rate = self.size.activities_per_contact
        count = int(rate) + (1 if self.factory.rng.random() < rate - int(rate) else 0)
        activities = self._collection("contact_activities", contact["id"])
        made = [self.factory.activity(contact) for _ in range(count)]
        for activity in sorted(made, key=lambda a: epoch_of(a["created_at"]) or 0.0, reverse=True):
            activities.put(activity)
        self._collection("contacts").put(self._signalled("contact_activities", contact))

    def _signalled(self, child: str, parent: dict[str, Any]) -> dict[str, Any]:
        """``parent`` with the fields of its children's change signal (the catalog's, e.g. a
        contact's ``last_contacted_at``) set to its newest child's time, as the docs describe."""
        res = RESOURCES[child]
        assert res.change_signal is not None and res.newest_first_by is not None
        children = self._collection(child, parent["id"])
        newest = children.records[children.order[0]][res.newest_first_by] if children.order else None
        return {**parent, **dict.fromkeys(res.change_signal.moved_by, newest)}

    def _conversation_times(self, conversation: dict[str, Any]) -> dict[str, Any]:
        """The conversation with the times the docs describe: its last message (the change
        signal), the participant's last activity (their newest message) and ``updated_at`` (the
        later of its creation and last message); without any of them if ``message_signal`` is off."""
        if not self.size.message_signal:
            hidden = RESOURCES["conversations"].assumed_fields
            return {k: v for k, v in conversation.items() if k not in hidden}
        messages = list(self._collection("conversation_messages", conversation["id"]))  # newest first
        return {
            **self._signalled("conversation_messages", conversation),
            "last_activity_at": next((m["created_at"] for m in messages if m.get("role") == "user"), None),
            "updated_at": messages[0]["created_at"] if messages else conversation.get("created_at"),
        }

    # -- reading ----------------------------------------------------------------------------

    def collection(self, resource: str, parent_id: str | None) -> Collection | None:
        return self.lists[resource].get(parent_id)

    def parent_exists(self, resource: Resource, parent_id: str) -> bool:
        parents = self.lists[resource.parent or ""].get(None)
        return parents is not None and parent_id in parents.records

    def view(
        self,
        resource: Resource,
        parent_id: str | None,
        params: dict[str, str],
        predicate: Callable[[dict[str, Any]], bool] | None,
    ) -> list[str]:
        """Ids matching the filters, in listing order; cached until the data changes."""
        collection = self.collection(resource.name, parent_id) or Collection()
        if predicate is None:
            return collection.order
        key = (resource.name, parent_id, tuple(sorted(params.items())), self.version)
        cached = self._views.get(key)
        if cached is None:
            if len(self._views) > 256:
                self._views.clear()
            cached = [i for i in collection.order if predicate(collection.records[i])]
            self._views[key] = cached
        return cached

    def find(self, resource: str, record_id: str) -> dict[str, Any] | None:
        for collection in self.lists[resource].values():
            record = collection.records.get(record_id)
            if record is not None:
                return record
        return None

    def find_blob(self, resource: str, record_id: str) -> bytes | None:
        for collection in self.lists[resource].values():
            blob = collection.blobs.get(record_id)
            if blob is not None:
                return blob
        return None

    def records(self, resource: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record a filter-less sync of ``resource`` returns (children of listed parents)."""
        res = RESOURCES[resource]
        if res.parent is None:
            collection = self.collection(resource, None) or Collection()
            return [r for r in collection if include_deleted or not hidden_by_default(res, r)]
        out: list[dict[str, Any]] = []
        for parent in self.records(res.parent, include_deleted=include_deleted):
            out.extend(self.collection(resource, parent["id"]) or ())
        return out

    # -- mutation ---------------------------------------------------------------------------

    def mutate(self, inserts: int = 0, updates: int = 0, deletes: int = 0) -> dict[str, list[str]]:
        """Insert, update and delete contacts as a live CRM would, at random list positions."""
        now = datetime.now(timezone.utc)
        changed: dict[str, list[str]] = {"inserted": [], "updated": [], "deleted": []}
        with self.lock:
            contacts = self._collection("contacts")
            rng = self.factory.rng
            for _ in range(deletes):
                if not contacts.order:
                    break
                victim = rng.choice(contacts.order)
                contacts.remove(victim)
                self.lists["contact_activities"].pop(victim, None)
                changed["deleted"].append(victim)
            for _ in range(updates):
                if not contacts.order:
                    break
                target = rng.choice(contacts.order)
                contacts.put(self.factory.updated_copy(contacts.records[target], now))
                changed["updated"].append(target)
            bot_ids = list(self.lists["agents"][None].order)
            company_ids = list(self.lists["companies"][None].order)
            for _ in range(inserts):
                contact = self.factory.contact(bot_ids=bot_ids, company_ids=company_ids, stage_ids=[])
                stamp = format_api_timestamp(now, millis=True)
                contact["created_at"] = contact["updated_at"] = stamp
                contacts.put(contact, position=rng.randint(0, len(contacts.order)))
                self._add_activities(contact)
                changed["inserted"].append(contact["id"])
            self.version += 1
        return changed

    def log_activities(self, contacts: int) -> list[str]:
        """New activities on ``contacts`` random contacts, as a day of CRM use adds them.

        Each goes first in its contact's list (newest first) and moves the contact's
        ``last_contacted_at`` (the catalog's change signal); its ``updated_at`` stays as it was
        (the docs do not say an activity changes it). Returns the contact ids.
        """
        stamp = format_api_timestamp(datetime.now(timezone.utc), millis=True)
        with self.lock:
            people = self._collection("contacts")
            chosen = self.factory.rng.sample(people.order, min(contacts, len(people.order)))
            for contact_id in chosen:
                contact = people.records[contact_id]
                activity = {**self.factory.activity(contact), "created_at": stamp}
                self._collection("contact_activities", contact_id).put(activity, position=0)
                people.put(self._signalled("contact_activities", contact))
            self.version += 1
        return chosen

    def log_messages(self, conversations: int) -> list[str]:
        """A new message (now) first in ``conversations`` random conversations; returns their ids.

        It moves the conversation's time of the last message (the catalog's change signal),
        ``updated_at``, and the participant's last activity if the participant wrote it; with
        ``message_signal`` off the conversations carry none of these and nothing on them moves.
        """
        with self.lock:
            threads = self._collection("conversations")
            chosen = self.factory.rng.sample(threads.order, min(conversations, len(threads.order)))
            for conversation_id in chosen:
                messages = self._collection("conversation_messages", conversation_id)
                message = self.factory.message(conversation_id, len(messages.order))
                message["created_at"] = format_api_timestamp(datetime.now(timezone.utc), millis=True)
                messages.put(message, position=0)
                threads.put(self._conversation_times(threads.records[conversation_id]))
            self.version += 1
        return chosen


def hidden_by_default(resource: Resource, record: dict[str, Any]) -> bool:
    """Soft-deleted records (conversations) are left out of lists unless asked for."""
    return resource.soft_delete_field is not None and record.get(resource.soft_delete_field) is True
