// Command adversarial-go is a test-only waPC guest written in standard Go
// (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared: a WASI reactor). It speaks
// Kubewarden's waPC protocol with nothing but the standard library, to show
// that the host bounds the way Go waits: time.Sleep parks the goroutine and
// the Go scheduler, finding nothing else to run, calls WASI poll_oneoff with
// a clock subscription.
//
// Behaviours, from settings.behaviour: "accept" (the default) and "sleep"
// (time.Sleep for 30 s, then accept).
package main

import (
	"encoding/json"
	"fmt"
	"time"
	"unsafe"
)

//go:wasmimport wapc __guest_request
func guestRequest(opPtr unsafe.Pointer, msgPtr unsafe.Pointer)

//go:wasmimport wapc __guest_response
func guestResponse(ptr unsafe.Pointer, length uint32)

//go:wasmimport wapc __guest_error
func guestError(ptr unsafe.Pointer, length uint32)

// sleepFor is how long the "sleep" behaviour sleeps: far beyond any deadline.
const sleepFor = 30 * time.Second

// main is not run: a c-shared module is a reactor, initialised by _initialize.
func main() {}

// bytesPointer is where b's bytes are in linear memory (a valid address even
// for an empty slice: the host reads or writes nothing there).
func bytesPointer(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		b = make([]byte, 1)
	}
	return unsafe.Pointer(unsafe.SliceData(b))
}

// guestCall is the waPC entry point: the host passes the lengths of the
// operation name and the payload, and the guest pulls both.
//
//go:wasmexport __guest_call
func guestCall(opLen int32, msgLen int32) int32 {
	op := make([]byte, opLen)
	msg := make([]byte, msgLen)
	guestRequest(bytesPointer(op), bytesPointer(msg))
	answer, err := handle(string(op), msg)
	if err != nil {
		text := []byte(err.Error())
		guestError(bytesPointer(text), uint32(len(text)))
		return 0
	}
	guestResponse(bytesPointer(answer), uint32(len(answer)))
	return 1
}

type settings struct {
	Behaviour string `json:"behaviour"`
}

// behaviour checks the settings and names the behaviour they choose.
func behaviour(s settings) (string, error) {
	switch s.Behaviour {
	case "", "accept":
		return "accept", nil
	case "sleep":
		return "sleep", nil
	default:
		return "", fmt.Errorf("unknown behaviour %q; expected one of: accept, sleep", s.Behaviour)
	}
}

func handle(op string, payload []byte) ([]byte, error) {
	switch op {
	case "protocol_version":
		return []byte(`"v1"`), nil
	case "validate_settings":
		var s settings
		if err := json.Unmarshal(payload, &s); err != nil {
			return json.Marshal(map[string]any{"valid": false, "message": err.Error()})
		}
		if _, err := behaviour(s); err != nil {
			return json.Marshal(map[string]any{"valid": false, "message": err.Error()})
		}
		return []byte(`{"valid":true}`), nil
	case "validate":
		var request struct {
			Settings settings `json:"settings"`
		}
		if err := json.Unmarshal(payload, &request); err != nil {
			return nil, fmt.Errorf("invalid validate payload: %w", err)
		}
		chosen, err := behaviour(request.Settings)
		if err != nil {
			return nil, err
		}
		if chosen == "sleep" {
			time.Sleep(sleepFor)
		}
		return []byte(`{"accepted":true}`), nil
	default:
		return nil, fmt.Errorf("unknown operation %q", op)
	}
}
