module portcullis.dev/kind-manifests

go 1.26.0
