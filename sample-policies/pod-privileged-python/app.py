"""pod-privileged, Python build: a `portcullis:policy` component made with
componentize-py.

Rejects Pods that have a privileged container, init container or ephemeral
container, with the same verdicts and messages as the Rust builds
(`sample-policies/policy-common/src/privileged.rs`). Requests for other kinds,
requests without an object, and objects that cannot be read as a Pod are
accepted.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import (
    SettingsValidationResponse,
    ValidationRequest,
    ValidationResponse,
)

SETTINGS = ("skip_init_containers", "skip_ephemeral_containers")


class SettingsError(Exception):
    pass


def parse_settings(text):
    """The settings as a dict of booleans; unknown keys are an error."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SettingsError(f"invalid settings: {e}")
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SettingsError("invalid settings: expected a JSON object")
    for key in value:
        if key not in SETTINGS:
            raise SettingsError(
                f"invalid settings: unknown field `{key}`, expected "
                "`skip_init_containers` or `skip_ephemeral_containers`"
            )
    settings = {}
    for key in SETTINGS:
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            raise SettingsError(
                f"invalid settings: invalid type for `{key}`: expected a boolean"
            )
        settings[key] = flag
    return settings


class NotAPod(Exception):
    pass


def _list(value):
    """A container list: absent and null are empty, anything else must be a list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotAPod()
    return value


def _privileged_names(containers):
    names = []
    for container in _list(containers):
        if not isinstance(container, dict):
            raise NotAPod()
        # As serde reads the Rust builds' types: a missing name is "", a null
        # one is not a string; a null securityContext is the default.
        name = container.get("name", "")
        context = container.get("securityContext") or {}
        if not isinstance(name, str) or not isinstance(context, dict):
            raise NotAPod()
        privileged = context.get("privileged")
        if privileged is not None and not isinstance(privileged, bool):
            raise NotAPod()
        if privileged:
            names.append(name)
    return names


def message(pod, settings):
    """The rejection message for a Pod, or None to accept it."""
    if not isinstance(pod, dict):
        raise NotAPod()
    spec = pod.get("spec", {})
    if not isinstance(spec, dict):
        raise NotAPod()
    findings = [("container", _privileged_names(spec.get("containers")))]
    init = _privileged_names(spec.get("initContainers"))
    ephemeral = _privileged_names(spec.get("ephemeralContainers"))
    if not settings["skip_init_containers"]:
        findings.append(("init container", init))
    if not settings["skip_ephemeral_containers"]:
        findings.append(("ephemeral container", ephemeral))
    clauses = [
        f"Privileged {what} is not allowed: {', '.join(names)}"
        for what, names in findings
        if names
    ]
    return "; ".join(clauses) or None


def respond(accepted, msg=None):
    return ValidationResponse(
        accepted=accepted,
        message=msg,
        code=None,
        mutated_object=None,
        warnings=[],
        audit_annotations=[],
    )


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> SettingsValidationResponse:
        try:
            parse_settings(settings)
        except SettingsError as e:
            return SettingsValidationResponse(valid=False, message=str(e))
        return SettingsValidationResponse(valid=True, message=None)

    def validate(self, request: ValidationRequest) -> ValidationResponse:
        try:
            settings = parse_settings(request.settings)
        except SettingsError as e:
            raise Err(str(e))
        admission = request.request
        if admission.kind.kind != "Pod" or admission.object is None:
            return respond(True)
        try:
            msg = message(json.loads(admission.object), settings)
        except (NotAPod, ValueError):
            # Like the Rust builds: an object that is not a Pod is not ours to judge.
            return respond(True)
        return respond(msg is None, msg)
