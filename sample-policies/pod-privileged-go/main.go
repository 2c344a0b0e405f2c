// pod-privileged, Go build: a WASI command policy (Kubewarden's
// `executionMode: wasi`), built with the standard Go toolchain
// (GOOS=wasip1 GOARCH=wasm) and only the standard library.
//
// The host runs the module with argv `validate` or `validate-settings`, the
// payload on stdin, and reads the answer from stdout.
//
// Rejects Pods that have a privileged container, init container or ephemeral
// container, with the same verdicts and messages as the Rust builds
// (sample-policies/policy-common/src/privileged.rs). Requests for other kinds,
// requests without an object, and objects that cannot be read as a Pod are
// accepted.
package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
)

// ValidationResponse is Kubewarden's answer to `validate`.
type ValidationResponse struct {
	Accepted bool    `json:"accepted"`
	Message  *string `json:"message,omitempty"`
}

// SettingsValidationResponse is Kubewarden's answer to `validate-settings`.
type SettingsValidationResponse struct {
	Valid   bool    `json:"valid"`
	Message *string `json:"message,omitempty"`
}

// Settings of the policy; unknown keys are an error.
type Settings struct {
	SkipInitContainers      bool
	SkipEphemeralContainers bool
}

var errNotAPod = errors.New("not a pod")

func parseSettings(raw json.RawMessage) (Settings, error) {
	var settings Settings
	var fields map[string]json.RawMessage
	if len(raw) == 0 || string(raw) == "null" {
		return settings, nil
	}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return settings, errors.New("invalid settings: expected a JSON object")
	}
	for key, value := range fields {
		var flag *bool
		switch key {
		case "skip_init_containers":
			flag = &settings.SkipInitContainers
		case "skip_ephemeral_containers":
			flag = &settings.SkipEphemeralContainers
		default:
			return settings, errors.New("invalid settings: unknown field `" + key +
				"`, expected `skip_init_containers` or `skip_ephemeral_containers`")
		}
		if err := json.Unmarshal(value, flag); err != nil || string(value) == "null" {
			return settings, errors.New("invalid settings: invalid type for `" + key +
				"`: expected a boolean")
		}
	}
	return settings, nil
}

// privilegedNames reads a container list as serde reads the Rust builds'
// types: absent or null is empty, a missing name is "", a null
// securityContext or privileged is the default.
func privilegedNames(value any) ([]string, error) {
	if value == nil {
		return nil, nil
	}
	containers, ok := value.([]any)
	if !ok {
		return nil, errNotAPod
	}
	var names []string
	for _, c := range containers {
		container, ok := c.(map[string]any)
		if !ok {
			return nil, errNotAPod
		}
		name := ""
		if n, present := container["name"]; present {
			if name, ok = n.(string); !ok {
				return nil, errNotAPod
			}
		}
		context := map[string]any{}
		if sc := container["securityContext"]; sc != nil {
			if context, ok = sc.(map[string]any); !ok {
				return nil, errNotAPod
			}
		}
		privileged := false
		if p := context["privileged"]; p != nil {
			if privileged, ok = p.(bool); !ok {
				return nil, errNotAPod
			}
		}
		if privileged {
			names = append(names, name)
		}
	}
	return names, nil
}

// message is the rejection message for a Pod, or "" to accept it.
func message(object any, settings Settings) (string, error) {
	pod, ok := object.(map[string]any)
	if !ok {
		return "", errNotAPod
	}
	spec := map[string]any{}
	if s, present := pod["spec"]; present {
		if spec, ok = s.(map[string]any); !ok {
			return "", errNotAPod
		}
	}
	type finding struct {
		what  string
		names []string
	}
	var findings []finding
	for _, kind := range []struct {
		what, field string
		skip        bool
	}{
		{"container", "containers", false},
		{"init container", "initContainers", settings.SkipInitContainers},
		{"ephemeral container", "ephemeralContainers", settings.SkipEphemeralContainers},
	} {
		names, err := privilegedNames(spec[kind.field])
		if err != nil {
			return "", err
		}
		if !kind.skip {
			findings = append(findings, finding{kind.what, names})
		}
	}
	var clauses []string
	for _, f := range findings {
		if len(f.names) > 0 {
			clauses = append(clauses, "Privileged "+f.what+" is not allowed: "+strings.Join(f.names, ", "))
		}
	}
	return strings.Join(clauses, "; "), nil
}

type validationRequest struct {
	Request struct {
		Kind struct {
			Kind string `json:"kind"`
		} `json:"kind"`
		Object any `json:"object"`
	} `json:"request"`
	Settings json.RawMessage `json:"settings"`
}

func validate(input []byte) (any, error) {
	var req validationRequest
	if err := json.Unmarshal(input, &req); err != nil {
		return nil, errors.New("cannot read the validation request: " + err.Error())
	}
	settings, err := parseSettings(req.Settings)
	if err != nil {
		return nil, err
	}
	if req.Request.Kind.Kind != "Pod" || req.Request.Object == nil {
		return ValidationResponse{Accepted: true}, nil
	}
	msg, err := message(req.Request.Object, settings)
	if err != nil || msg == "" {
		// Like the Rust builds: an object that is not a Pod is not ours to judge.
		return ValidationResponse{Accepted: true}, nil
	}
	return ValidationResponse{Accepted: false, Message: &msg}, nil
}

func validateSettings(input []byte) (any, error) {
	if _, err := parseSettings(input); err != nil {
		msg := err.Error()
		return SettingsValidationResponse{Valid: false, Message: &msg}, nil
	}
	return SettingsValidationResponse{Valid: true}, nil
}

func main() {
	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: policy validate|validate-settings < payload\n")
		os.Exit(2)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Stderr.WriteString("cannot read stdin: " + err.Error() + "\n")
		os.Exit(1)
	}
	var answer any
	switch os.Args[1] {
	case "validate":
		answer, err = validate(input)
	case "validate-settings":
		answer, err = validateSettings(input)
	default:
		err = errors.New("unknown operation " + os.Args[1])
	}
	if err != nil {
		// A failure, not a verdict: the host turns it into an error.
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	out, err := json.Marshal(answer)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
