// Command coredns is CoreDNS for the kind node image that
// scripts/kind-node-image.sh builds: CoreDNS's own main (coremain.Run), with
// the plugins of the Corefile kubeadm writes (errors, health, ready,
// kubernetes, prometheus, forward, cache, loop, reload, loadbalance) and the
// ones operators most often add to it (log, hosts, rewrite). Upstream's main
// imports every plugin (core/plugin); choosing them in main is CoreDNS's
// documented way to build a smaller server, and here it spares the cloud
// SDKs of the DNS-provider plugins a two-core CI machine would compile.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
)

func main() {
	coremain.Run()
}
