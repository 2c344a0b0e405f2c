# Test only (gatekeeper mode): Rego has no unbounded loops, but a nested
# iteration over a large range runs for hours. The evaluation deadline must
# stop it, and nothing else may notice.
package adversarial.loop

import rego.v1

# (OPA's WebAssembly heap is a bump allocator, freed only between
# evaluations, so the loop allocates as it runs: it meets the deadline or
# the memory cap, whichever comes first.)
violation contains {"msg": msg} if {
	r := numbers.range(1, 1000000)
	n := count([x | some x in r; some y in r; x == 0])
	msg := sprintf("finished after %d matches", [n])
}
