"""The one declarative catalog of the Clarky API's read side.

Every fact the hook, operators, emulator and docs need about an endpoint lives here: its path,
parent, primary key, filters, incremental cursor, backfill partition filters, pagination and
typed fields. Source: ``shared/clarky-api/SPEC.md`` and ``endpoints.json``. Endpoints the docs
only imply are marked ``documented=False``; fields the docs describe without showing their
names are listed in ``Resource.assumed_fields``. Field types are the neutral ones of
``clarky_provider.tables`` (which ``sql/`` reads too); ``FieldType`` is importable from here as before.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from clarky_provider.tables import Field, FieldType

API_PREFIX = "/api/v1"
DEFAULT_HOST = "https://clarky.ai"
KEY_PREFIX = "ck_live_"
KEY_LENGTHS = (38, 39)
MAX_PAGE_SIZE = 100
#: The smallest page a list serves (the docs give only the maximum): what a count of a list, such
#: as the change trigger's probe, asks for.
MIN_PAGE_SIZE = 1
READS_PER_MINUTE = 120
#: The rate limits are counted over a rolling window of this many seconds.
RATE_WINDOW_SECONDS = 60
#: What the docs say of the order of most lists: nothing, so page-number paging can skip records.
NO_ORDER = "not documented"
WRITES_PER_MINUTE = 60


class FilterKind(str, enum.Enum):
    """What a filter does, and so how its value is validated, encoded and (in the emulator) applied."""

    STRING = "string"  # records whose field equals the value
    CHOICE = "choice"  # the same, from a documented set of values
    TIMESTAMP = "timestamp"  # an inclusive bound on a time field (cursor or partition field)
    ANY_OF = "any_of"  # comma-separated values; records whose list field holds any of them
    SEARCH = "search"  # a substring of any of the filter's ``fields``
    ORDER = "order"  # the list's direction (asc or desc), not a selection
    SHOW_DELETED = "show_deleted"  # true: soft-deleted records are listed too


@dataclass(frozen=True)
class Filter:
    """A documented query parameter of a list endpoint."""

    name: str
    kind: FilterKind = FilterKind.STRING
    choices: tuple[str, ...] = ()
    description: str = ""
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangeSignal:
    """What on a parent record says that its child list changed since a moment, so that an
    incremental read of the child resource fetches only those parents' lists (newest first,
    down to the moment).

    ``moved_by`` are the parent's fields a new child moves to its own time (a contact's
    ``last_contacted_at``, a conversation's ``last_message_at``): the signal proper. A parent
    that carries none of them (the field absent, not null) cannot say whether it changed, so it
    is read. ``new_parent`` are fields that mark a parent made since the moment (its children
    are all new). Nothing here sees an edited or deleted child: the rotation (``recheck_fraction``)
    and full refreshes do.
    """

    moved_by: tuple[str, ...]
    new_parent: tuple[str, ...] = ("created_at",)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.moved_by + self.new_parent


@dataclass(frozen=True)
class Resource:
    """A readable collection of the Clarky API."""

    name: str
    path: str
    fields: tuple[Field, ...]
    description: str
    primary_key: tuple[str, ...] = ("id",)
    filters: tuple[Filter, ...] = ()
    paginated: bool = True
    parent: str | None = None
    parent_key: str | None = None
    item_path: str | None = None
    incremental_filter: str | None = None
    cursor_field: str | None = None
    partition_filters: tuple[str, str] | None = None
    partition_field: str | None = None
    documented: bool = True
    ordering: str = NO_ORDER
    newest_first_by: str | None = None
    change_signal: ChangeSignal | None = None
    soft_delete_field: str | None = None
    #: Fields whose names the docs do not show (only what they mean): named as the API's other
    #: fields and the emulator make most likely, to be checked against the live API. A load
    #: lists the real names in its summary's ``new_fields`` if they differ.
    assumed_fields: tuple[str, ...] = ()
    field_index: Mapping[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_index", {f.name: f for f in self.fields})
        unknown = set(self.assumed_fields) - set(self.field_index)
        if unknown:
            raise ValueError(f"{self.name}: assumed fields {sorted(unknown)} are not among its fields")

    @property
    def incremental(self) -> bool:
        """Whether a load can read only what changed since a watermark (an API filter, or changed parents)."""
        return self.incremental_filter is not None or self.change_signal is not None

    @property
    def readable_by_id(self) -> bool:
        """Whether named records can be read alone (a targeted re-sync): through the item
        endpoint, or for a child resource, its named parents' lists."""
        return self.item_path is not None or self.parent_key is not None

    def check_readable_by_id(self) -> None:
        """Refuse a read by id of a resource that has neither (before any request)."""
        if not self.readable_by_id:
            can = sorted(r.name for r in RESOURCES.values() if r.readable_by_id)
            raise _config_error(
                f"Clarky resource {self.name!r} cannot be read by id: no item endpoint and no parent "
                f"(resources that can: {', '.join(can)})."
            )

    def assumed(self, field_name: str) -> bool:
        """Whether the field's name is assumed (see ``assumed_fields``), for docs and log lines."""
        return field_name in self.assumed_fields

    @property
    def resumable(self) -> bool:
        """Whether a read can be kept in units a killed load's next try need not read again:
        a parent with its whole list (child resources), or a created-time window (partition
        filters). Other lists are short, and read whole."""
        return self.parent_key is not None or self.partition_filters is not None

    @property
    def ordered(self) -> bool:
        """Whether the docs promise an order for this list (most Clarky lists have none)."""
        return self.ordering != NO_ORDER

    @property
    def filter_index(self) -> dict[str, Filter]:
        return {f.name: f for f in self.filters}

    def list_path(self, parent_id: str | None = None) -> str:
        """The list path, with the parent id filled in for child resources."""
        if self.parent_key is None:
            return self.path
        if not parent_id:
            raise _config_error(
                f"Resource {self.name!r} is listed per {self.parent}; pass {self.parent_key}=<id> "
                f"or let the hook fan out over every {self.parent} record."
            )
        return self.path.replace("{" + self.parent_key + "}", _quote_path(parent_id))


