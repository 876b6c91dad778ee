"""The admin function: owner and bill imports, and staff management."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from caiyun.contract.bind_house import PersonName
from caiyun.contract.common import (
    ObjectKey,
    Option,
    OptionCode,
    Page,
    PageRequest,
    Phone,
    Reply,
    Request,
)
from caiyun.contract.login import AgreementCode, AgreementText, AgreementTrigger

StaffRoleName = Literal["admin", "repairman", "guard"]

# One call carries at most this many rows; the CLI streams larger files in chunks of it.
MAX_IMPORT_ROWS = 2000


class ImportOwners(Request):
    """Houses and owners of one community. Each row is checked on its own: see the report."""

    community: dict[StrictStr, Any]
    rows: Annotated[list[Any], Field(max_length=MAX_IMPORT_ROWS)]


class RowReport(Reply):
    """What happened to one row of an import (``reason`` says why a row failed)."""

    row: int
    status: Literal["created", "updated", "unchanged", "error"]
    status_name: str
    house_id: str | None = None
    label: str | None = None
    reason: str | None = None


class ImportOwnersReply(Reply):
    community_id: str
    community_created: bool
    counts: dict[str, int]
    rows: list[RowReport]


class AddStaff(Request):
    phone: Phone
    name: PersonName
    role: StaffRoleName
    community_ids: Annotated[list[ObjectKey], Field(min_length=1, max_length=200)]


class StaffMember(Reply):
    """A staff member: role and the communities covered (a company-wide admin covers all)."""

    account_id: str
    name: str
    phone: str | None
    role: StaffRoleName
    role_name: str
    community_ids: list[str]
    all_communities: bool


class ListStaff(PageRequest):
    role: StaffRoleName | None = None


class StaffPage(Page[StaffMember]):
    pass


class RemoveStaff(Request):
    account_id: ObjectKey


class RemoveStaffReply(Reply):
    removed: bool


class ImportBills(Request):
    """Bills per house: ``building``, ``unit``, ``room``, ``period`` (``2026-11``), ``item``,
    ``amount_fen``, ``due_date`` (``2026-11-30``). Each row is checked on its own."""

    community_id: ObjectKey
    rows: Annotated[list[Any], Field(max_length=MAX_IMPORT_ROWS)]


class ImportBillsReply(Reply):
    community_id: str
    counts: dict[str, int]
    rows: list[RowReport]


AgreementTitle = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
]
AgreementBody = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)
]
OptionName = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)
]


class AgreementEdit(Request):
    """An agreement's text as it should read from now on; ``required_when`` lists what
    requires it: ``card``, ``wallet`` (real-name verification by that method), ``autodebit``."""

    code: AgreementCode
    title: AgreementTitle
    text: AgreementBody
    required_when: Annotated[list[AgreementTrigger], Field(min_length=1, max_length=3)]


class OptionEdit(Request):
    code: OptionCode
    name: OptionName


def _distinct(items: list[Any], what: str) -> list[Any]:
    codes = [item.code for item in items]
    if len(set(codes)) != len(codes):
        raise ValueError(f"{what}代码重复")
    return items


Options = Annotated[list[OptionEdit], Field(min_length=1, max_length=30)]


class UpdateConfig(Request):
    """Change what the apps are configured with (company-wide admins only); what is left out
    stays as it is. ``agreements`` lists all three, each with its text: one whose title or
    text changed gets a new version, and residents sign that one from then on (the texts of
    earlier versions are kept). A category or type taken out is no longer offered or
    accepted; records filed under it keep its label. ``revision``, the one the admin edited,
    makes a save over someone else's change a CONFLICT."""

    agreements: Annotated[list[AgreementEdit], Field(min_length=3, max_length=3)] | None = None
    repair_categories: Options | None = None
    complaint_types: Options | None = None
    revision: Annotated[StrictInt, Field(ge=0)] | None = None

    @field_validator("agreements")
    @classmethod
    def _every_agreement_once(cls, value: list[AgreementEdit] | None) -> Any:
        return value if value is None else _distinct(value, "协议")

    @field_validator("repair_categories", "complaint_types")
    @classmethod
    def _codes_once(cls, value: list[OptionEdit] | None) -> Any:
        return value if value is None else _distinct(value, "选项")


class ConfigReply(Reply):
    """The configuration now in force."""

    revision: int
    updated_at: str | None
    agreements: list[AgreementText]
    repair_categories: list[Option]
    complaint_types: list[Option]


ImportKindName = Literal["owners", "bills"]
ImportFilename = Annotated[StrictStr, StringConstraints(min_length=1, max_length=255)]


class ImportUploadUrl(Request):
    """Where to upload an import file (``.xlsx`` or ``.csv``) before ``start_import``. COS:
    PUT the bytes to ``url`` with ``headers`` and use ``file_id``; CloudBase: upload to
    ``path`` and use the fileID; sandbox: PUT the bytes to ``url`` and use ``file_id``."""

    filename: ImportFilename


class StartImport(Request):
    """Start importing an uploaded file: ``owners`` of ``community`` (``province``, ``city``,
    ``district``, ``name``, optional ``address``; created if new, by company-wide admins only)
    or ``bills`` of ``community_id``. The file's header is checked now; the rows are imported
    by ``run_import``."""

    kind: ImportKindName
    file_id: Annotated[StrictStr, StringConstraints(min_length=1, max_length=1100)]
    filename: ImportFilename | None = None
    community_id: ObjectKey | None = None
    community: dict[StrictStr, Any] | None = None

    @model_validator(mode="after")
    def _community_for_kind(self) -> StartImport:
        if self.kind == "owners" and self.community is None:
            raise ValueError("业主导入须提供 community")
        if self.kind == "bills" and self.community_id is None:
            raise ValueError("账单导入须提供 community_id")
        return self


class ImportJobRef(Request):
    job_id: ObjectKey


class ImportJob(Reply):
    """An import job: ``rows_done`` of ``total_rows`` data rows imported so far; ``counts``
    by row status. ``status`` ``running`` until every row is imported: call ``run_import``
    again (each call imports one chunk within the platform's time limit)."""

    job_id: str
    kind: ImportKindName
    kind_name: str
    status: Literal["running", "done"]
    status_name: str
    community_id: str
    community_created: bool
    filename: str
    total_rows: int
    rows_done: int
    counts: dict[str, int]
    created_at: str
    updated_at: str
    finished_at: str | None


class ImportFailedRowsPage(PageRequest):
    job_id: ObjectKey


class FailedRow(Reply):
    """A row that was not imported: its line in the file, why, and its values as read."""

    line: int
    reason: str
    values: dict[str, str]


class FailedRowsPage(Page[FailedRow]):
    pass


class FailedRowsFile(Reply):
    """The failed rows as an ``.xlsx`` (base64) in the template's columns with 错误原因 and
    原行号 beside them: correct and import it again. ``rows`` it holds (at most 20,000)."""

    filename: str
    content_type: str
    content_base64: str
    rows: int


class Overview(Request):
    community_id: ObjectKey


class OverviewReply(Reply):
    """A community at a glance: its houses, and those with at least one account bound."""

    community_id: str
    community_name: str
    houses: int
    bound_houses: int
