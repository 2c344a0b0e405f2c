# Test only (gatekeeper mode): Rego has no unbounded loops, but a nested
# iteration over a large range runs for hours. The evaluation deadline must
# stop it, and nothing else may notice.
package adversarial.loop

import rego.v1

# (Equality with a constant allocates nothing, so the loop runs into the
# deadline rather than the memory cap.)
violation contains {"msg": msg} if {
	r := numbers.range(1, 1000000)
	n := count([x | some x in r; some y in r; x == 0])
	msg := sprintf("finished after %d matches", [n])
}
