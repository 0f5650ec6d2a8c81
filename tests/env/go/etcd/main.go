// Command etcd runs the etcd server; kube-apiserver of the test environment stores its objects here.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
