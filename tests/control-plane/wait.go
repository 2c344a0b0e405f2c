package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func waitReady(ctx context.Context, serverURL string, p *pkiFiles, apiDone chan error) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	cert, err := tls.X509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}},
	}
	deadline := time.After(120 * time.Second)
	last := ""
	for {
		resp, err := client.Get(serverURL + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case err := <-apiDone:
			apiDone <- err
			return fmt.Errorf("kube-apiserver exited during start-up: %v", err)
		case <-ctx.Done():
			return errors.New("stopped during start-up")
		case <-deadline:
			return fmt.Errorf("kube-apiserver not ready after 120s; last /readyz: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitControllers waits until the service account controller has created
// "default" in namespace default: pods can be created from then on.
func waitControllers(ctx context.Context, kubeconfig string, apiDone chan error) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.After(60 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cs.CoreV1().ServiceAccounts("default").Get(rctx, "default", metav1.GetOptions{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case err := <-apiDone:
			apiDone <- err
			return fmt.Errorf("kube-apiserver exited: %v", err)
		case <-ctx.Done():
			return errors.New("stopped during start-up")
		case <-deadline:
			return fmt.Errorf("kube-controller-manager did not create serviceaccount default/default in 60s (last error: %v); see kube-controller-manager.log", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
