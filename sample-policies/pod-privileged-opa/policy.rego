# pod-privileged, OPA execution mode: rejects Pods that run a privileged
# container, init container or ephemeral container, with the same verdicts
# and messages as the Rust samples (sample-policies/policy-common).
#
# Input: {"request": <AdmissionRequest>}; data: the policy's settings,
# `skip_init_containers` and `skip_ephemeral_containers` (both false by
# default). The entrypoint `policy/main` is an AdmissionReview whose
# `response` is the verdict.
#
# Build: opa build -t wasm -e policy/main policy.rego
package policy

default skip_init_containers := false

skip_init_containers := data.skip_init_containers

default skip_ephemeral_containers := false

skip_ephemeral_containers := data.skip_ephemeral_containers

pod := input.request.object if {
	input.request.kind.kind == "Pod"
}

# The names of the privileged containers of one list, in order.
privileged(containers) := [c.name |
	some c in containers
	c.securityContext.privileged == true
]

lists := [
	{"what": "container", "containers": object.get(pod, ["spec", "containers"], [])},
	{"what": "init container", "containers": init_containers},
	{"what": "ephemeral container", "containers": ephemeral_containers},
]

init_containers := [] if skip_init_containers
else := object.get(pod, ["spec", "initContainers"], [])

ephemeral_containers := [] if skip_ephemeral_containers
else := object.get(pod, ["spec", "ephemeralContainers"], [])

# One clause per kind of container that has privileged ones.
clauses := [sprintf("Privileged %s is not allowed: %s", [l.what, concat(", ", names)]) |
	some l in lists
	names := privileged(l.containers)
	count(names) > 0
]

default uid := ""

uid := input.request.uid

response := {"uid": uid, "allowed": false, "status": {"message": concat("; ", clauses)}} if {
	count(clauses) > 0
} else := {"uid": uid, "allowed": true}

main := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": response,
}
