// Command etcd is etcd's server, as the upstream etcd binary is: its main()
// is the same one-line call into etcdmain. The root module go.etcd.io/etcd/v3,
// which holds that main, cannot be `go install`ed (it has replace directives),
// so the kind node image's etcd is built from here, at the etcd server version
// the control-plane harness pins (go.mod) and kubeadm expects.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
