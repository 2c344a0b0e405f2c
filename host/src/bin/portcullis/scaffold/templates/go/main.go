// {{name}}: a WASI command policy (Kubewarden's executionMode: wasi), built
// with the standard Go toolchain and only the standard library. Rejects
// objects that carry a label listed in `denied_labels`.
//
// The host runs the module with argv `validate` or `validate-settings`, the
// payload on stdin, and reads the JSON answer from stdout.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
)

type settings struct {
	DeniedLabels []string `json:"denied_labels"`
}

type validationResponse struct {
	Accepted bool    `json:"accepted"`
	Message  *string `json:"message,omitempty"`
}

type settingsValidationResponse struct {
	Valid   bool    `json:"valid"`
	Message *string `json:"message,omitempty"`
}

// parseSettings reads the settings; unknown keys are refused.
func parseSettings(raw []byte) (settings, error) {
	var s settings
	if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "null" {
		return s, nil
	}
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&s); err != nil {
		return s, errors.New("invalid settings: " + err.Error())
	}
	return s, nil
}

func validate(input []byte) (any, error) {
	var payload struct {
		Request struct {
			Object *struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
			} `json:"object"`
		} `json:"request"`
		Settings json.RawMessage `json:"settings"`
	}
	if err := json.Unmarshal(input, &payload); err != nil {
		return nil, errors.New("cannot read the request: " + err.Error())
	}
	s, err := parseSettings(payload.Settings)
	if err != nil {
		return nil, err
	}
	var denied []string
	if object := payload.Request.Object; object != nil {
		for _, label := range s.DeniedLabels {
			if _, found := object.Metadata.Labels[label]; found {
				denied = append(denied, label)
			}
		}
	}
	if len(denied) == 0 {
		return validationResponse{Accepted: true}, nil
	}
	message := "these labels are not allowed: " + strings.Join(denied, ", ")
	return validationResponse{Accepted: false, Message: &message}, nil
}

func validateSettings(input []byte) (any, error) {
	if _, err := parseSettings(input); err != nil {
		message := err.Error()
		return settingsValidationResponse{Valid: false, Message: &message}, nil
	}
	return settingsValidationResponse{Valid: true}, nil
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
	if err == nil {
		var out []byte
		if out, err = json.Marshal(answer); err == nil {
			os.Stdout.Write(out)
			return
		}
	}
	os.Stderr.WriteString(err.Error() + "\n")
	os.Exit(1)
}
