"""The vendor guide's security-role requirements ("Create a security role").

One table, used by ``socbridge validate`` to name each missing permission and
by the simulator to seed its API member's role. Levels are ConnectWise's
``None`` / ``My`` / ``All``; the guide asks for ``All`` wherever it asks for
access, and validation accepts nothing less.
"""

from __future__ import annotations

LEVEL_NAMES = ("Add", "Edit", "Delete", "Inquire")

# (module, function) -> required (add, edit, delete, inquire) levels.
GUIDE_PERMISSIONS: dict[tuple[str, str], tuple[str, str, str, str]] = {
    ("Companies", "Company Maintenance"): ("None", "None", "None", "All"),
    ("Companies", "Manage Attachments"): ("All", "None", "None", "All"),
    ("Service Desk", "Close Service Tickets"): ("All", "All", "None", "All"),
    ("Service Desk", "Service Ticket - Dependencies"): ("All", "All", "None", "All"),
    ("Service Desk", "Service Tickets"): ("All", "All", "None", "All"),
    ("System", "Table Setup"): ("None", "None", "None", "All"),
}

# System > Table Setup > Customize > "Allow Access to these", with the API
# path whose answer (200 or 403) shows whether the entry is allowed (inferred:
# no API exposes the allow list itself).
GUIDE_TABLE_SETUP: dict[str, str] = {
    "Company / Company Statuses": "company/companies/statuses",
    "Company / Company Type": "company/companies/types",
    "Service / Priority": "service/priorities",
    "Service / ServiceBoard": "service/boards",
}
