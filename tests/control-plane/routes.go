package main

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// routeResolver replaces kube-apiserver's service resolver (used for admission
// webhooks and aggregated APIs that reference a Service). The stock resolver
// dials the Service's ClusterIP or endpoint IPs; there is no cluster network
// here, and the harness must only ever talk to loopback. Instead, the routes
// file maps a Service port to a loopback address where the test runs the server:
//
//	# NAMESPACE/NAME:PORT  HOST:PORT
//	portcullis/policy-server-default:8443  127.0.0.1:39123
//
// The file is re-read on every resolution, so tests can add routes at any time;
// the last line for a Service wins.
// TLS still verifies the serving certificate against NAME.NAMESPACE.svc, as in a
// real cluster. An unrouted Service fails the call (webhook failurePolicy applies).
type routeResolver struct {
	file       string
	kubernetes *url.URL // kubernetes.default.svc:443 -> this apiserver
}

func (r routeResolver) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	if namespace == "default" && name == "kubernetes" && port == 443 && r.kubernetes != nil {
		u := *r.kubernetes
		return &u, nil
	}
	key := fmt.Sprintf("%s/%s:%d", namespace, name, port)
	f, err := os.Open(r.file)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if err == nil {
		defer f.Close()
		target := ""
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
			if len(fields) == 2 && fields[0] == key {
				target = fields[1] // the last route for a key wins
			}
		}
		if target != "" {
			if err := checkLoopback(target); err != nil {
				return nil, fmt.Errorf("route for service %s: %w", key, err)
			}
			return &url.URL{Scheme: "https", Host: target}, nil
		}
	}
	return nil, fmt.Errorf("the test control plane has no route for service %s (add \"%s 127.0.0.1:PORT\" to %s)", key, key, r.file)
}

func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address; only loopback targets are allowed", hostport)
	}
	return nil
}
