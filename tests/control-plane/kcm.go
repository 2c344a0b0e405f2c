package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// kcmSubcommand re-executes this binary as kube-controller-manager.
const kcmSubcommand = "kube-controller-manager"

// kcmFlags: no leader election, no serving port, its own identity, the
// cluster CA as CSR signer, and no cloud provider (cloud controllers are off).
func kcmFlags(dir string, p *pkiFiles, kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file=" + p.saKeyFile,
		"--root-ca-file=" + p.caCertFile,
		"--cluster-signing-cert-file=" + p.caCertFile,
		"--cluster-signing-key-file=" + p.caKeyFile,
		// No nodes, no cloud: these would only log errors.
		"--controllers=*,-node-ipam-controller,-node-lifecycle-controller,-persistentvolume-attach-detach-controller",
		"--profiling=false",
	}
}

// runControllerManager is the child process. It exits when its parent (the
// control plane) goes away, whatever the reason.
func runControllerManager(args []string) int {
	ppid := os.Getppid()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()
	go func() {
		for {
			if os.Getppid() != ppid {
				os.Exit(0)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	cmd := kcmapp.NewControllerManagerCommand()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "kube-controller-manager: %v\n", err)
		return 1
	}
	return 0
}
