module portcullis.dev/sample-policies/adversarial-go

go 1.26
