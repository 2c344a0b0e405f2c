# Test only (gatekeeper mode): a violation message of about 32 MiB. The host
# must refuse to copy it out (an output cap), failing this request only.
package adversarial.huge

import rego.v1

violation contains {"msg": msg} if {
	msg := concat("", [s | some _ in numbers.range(1, 800000); s := "0123456789abcdef0123456789abcdef0123456789"])
}
