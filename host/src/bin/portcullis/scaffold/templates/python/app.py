"""{{name}}: a component policy on the `portcullis:policy` WIT contract, made
with componentize-py. Rejects objects that carry a label listed in
`denied_labels`."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import (
    SettingsValidationResponse,
    ValidationRequest,
    ValidationResponse,
)


class SettingsError(Exception):
    pass


def parse_settings(text):
    """The list of denied labels; unknown keys are refused."""
    try:
        settings = json.loads(text) or {}
    except ValueError as e:
        raise SettingsError(f"invalid settings: {e}")
    if not isinstance(settings, dict):
        raise SettingsError("invalid settings: expected a JSON object")
    unknown = sorted(set(settings) - {"denied_labels"})
    if unknown:
        raise SettingsError(f"invalid settings: unknown field `{unknown[0]}`, expected `denied_labels`")
    denied = settings.get("denied_labels", [])
    if not isinstance(denied, list) or not all(isinstance(d, str) for d in denied):
        raise SettingsError("invalid settings: denied_labels must be a list of strings")
    return denied


class WitWorld(wit_world.WitWorld):
    def validate_settings(self, settings: str) -> SettingsValidationResponse:
        try:
            parse_settings(settings)
        except SettingsError as e:
            return SettingsValidationResponse(valid=False, message=str(e))
        return SettingsValidationResponse(valid=True, message=None)

    def validate(self, request: ValidationRequest) -> ValidationResponse:
        try:
            denied_labels = parse_settings(request.settings)
        except SettingsError as e:
            raise Err(str(e))
        text = request.request.object
        obj = json.loads(text) if text is not None else None
        labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
        denied = [label for label in denied_labels if label in labels]
        return ValidationResponse(
            accepted=not denied,
            message=f"these labels are not allowed: {', '.join(denied)}" if denied else None,
            code=None,
            mutated_object=None,
            warnings=[],
            audit_annotations=[],
        )