def _config_error(message: str) -> Exception:
    """A ``ClarkyConfigError``, imported late: provider discovery imports this module before Airflow is ready."""
    from clarky_provider.exceptions import ClarkyConfigError

    return ClarkyConfigError(message)


def _quote_path(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def _fields(**types: FieldType) -> tuple[Field, ...]:
    return tuple(Field(name, ftype) for name, ftype in types.items())


STR, INT, NUM, BOOL, TS, ARR, OBJ = (
    FieldType.STRING,
    FieldType.INTEGER,
    FieldType.NUMBER,
    FieldType.BOOLEAN,
    FieldType.TIMESTAMP,
    FieldType.ARRAY,
    FieldType.OBJECT,
)

_ADDRESS = {
    "address_line1": STR,
    "address_line2": STR,
    "city": STR,
    "state": STR,
    "postal_code": STR,
    "country": STR,
}

_BOT_ID = Filter("bot_id", description="only records owned by this agent")
_TAGS = Filter("tags", FilterKind.ANY_OF, description="comma-separated tags (any/all semantics undocumented)")

AGENTS = Resource(
    name="agents",
    path="/agents",
    description="The workspace's agents (bots); their ids are the bot_id used everywhere else.",
    documented=False,
    fields=_fields(
        id=STR,
        workspace_id=STR,
        name=STR,
        slug=STR,
        summary=STR,
        is_agent=BOOL,
        enabled=BOOL,
        public=BOOL,
        agent_role=STR,
        agent_type=STR,
        agent_status=STR,
        agent_color=STR,
        agent_email=STR,
        agent_phone=STR,
        chat_greeting=STR,
        chat_avatar_intro=STR,
        chat_avatar_image_url=STR,
        phone_greeting=STR,
    ),
)

CONTACTS = Resource(
    name="contacts",
    path="/contacts",
    item_path="/contacts/{id}",
    description="CRM contacts; the only resource with time filters (incremental and backfill).",
    fields=_fields(
        id=STR,
        workspace_id=STR,
        bot_id=STR,
        first_name=STR,
        last_name=STR,
        emails=ARR,
        phone_numbers=ARR,
        company=STR,
        company_id=STR,
        job_title=STR,
        lead_source=STR,
        tags=ARR,
        deal_value=NUM,
        pipeline_stage_id=STR,
        contact_type=STR,
        **_ADDRESS,
        linkedin_url=STR,
        notes=STR,
        custom_fields=OBJ,
        last_contacted_at=TS,
        created_at=TS,
        updated_at=TS,
    ),
    filters=(
        Filter(
            "search",
            FilterKind.SEARCH,
            description="matches name, email, phone or company",
            fields=("first_name", "last_name", "emails", "phone_numbers", "company"),
        ),
        _TAGS,
        Filter("lead_source"),
        Filter("pipeline_stage_id"),
        _BOT_ID,
        Filter("created_after", FilterKind.TIMESTAMP, description="created at or after (inclusive)"),
        Filter("created_before", FilterKind.TIMESTAMP, description="created at or before (inclusive)"),
        Filter("updated_after", FilterKind.TIMESTAMP, description="updated at or after (inclusive)"),
    ),
    incremental_filter="updated_after",
    cursor_field="updated_at",
    partition_filters=("created_after", "created_before"),
    partition_field="created_at",
)

CONTACT_ACTIVITIES = Resource(
    name="contact_activities",
    path="/contacts/{contact_id}/activities",
    parent="contacts",
    parent_key="contact_id",
    description="Timeline entries (notes, calls, meetings, tasks) per contact; one list per contact.",
    ordering="newest first",
    # The docs: activities come newest first, and a contact's last_contacted_at is its latest
    # activity. So a daily read fetches only contacts contacted (or created) since the table's
    # newest activity, and stops each list at the first older activity. They do not say that an
    # activity changes the contact's updated_at, so contacts' updated_after cannot narrow it.
    cursor_field="created_at",
    newest_first_by="created_at",
    change_signal=ChangeSignal(moved_by=("last_contacted_at",)),
    fields=_fields(
        id=STR,
        contact_id=STR,
        company_id=STR,
        activity_type=STR,
        title=STR,
        description=STR,
        due_date=TS,
        duration_minutes=NUM,
        completed_at=TS,
        metadata=OBJ,
        created_at=TS,
    ),
    filters=(
        Filter(
            "activity_type",
            FilterKind.CHOICE,
            choices=("note", "call", "meeting", "video_call", "task", "todo", "reminder"),
        ),
    ),
)

COMPANIES = Resource(
    name="companies",
    path="/companies",
    item_path="/companies/{id}",
    description="CRM companies; no time filters, so loads are full snapshots merged on id.",
    fields=_fields(
        id=STR,
        workspace_id=STR,
        bot_id=STR,
        name=STR,
        domain=STR,
        website=STR,
        industry=STR,
        company_size=STR,
        company_type=STR,
        employee_count=NUM,
        annual_revenue=NUM,
        description=STR,
        emails=ARR,
        phone_numbers=ARR,
        tags=ARR,
        total_deal_value=NUM,
        pipeline_stage_id=STR,
        **_ADDRESS,
        linkedin_url=STR,
        notes=STR,
        custom_fields=OBJ,
        last_activity_at=TS,
        created_at=TS,
        updated_at=TS,
    ),
    filters=(
        Filter(
            "search",
            FilterKind.SEARCH,
            description="matches name, domain or industry",
            fields=("name", "domain", "industry"),
        ),
        _TAGS,
        Filter("industry", description="exact match"),
        Filter("domain", description="exact match"),
        _BOT_ID,
    ),
)

PIPELINES = Resource(
    name="pipelines",
    path="/pipelines",
    description="Sales pipelines.",
    fields=_fields(
        id=STR,
        workspace_id=STR,
        bot_id=STR,
        name=STR,
        is_default=BOOL,
        is_private=BOOL,
        created_at=TS,
        updated_at=TS,
    ),
    filters=(_BOT_ID,),
)

PIPELINE_STAGES = Resource(
    name="pipeline_stages",
    path="/pipelines/{pipeline_id}/stages",
    parent="pipelines",
    parent_key="pipeline_id",
    paginated=False,
    description="Stages of each pipeline; a bounded, unpaginated list sorted by order_index.",
    ordering="ascending order_index",
    fields=_fields(
        id=STR,
        bot_id=STR,
        pipeline_id=STR,
        name=STR,
        color=STR,
        order_index=INT,
        created_at=TS,
        updated_at=TS,
    ),
)

FORMS = Resource(
    name="forms",
    path="/forms",
    item_path="/forms/{id}",
    description="Lead-capture forms and their configuration.",
    fields=_fields(
        id=STR,
        workspace_id=STR,
        bot_id=STR,
        name=STR,
        description=STR,
        standard_fields=OBJ,
        custom_fields=OBJ,
        survey_questions=OBJ,
        created_at=TS,
        updated_at=TS,
    ),
    filters=(_BOT_ID,),
)

FORM_SUBMISSIONS = Resource(
    name="form_submissions",
    path="/forms/{form_id}/submissions",
    parent="forms",
    parent_key="form_id",
    documented=False,
    description="Submissions of each form (internal submissions are hidden by the API).",
    fields=_fields(
        id=STR, form_id=STR, contact_id=STR, custom_field_responses=OBJ, is_internal=BOOL, submitted_at=TS
    ),
)

CONVERSATIONS = Resource(
    name="conversations",
    path="/conversations",
    item_path="/conversations/{id}",
    documented=False,
    description="Chats, calls, SMS and e-mail threads; soft-deleted ones only with include_deleted.",
    fields=_fields(
        id=STR,
        bot_id=STR,
        contact_id=STR,
        type=INT,
        email=STR,
        phone_number=STR,
        human=STR,
        human_takeover=BOOL,
        assigned_to=STR,
        assigned_at=TS,
        active=BOOL,
        archived=BOOL,
        archived_at=TS,
        deleted=BOOL,
        # The docs describe these without showing their names: "time of the last message",
        # "participant's last activity time"; created_at/updated_at may not exist at all. Named
        # like the API's other times (last_contacted_at, companies' last_activity_at).
        last_message_at=TS,
        last_activity_at=TS,
        created_at=TS,
        updated_at=TS,
    ),
    assumed_fields=("last_message_at", "last_activity_at", "created_at", "updated_at"),
    filters=(Filter("include_deleted", FilterKind.SHOW_DELETED),),
    soft_delete_field="deleted",
)

CONVERSATION_MESSAGES = Resource(
    name="conversation_messages",
    path="/conversations/{conversation_id}/messages",
    parent="conversations",
    parent_key="conversation_id",
    documented=False,
    description="Messages of each conversation (the Message object is not documented yet).",
    ordering="by created_at, as the order parameter says (asc or desc)",
    newest_first_by="created_at",  # with no order parameter (its default is not visible: assumed desc)
    # A new message moves its conversation's time of the last message (an assumed name: see
    # CONVERSATIONS), so a daily read fetches only conversations with a message (or made) since
    # the table's newest message, each down to it, as activities do. Where conversations carry
    # no such field the read says so once and fetches every conversation, as a full load does.
    cursor_field="created_at",
    change_signal=ChangeSignal(moved_by=("last_message_at",)),
    fields=_fields(id=STR, conversation_id=STR, role=STR, content=STR, created_at=TS),
    filters=(Filter("order", FilterKind.ORDER, choices=("asc", "desc")),),
)

RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        AGENTS,
        CONTACTS,
        CONTACT_ACTIVITIES,
        COMPANIES,
        PIPELINES,
        PIPELINE_STAGES,
        FORMS,
        FORM_SUBMISSIONS,
        CONVERSATIONS,
        CONVERSATION_MESSAGES,
    )
}


