# Test only (gatekeeper mode): calls `http.send`, which Portcullis does not
# implement (a policy gets no network), but only for objects named
# `call-http`: other requests to the same policy are evaluated normally.
package adversarial.unsupported

import rego.v1

violation contains {"msg": msg} if {
	input.review.object.metadata.name == "call-http"
	resp := http.send({"method": "GET", "url": "http://127.0.0.1:9/"})
	msg := sprintf("got status %v", [resp.status_code])
}

violation contains {"msg": "objects named forbidden are not allowed"} if {
	input.review.object.metadata.name == "forbidden"
}
