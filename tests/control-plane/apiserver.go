package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// apiserverFlags are the kube-apiserver flags of the harness: loopback only,
// secure port only, client-certificate authn, RBAC, default admission plugins
// (so Mutating/ValidatingAdmissionWebhook and ValidatingAdmissionPolicy are on).
func apiserverFlags(dir string, p *pkiFiles, etcdURL string, port int, auditLog string) []string {
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "pki"),
		"--tls-cert-file=" + p.serverCertFile,
		"--tls-private-key-file=" + p.serverKeyFile,
		"--client-ca-file=" + p.caCertFile,
		"--service-account-key-file=" + p.saPubFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// The "kubernetes" Service endpoints would point at 127.0.0.1, which
		// EndpointSlice validation rejects; nothing in-cluster needs them.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--event-ttl=10m",
	}
	if auditLog != "" {
		if abs, err := filepath.Abs(auditLog); err == nil {
			auditLog = abs
		}
		policy := filepath.Join(dir, "audit-policy.yaml")
		_ = os.WriteFile(policy, []byte(auditPolicy), 0o644)
		args = append(args,
			"--audit-policy-file="+policy,
			"--audit-log-path="+auditLog,
			"--audit-log-mode=blocking",
			"--audit-log-format=json",
			"--audit-log-maxsize=0",
		)
	}
	return args
}

// runAPIServer mirrors app.NewAPIServerCommand's RunE, but with our own context
// (the command installs a process-wide signal handler that can exist only once)
// and a listener created by us.
func runAPIServer(ctx context.Context, ln net.Listener, args []string, resolver routeResolver) error {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("kube-apiserver flags: %w", err)
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return err
	}
	s.SecureServing.Listener = ln
	app.SetServiceResolverForTests(resolver)

	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	if mfg, ok := featureGate.(featuregate.MutableFeatureGate); ok {
		mfg.AddMetrics()
	}
	return app.Run(ctx, completed)
}
