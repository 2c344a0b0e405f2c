# Test only (gatekeeper mode): two definitions of a complete rule that give
# different values, a Rego runtime error (OPA's eval_conflict_error). The
# module calls opa_abort; the evaluation must fail with the guest's message,
# and this request only.
package adversarial.conflict

import rego.v1

violation = {{"msg": "first"}} if input.review.object.metadata.name == "conflict"

violation = {{"msg": "second"}} if input.review.object.metadata.name == "conflict"

violation = set() if input.review.object.metadata.name != "conflict"
