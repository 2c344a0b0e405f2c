// {{name}}: a component policy on the `portcullis:policy` WIT contract, made
// with componentize-js. Rejects objects that carry a label listed in
// `denied_labels`.

class SettingsError extends Error {}

// The list of denied labels; unknown keys are refused.
function parseSettings(text) {
  let settings;
  try {
    settings = JSON.parse(text) ?? {};
  } catch (e) {
    throw new SettingsError(`invalid settings: ${e.message}`);
  }
  if (typeof settings !== "object" || Array.isArray(settings)) {
    throw new SettingsError("invalid settings: expected a JSON object");
  }
  const unknown = Object.keys(settings).filter((k) => k !== "denied_labels").sort();
  if (unknown.length > 0) {
    throw new SettingsError(`invalid settings: unknown field \`${unknown[0]}\`, expected \`denied_labels\``);
  }
  const denied = settings.denied_labels ?? [];
  if (!Array.isArray(denied) || !denied.every((d) => typeof d === "string")) {
    throw new SettingsError("invalid settings: denied_labels must be a list of strings");
  }
  return denied;
}

export function validateSettings(text) {
  try {
    parseSettings(text);
  } catch (e) {
    if (e instanceof SettingsError) return { valid: false, message: e.message };
    throw e;
  }
  return { valid: true, message: undefined };
}

export function validate(request) {
  let deniedLabels;
  try {
    deniedLabels = parseSettings(request.settings);
  } catch (e) {
    throw e.message; // the `error` case: the host rejects the request with code 500
  }
  const object = request.request.object === undefined ? null : JSON.parse(request.request.object);
  const labels = object?.metadata?.labels ?? {};
  const denied = deniedLabels.filter((label) => Object.hasOwn(labels, label));
  return {
    accepted: denied.length === 0,
    message: denied.length > 0 ? `these labels are not allowed: ${denied.join(", ")}` : undefined,
    code: undefined,
    mutatedObject: undefined,
    warnings: [],
    auditAnnotations: [],
  };
}
