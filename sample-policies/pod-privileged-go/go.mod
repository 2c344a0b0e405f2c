module portcullis.dev/sample-policies/pod-privileged-go

go 1.26