def get_resource(name: str) -> Resource:
    """Look a resource up by name, with an error that lists the valid names."""
    try:
        return RESOURCES[name]
    except KeyError:
        raise _config_error(
            f"Unknown Clarky resource {name!r}; choose one of: {', '.join(sorted(RESOURCES))}."
        ) from None


def encode_filters(resource: Resource, filters: Mapping[str, object]) -> dict[str, str]:
    """Validate filters against the catalog and encode them as query parameters.

    Clarky answers an undocumented parameter with 400, so an unknown filter is refused here,
    before any request, with the list of filters the endpoint does support.
    """
    from clarky_provider.normalize import format_timestamp

    known = resource.filter_index
    params: dict[str, str] = {}
    for name, value in filters.items():
        if value is None:
            continue
        spec = known.get(name)
        if spec is None:
            supported = ", ".join(sorted(known)) or "none"
            raise _config_error(
                f"Filter {name!r} is not supported by Clarky resource {resource.name!r} "
                f"(supported filters: {supported}); the API would reject it with 400."
            )
        if spec.kind is FilterKind.TIMESTAMP:
            params[name] = format_timestamp(value, name=name)
        elif spec.kind is FilterKind.SHOW_DELETED:
            params[name] = _encode_bool(name, value)
        elif spec.kind in (FilterKind.CHOICE, FilterKind.ORDER):
            if str(value) not in spec.choices:
                raise _config_error(f"Filter {name}={value!r} is not one of {', '.join(spec.choices)}.")
            params[name] = str(value)
        else:
            params[name] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return params


def _encode_bool(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text
    raise _config_error(f"Filter {name}={value!r} must be true or false.")
