// Command harness runs a single-node etcd or a kube-apiserver for the
// lease_guard integration tests (see tests/integration/kube_harness.py).
//
//	harness etcd --data-dir D --listen-client URL --listen-peer URL
//	harness apiserver <kube-apiserver flags...>
//
// Both modes live in one binary, but run as two processes, so the test
// fixture can stop and restart the API server while etcd keeps its data.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: harness etcd|apiserver [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "etcd":
		runEtcd(os.Args[2:])
	case "apiserver":
		cmd := app.NewAPIServerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		fail(err)
	}
	return *u
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "harness etcd:", err)
	os.Exit(1)
}

func runEtcd(args []string) {
	fs := flag.NewFlagSet("etcd", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "etcd data directory (required)")
	client := fs.String("listen-client", "http://127.0.0.1:2379", "client URL")
	peer := fs.String("listen-peer", "http://127.0.0.1:2380", "peer URL")
	noFsync := fs.Bool("unsafe-no-fsync", false, "skip fsync (tests only)")
	_ = fs.Parse(args)
	if *dataDir == "" {
		fail(fmt.Errorf("--data-dir is required"))
	}

	cfg := embed.NewConfig()
	cfg.Name = "harness"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{mustURL(*client)}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = []url.URL{mustURL(*peer)}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = "warn"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail(err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintln(os.Stderr, "harness etcd: ready on", *client)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		fail(fmt.Errorf("etcd not ready after 60s"))
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		fmt.Fprintln(os.Stderr, "harness etcd: stopping on", s)
	case err := <-e.Err():
		fail(err)
	}
}
