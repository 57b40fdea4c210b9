"""DICOM audit messages (PS3.15 Annex A.5) for audit records: what an IHE ATNA repository expects to receive.

Each action maps to one event (Application Activity, Audit Log Used, Begin Transferring / DICOM Instances
Transferred, DICOM Instances Accessed, Export, Import, Query, Security Alert, User Authentication) with the
participants A.5.3 requires for it. Patient identifiers appear only as the record carries them: HMAC
pseudonyms unless the repository was cleared for clear IDs (`[audit] include_patient_ids`).
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from backupctl.audit.log import Record

DCM = "DCM"


@dataclass(frozen=True)
class Code:
    code: str
    meaning: str
    system: str = DCM


APPLICATION_ACTIVITY = Code("110100", "Application Activity")
AUDIT_LOG_USED = Code("110101", "Audit Log Used")
BEGIN_TRANSFERRING = Code("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = Code("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code("110104", "DICOM Instances Transferred")
EXPORT = Code("110106", "Export")
IMPORT = Code("110107", "Import")
QUERY = Code("110112", "Query")
SECURITY_ALERT = Code("110113", "Security Alert")
USER_AUTHENTICATION = Code("110114", "User Authentication")

APPLICATION_START = Code("110120", "Application Start")
APPLICATION_STOP = Code("110121", "Application Stop")
LOGIN = Code("110122", "Login")
USE_OF_RESTRICTED_FUNCTION = Code("110132", "Use of Restricted Function")
SOFTWARE_CONFIGURATION = Code("110131", "Software Configuration")

ROLE_APPLICATION = Code("110150", "Application")
ROLE_SOURCE = Code("110153", "Source Role ID")
ROLE_DESTINATION = Code("110152", "Destination Role ID")
ROLE_SOURCE_MEDIA = Code("110155", "Source Media")
ROLE_DESTINATION_MEDIA = Code("110154", "Destination Media")

OUTCOME = {"ok": "0", "alert": "0", "partial": "4", "refused": "4", "interrupted": "4", "failed": "8"}


@dataclass(frozen=True)
class Event:
    id: Code
    action: str                  # EventActionCode: C R U D E
    type: Code | None = None
    objects: str = "data"        # data | log | query | alert | none


def event_for(record: Record) -> Event:
    """The DICOM audit event an action is reported as."""
    words = record.action.split()
    error = record.details.get("error")
    if record.action == "security alert":
        return Event(SECURITY_ALERT, "E", USE_OF_RESTRICTED_FUNCTION, "alert")
    if error == "WrongPassword" or "login" in words:
        return Event(USER_AUTHENTICATION, "E", LOGIN, "none")
    if words and words[0] == "audit":
        return Event(AUDIT_LOG_USED, "R", None, "log")
    if "find" in words or "lookup" in words:
        return Event(QUERY, "E", None, "query")
    if "restore" in words and (record.ids.get("to_pacs") or "pacs" in words):
        return Event(BEGIN_TRANSFERRING if record.outcome == "started" else INSTANCES_TRANSFERRED, "C")
    if "restore" in words or "recover" in words:
        return Event(IMPORT, "C")
    if "export" in words or "replicate" in words or "sync" in words:
        return Event(EXPORT, "R")
    if words[:1] == ["backup"]:
        return Event(INSTANCES_TRANSFERRED, "C")
    if "forget" in words or "expire" in words:
        return Event(INSTANCES_ACCESSED, "D")
    if "verify" in words or "drill" in words:
        return Event(INSTANCES_ACCESSED, "R")
    if record.action in ("init", "config change"):
        return Event(SECURITY_ALERT, "E", SOFTWARE_CONFIGURATION, "alert")
    stop = record.outcome != "started"
    return Event(APPLICATION_ACTIVITY, "E", APPLICATION_STOP if stop else APPLICATION_START, "none")


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                       "originalText": code.meaning})


MEDIA_URI = Code("110037", "URI")


def _participant(parent: ET.Element, user: str, *, requestor: bool, role: Code, host: str | None = None,
                 alternative: str | None = None) -> None:
    attrs = {"UserID": user, "UserIsRequestor": "true" if requestor else "false"}
    if alternative:
        attrs["AlternativeUserID"] = alternative
    if host:
        attrs.update(NetworkAccessPointID=host, NetworkAccessPointTypeCode="1")
    element = ET.SubElement(parent, "ActiveParticipant", attrs)
    _code(element, "RoleIDCode", role)
    if role in (ROLE_SOURCE_MEDIA, ROLE_DESTINATION_MEDIA):
        # Export and Import name the media; a backup target is reached by its URI (a mount or a bucket)
        _code(ET.SubElement(element, "MediaIdentifier"), "MediaType", MEDIA_URI)


def _object(parent: ET.Element, object_id: str, type_code: str, role: str, id_type: Code,
            name: str | None = None, details: dict[str, str] | None = None) -> ET.Element:
    attrs = {"ParticipantObjectID": object_id, "ParticipantObjectTypeCode": type_code,
             "ParticipantObjectTypeCodeRole": role}
    element = ET.SubElement(parent, "ParticipantObjectIdentification", attrs)
    _code(element, "ParticipantObjectIDTypeCode", id_type)
    if name:
        ET.SubElement(element, "ParticipantObjectName").text = name
    for key, value in (details or {}).items():
        # the schema types a detail's value as base64Binary
        ET.SubElement(element, "ParticipantObjectDetail",
                      {"type": key, "value": base64.b64encode(value.encode("utf-8")).decode("ascii")})
    return element


PATIENT_NUMBER = Code("2", "Patient Number", "RFC-3881")
STUDY_UID = Code("110180", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "SOP Class UID")
URI = Code("12", "URI", "RFC-3881")


def audit_message(record: Record, *, site: str = "backupctl", log_uri: str = "") -> str:
    """The DICOM audit message of one record, as one line of XML."""
    event = event_for(record)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": event.action, "EventDateTime": record.time,
        "EventOutcomeIndicator": OUTCOME.get(record.outcome, "8")})
    _code(ident, "EventID", event.id)
    if event.type is not None:
        _code(ident, "EventTypeCode", event.type)
    if record.outcome != "ok" or record.details.get("text"):
        ET.SubElement(ident, "EventOutcomeDescription").text = _describe(record)
    app = f"backupctl@{record.host}"
    if event.id in (INSTANCES_TRANSFERRED, BEGIN_TRANSFERRING, EXPORT, IMPORT, QUERY):
        # who asked, and the process on each side of the transfer
        _participant(root, record.actor, requestor=True, role=ROLE_SOURCE if event.id != IMPORT
                     else ROLE_DESTINATION, host=record.host)
        if event.id == EXPORT:
            _participant(root, str(record.ids.get("target", "target")), requestor=False,
                         role=ROLE_DESTINATION_MEDIA)
        elif event.id == IMPORT:
            _participant(root, str(record.ids.get("target", "staging")), requestor=False, role=ROLE_SOURCE_MEDIA)
        else:
            _participant(root, app, requestor=False, role=ROLE_DESTINATION, alternative=str(record.pid),
                         host=record.host)
    else:
        _participant(root, record.actor, requestor=True, role=ROLE_SOURCE, host=record.host)
        _participant(root, app, requestor=False, role=ROLE_APPLICATION, alternative=str(record.pid),
                     host=record.host)
    source = ET.SubElement(root, "AuditSourceIdentification",
                           {"AuditEnterpriseSiteID": site, "AuditSourceID": app})
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4", "codeSystemName": "DCM",
                                                  "originalText": "Application Server Process"})
    _objects(root, record, event, log_uri)
    return ET.tostring(root, encoding="unicode", short_empty_elements=True)


def _describe(record: Record) -> str:
    text = str(record.details.get("text") or "")
    error = record.details.get("error")
    return f"{record.outcome}{f' ({error})' if error else ''}{f': {text}' if text else ''}"


def _objects(root: ET.Element, record: Record, event: Event, log_uri: str) -> None:
    if event.objects == "log":
        _object(root, log_uri or "audit.log", "2", "13", URI, "Security Audit Log")
        return
    if event.objects == "alert":
        _object(root, f"record:{record.details.get('about', record.seq)}", "2", "13", URI, None,
                {"Alert Description": str(record.details.get("text", record.action))})
        return
    if event.objects == "query":
        query = " ".join(f"{k}={v}" for k, v in sorted(record.ids.items()) if k != "patient")
        element = _object(root, "1.2.840.10008.5.1.4.1.2.2.1", "2", "3", SOP_CLASS_UID,
                          details={"TransferSyntax": "1.2.840.10008.1.2"})
        # the schema orders the query before the details
        query_element = ET.Element("ParticipantObjectQuery")
        query_element.text = base64.b64encode(query.encode()).decode()
        element.insert(1, query_element)
    if event.objects in ("data", "query"):
        for study in record.ids.get("studies", []) or []:
            _object(root, str(study), "2", "3", STUDY_UID)
        if event.objects == "data" and not record.ids.get("studies"):
            # backups move whole archives: the snapshot stands for the studies in it
            what = record.ids.get("snapshot") or record.ids.get("job") or record.action
            _object(root, str(what), "2", "3", URI, f"backupctl {record.action}")
        patient = record.ids.get("patient")
        if patient:
            _object(root, str(patient), "1", "1", PATIENT_NUMBER)


REQUIRED = {
    # what PS3.15 A.5.3 requires in each message, as paths checked by the tests and `audit export`
    "common": ["EventIdentification", "EventIdentification/EventID", "ActiveParticipant",
               "ActiveParticipant/RoleIDCode", "AuditSourceIdentification"],
    APPLICATION_ACTIVITY.code: ["EventIdentification/EventTypeCode"],
    AUDIT_LOG_USED.code: ["ParticipantObjectIdentification/ParticipantObjectName"],
    SECURITY_ALERT.code: ["EventIdentification/EventTypeCode", "ParticipantObjectIdentification"],
    USER_AUTHENTICATION.code: ["EventIdentification/EventTypeCode"],
    QUERY.code: ["ParticipantObjectIdentification/ParticipantObjectQuery",
                 "ParticipantObjectIdentification/ParticipantObjectDetail"],
    EXPORT.code: ["ParticipantObjectIdentification", "ActiveParticipant/MediaIdentifier/MediaType"],
    IMPORT.code: ["ParticipantObjectIdentification", "ActiveParticipant/MediaIdentifier/MediaType"],
    INSTANCES_TRANSFERRED.code: ["ParticipantObjectIdentification"],
    BEGIN_TRANSFERRING.code: ["ParticipantObjectIdentification"],
    INSTANCES_ACCESSED.code: ["ParticipantObjectIdentification"],
}


def missing_fields(xml: str) -> list[str]:
    """The required elements and attributes a message lacks (empty when it is complete)."""
    root = ET.fromstring(xml)
    missing = [p for p in REQUIRED["common"] if root.find(p) is None]
    ident = root.find("EventIdentification")
    if ident is not None:
        missing += [f"EventIdentification@{a}" for a in ("EventActionCode", "EventDateTime",
                                                           "EventOutcomeIndicator") if not ident.get(a)]
    event_id = root.find("EventIdentification/EventID")
    if event_id is not None:
        missing += [p for p in REQUIRED.get(event_id.get("csd-code", ""), []) if root.find(p) is None]
    for participant in root.findall("ActiveParticipant"):
        missing += [f"ActiveParticipant@{a}" for a in ("UserID", "UserIsRequestor") if not participant.get(a)]
    source = root.find("AuditSourceIdentification")
    if source is not None and not source.get("AuditSourceID"):
        missing.append("AuditSourceIdentification@AuditSourceID")
    return missing
