// pod-privileged, JavaScript build: a `portcullis:policy` component made with
// componentize-js (jco componentize).
//
// Rejects Pods that have a privileged container, init container or ephemeral
// container, with the same verdicts and messages as the Rust builds
// (sample-policies/policy-common/src/privileged.rs). Requests for other kinds,
// requests without an object, and objects that cannot be read as a Pod are
// accepted.

const SETTINGS = ["skip_init_containers", "skip_ephemeral_containers"];

class SettingsError extends Error {}
class NotAPod extends Error {}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// The settings as booleans; unknown keys are an error.
function parseSettings(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new SettingsError(`invalid settings: ${e.message}`);
  }
  if (value === null) value = {};
  if (!isObject(value)) throw new SettingsError("invalid settings: expected a JSON object");
  for (const key of Object.keys(value)) {
    if (!SETTINGS.includes(key)) {
      throw new SettingsError(
        `invalid settings: unknown field \`${key}\`, expected ` +
          "`skip_init_containers` or `skip_ephemeral_containers`",
      );
    }
  }
  const settings = {};
  for (const key of SETTINGS) {
    const flag = key in value ? value[key] : false;
    if (typeof flag !== "boolean") {
      throw new SettingsError(`invalid settings: invalid type for \`${key}\`: expected a boolean`);
    }
    settings[key] = flag;
  }
  return settings;
}

// A container list: absent and null are empty, anything else must be a list.
function list(value) {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new NotAPod();
  return value;
}

// As serde reads the Rust builds' types: a missing name is "", a null one is
// not a string; a null securityContext or privileged is the default.
function privilegedNames(containers) {
  const names = [];
  for (const container of list(containers)) {
    if (!isObject(container)) throw new NotAPod();
    const name = "name" in container ? container.name : "";
    const context = container.securityContext ?? {};
    if (typeof name !== "string" || !isObject(context)) throw new NotAPod();
    const privileged = context.privileged ?? false;
    if (typeof privileged !== "boolean") throw new NotAPod();
    if (privileged) names.push(name);
  }
  return names;
}

// The rejection message for a Pod, or undefined to accept it.
function message(pod, settings) {
  if (!isObject(pod)) throw new NotAPod();
  const spec = "spec" in pod ? pod.spec : {};
  if (!isObject(spec)) throw new NotAPod();
  const findings = [["container", privilegedNames(spec.containers)]];
  const init = privilegedNames(spec.initContainers);
  const ephemeral = privilegedNames(spec.ephemeralContainers);
  if (!settings.skip_init_containers) findings.push(["init container", init]);
  if (!settings.skip_ephemeral_containers) findings.push(["ephemeral container", ephemeral]);
  const clauses = findings
    .filter(([, names]) => names.length > 0)
    .map(([what, names]) => `Privileged ${what} is not allowed: ${names.join(", ")}`);
  return clauses.length > 0 ? clauses.join("; ") : undefined;
}

function respond(accepted, msg) {
  return {
    accepted,
    message: msg,
    code: undefined,
    mutatedObject: undefined,
    warnings: [],
    auditAnnotations: [],
  };
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
  let settings;
  try {
    settings = parseSettings(request.settings);
  } catch (e) {
    // The `error` case of the result: the host rejects the request with code 500.
    throw e.message;
  }
  const admission = request.request;
  if (admission.kind.kind !== "Pod" || admission.object === undefined) return respond(true);
  let msg;
  try {
    msg = message(JSON.parse(admission.object), settings);
  } catch (e) {
    // Like the Rust builds: an object that is not a Pod is not ours to judge.
    if (e instanceof NotAPod || e instanceof SyntaxError) return respond(true);
    throw e;
  }
  return respond(msg === undefined, msg);
}
